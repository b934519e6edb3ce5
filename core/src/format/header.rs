//! The fixed-size parts of a segment: header, index entry and trailer. Each
//! `encode`/`decode` pair mirrors the offset tables in `docs/FORMAT.md`.

use xxhash_rust::xxh3::xxh3_64;

use super::codec::Codecs;
use super::key::KeyCheck;
use super::{
    FORMAT_VERSION, FormatError, HEADER_SIZE, INDEX_ENTRY_SIZE, MAGIC, MAX_PAGE_SIZE, MIN_PAGE_SIZE, TRAILER_SIZE,
    TxRange,
};
use crate::ids::{Checksum, GenerationId, PageNo, TxId};

/// Header flag bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(pub u16);

impl Flags {
    /// The segment holds every page `1..=commit`: it can be applied to any
    /// state, including an empty file (a snapshot or a full catch-up).
    pub const SNAPSHOT: u16 = 1 << 0;
    /// Every frame payload is sealed with AES-256-GCM.
    pub const ENCRYPTED: u16 = 1 << 1;
    const KNOWN: u16 = Self::SNAPSHOT | Self::ENCRYPTED;

    /// Whether the snapshot bit is set.
    pub fn snapshot(self) -> bool {
        self.0 & Self::SNAPSHOT != 0
    }

    /// Whether the encrypted bit is set.
    pub fn encrypted(self) -> bool {
        self.0 & Self::ENCRYPTED != 0
    }
}

/// A segment's header: what it covers and how to check it applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Flag bits ([`Flags`]).
    pub flags: Flags,
    /// SQLite page size in bytes (a power of two, 512 to 65536).
    pub page_size: u32,
    /// Database size in pages after applying the segment.
    pub commit: u32,
    /// First transaction covered.
    pub min_txid: TxId,
    /// Last transaction covered.
    pub max_txid: TxId,
    /// When `max_txid` was committed (or captured), in milliseconds since the
    /// Unix epoch.
    pub timestamp_ms: u64,
    /// Rolling checksum of the database at `min_txid - 1`, before applying.
    pub pre_apply_checksum: Checksum,
    /// The lineage the segment belongs to; also bound into each sealed frame.
    pub generation: GenerationId,
    /// Identifies the encryption key (zero when not encrypted).
    pub key_check: KeyCheck,
    /// The page codecs the frames may use.
    pub compression: Codecs,
}

impl Header {
    /// The TXID range covered.
    pub fn range(&self) -> TxRange {
        TxRange { min_txid: self.min_txid, max_txid: self.max_txid }
    }

    /// Checks every field for a value this version can write and read.
    /// `object` names the segment in the error.
    pub fn validate(&self, object: &str) -> Result<(), FormatError> {
        let bad = |reason: String| Err(FormatError::Malformed { object: object.to_string(), reason });
        if self.flags.0 & !Flags::KNOWN != 0 {
            return bad(format!("unknown header flags {:#06x}", self.flags.0));
        }
        if !self.page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return bad(format!("invalid page size {} (expected a power of two from 512 to 65536)", self.page_size));
        }
        if self.min_txid == TxId::ZERO {
            return bad("min_txid is 0 (transaction ids start at 1)".into());
        }
        if self.min_txid > self.max_txid {
            return bad(format!("min_txid {} is after max_txid {}", self.min_txid, self.max_txid));
        }
        if self.compression.0 == 0 || self.compression.0 & !Codecs::KNOWN != 0 {
            return bad(format!(
                "unknown compression {:#04x} at offset 72 (this build reads zstd = 0x01 and LZ4 = 0x02; upgrade it)",
                self.compression.0
            ));
        }
        if self.flags.encrypted() != (self.key_check != KeyCheck::NONE) {
            return bad("encrypted flag and key check disagree".into());
        }
        Ok(())
    }

    /// Serialises the header, including its checksum.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[6..8].copy_from_slice(&self.flags.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        out[12..16].copy_from_slice(&self.commit.to_be_bytes());
        out[16..24].copy_from_slice(&self.min_txid.0.to_be_bytes());
        out[24..32].copy_from_slice(&self.max_txid.0.to_be_bytes());
        out[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[40..48].copy_from_slice(&self.pre_apply_checksum.0.to_be_bytes());
        out[48..64].copy_from_slice(&self.generation.0);
        out[64..72].copy_from_slice(&self.key_check.0.to_be_bytes());
        out[72] = self.compression.0;
        // 73..88 reserved, zero.
        let checksum = xxh3_64(&out[..88]);
        out[88..96].copy_from_slice(&checksum.to_be_bytes());
        out
    }

    /// Parses and validates a header. `object` names the segment in errors.
    pub fn decode(bytes: &[u8; HEADER_SIZE], object: &str) -> Result<Header, FormatError> {
        let bad = |reason: String| FormatError::Malformed { object: object.to_string(), reason };
        if bytes[0..4] != MAGIC {
            return Err(bad(format!("bad magic {:02x?} at offset 0 (not a Distributary segment)", &bytes[0..4])));
        }
        let version = be16(&bytes[4..6]);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version} is not supported (this build reads version {FORMAT_VERSION}; upgrade it)"
            )));
        }
        let stored = be64(&bytes[88..96]);
        let computed = xxh3_64(&bytes[..88]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { object: object.to_string(), what: "header", stored, computed });
        }
        if bytes[73..88].iter().any(|&b| b != 0) {
            return Err(bad("reserved header bytes 73..88 are not zero".into()));
        }
        let mut generation = [0u8; 16];
        generation.copy_from_slice(&bytes[48..64]);
        let header = Header {
            flags: Flags(be16(&bytes[6..8])),
            page_size: be32(&bytes[8..12]),
            commit: be32(&bytes[12..16]),
            min_txid: TxId(be64(&bytes[16..24])),
            max_txid: TxId(be64(&bytes[24..32])),
            timestamp_ms: be64(&bytes[32..40]),
            pre_apply_checksum: Checksum(be64(&bytes[40..48])),
            generation: GenerationId(generation),
            key_check: KeyCheck(be64(&bytes[64..72])),
            compression: Codecs(bytes[72]),
        };
        header.validate(object)?;
        Ok(header)
    }
}

/// One page index entry: where a page's frame starts and how long its
/// payload is, so one range request `[offset, offset + 8 + payload_len)`
/// fetches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The page.
    pub pgno: PageNo,
    /// Offset of the frame (its page-number field) from the file's start.
    pub offset: u64,
    /// Length of the frame's payload in bytes.
    pub payload_len: u32,
}

impl IndexEntry {
    /// Serialises the entry.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_SIZE] {
        let mut out = [0u8; INDEX_ENTRY_SIZE];
        out[0..4].copy_from_slice(&self.pgno.0.to_be_bytes());
        out[4..12].copy_from_slice(&self.offset.to_be_bytes());
        out[12..16].copy_from_slice(&self.payload_len.to_be_bytes());
        out
    }

    /// Parses an entry (no validation: the decoder checks it against the
    /// frames it saw).
    pub fn decode(bytes: &[u8; INDEX_ENTRY_SIZE]) -> IndexEntry {
        IndexEntry { pgno: PageNo(be32(&bytes[0..4])), offset: be64(&bytes[4..12]), payload_len: be32(&bytes[12..16]) }
    }
}

/// The end of a segment: where its index is, what the database looks like
/// after applying it, and the checksum of the whole file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Offset of the page index from the file's start.
    pub index_offset: u64,
    /// Number of frames (and index entries).
    pub page_count: u32,
    /// Rolling checksum of the database at `max_txid`, after applying.
    pub post_apply_checksum: Checksum,
    /// xxh3-64 of every byte of the file before this field.
    pub file_checksum: u64,
}

impl Trailer {
    /// Serialises the trailer; `file_checksum` must already be computed over
    /// every earlier byte, including the first 24 bytes of this trailer.
    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut out = [0u8; TRAILER_SIZE];
        out[..24].copy_from_slice(&self.encode_prefix());
        out[24..32].copy_from_slice(&self.file_checksum.to_be_bytes());
        out
    }

    /// The first 24 bytes: everything the file checksum covers.
    pub fn encode_prefix(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&self.index_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.page_count.to_be_bytes());
        // 12..16 reserved, zero.
        out[16..24].copy_from_slice(&self.post_apply_checksum.0.to_be_bytes());
        out
    }

    /// Parses a trailer. `object` names the segment in errors.
    pub fn decode(bytes: &[u8; TRAILER_SIZE], object: &str) -> Result<Trailer, FormatError> {
        if bytes[12..16].iter().any(|&b| b != 0) {
            return Err(FormatError::Malformed {
                object: object.to_string(),
                reason: "reserved trailer bytes 12..16 are not zero".into(),
            });
        }
        Ok(Trailer {
            index_offset: be64(&bytes[0..8]),
            page_count: be32(&bytes[8..12]),
            post_apply_checksum: Checksum(be64(&bytes[16..24])),
            file_checksum: be64(&bytes[24..32]),
        })
    }
}

pub(crate) fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

pub(crate) fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

pub(crate) fn be64(bytes: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(out)
}
