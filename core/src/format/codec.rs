//! Page images to frame payloads and back: each page compressed on its own,
//! with a check of its content inside the payload (so a page fetched alone by
//! a range request is still verified), then, with a key, AES-256-GCM sealing.
//!
//! Two compressed forms, told apart by the payload's first byte:
//! - **LZ4** (the default): `0x4C` || xxh3-64 of the page seeded with its page
//!   number (the page's term in the rolling checksum) || an LZ4 block. It
//!   decodes about four times faster than zstd, which makes a restore bound by
//!   the disk rather than by the CPU; it is what Litestream's LTX files use.
//! - **zstd**: one zstd frame (magic `28 B5 2F FD`) with its content
//!   checksum: 10–25% smaller, for stores where bytes cost more than time.
//!
//! Sealed payload: `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with
//! associated data `generation id (16 bytes) || page number (4 bytes, BE)`,
//! so a frame cannot be replayed at another page or into another database.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

use super::FormatError;
use super::header::be64;
use super::key::{EncryptionKey, KeyCheck};
use crate::checksum::page_hash;
use crate::ids::{GenerationId, PageNo};

const NONCE_SIZE: usize = 12;
const TAG_SIZE: usize = 16;
/// First byte of an LZ4 payload (ASCII `L`; a zstd frame starts with 0x28).
const LZ4_TAG: u8 = 0x4C;
/// Tag and page hash before an LZ4 block.
const LZ4_PREFIX: usize = 1 + 8;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// How a writer compresses pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// LZ4 blocks: the fastest to decode (the default).
    #[default]
    Lz4,
    /// zstd frames at `level` (1 = fastest; 3 is zstd's default).
    Zstd {
        /// The zstd level.
        level: i32,
    },
}

impl Compression {
    /// Parses `lz4`, `zstd` (level 3) or `zstd:LEVEL` (1..=19).
    pub fn parse(text: &str) -> Result<Compression, String> {
        let text = text.trim();
        match text.split_once(':') {
            None if text.eq_ignore_ascii_case("lz4") => Ok(Compression::Lz4),
            None if text.eq_ignore_ascii_case("zstd") => Ok(Compression::Zstd { level: 3 }),
            Some((name, level)) if name.eq_ignore_ascii_case("zstd") => match level.parse::<i32>() {
                Ok(level @ 1..=19) => Ok(Compression::Zstd { level }),
                _ => Err(format!("invalid zstd level {level:?} in compression {text:?} (expected 1 to 19)")),
            },
            _ => Err(format!("unknown compression {text:?} (expected lz4, zstd or zstd:LEVEL)")),
        }
    }

    /// The header's codec bit for pages written this way.
    pub fn codecs(self) -> Codecs {
        match self {
            Compression::Lz4 => Codecs(Codecs::LZ4),
            Compression::Zstd { .. } => Codecs(Codecs::ZSTD),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

/// The set of page codecs a segment's payloads may use (header byte 72): a
/// writer sets its codec's bit, a merge the union of its inputs', and a
/// reader refuses a bit it does not know, so an older reader names the
/// problem instead of failing on the first page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codecs(pub u8);

impl Codecs {
    /// zstd frames.
    pub const ZSTD: u8 = 1 << 0;
    /// LZ4 payloads.
    pub const LZ4: u8 = 1 << 1;
    pub(crate) const KNOWN: u8 = Self::ZSTD | Self::LZ4;

    /// Both sets' codecs.
    #[must_use]
    pub fn union(self, other: Codecs) -> Codecs {
        Codecs(self.0 | other.0)
    }

    /// The union of a segment's inputs' sets (a merge copies their frames
    /// as they are, so its output may hold any of them).
    pub fn union_of(sets: impl IntoIterator<Item = Codecs>) -> Codecs {
        sets.into_iter().fold(Codecs(0), Codecs::union)
    }

    /// Whether every codec of `other` is in this set.
    pub fn contains(self, other: Codecs) -> bool {
        other.0 & !self.0 == 0
    }
}

enum Compressor {
    Lz4,
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

/// Encodes and decodes frame payloads for one database identity and key.
pub struct PageCodec {
    generation: GenerationId,
    cipher: Option<(Aes256Gcm, KeyCheck)>,
    compressor: Compressor,
    /// Created on the first zstd payload: a store written with LZ4 never
    /// needs zstd's decoding context (about 100 KiB per thread).
    zstd_decompressor: Option<Box<zstd::bulk::Decompressor<'static>>>,
    compression: Compression,
}

impl std::fmt::Debug for PageCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCodec")
            .field("generation", &self.generation)
            .field("key_check", &self.key_check())
            .field("compression", &self.compression)
            .finish()
    }
}

impl PageCodec {
    /// A codec for pages of `generation`, sealing with `key` if given.
    pub fn new(
        generation: GenerationId,
        key: Option<&EncryptionKey>,
        compression: Compression,
    ) -> Result<PageCodec, FormatError> {
        let cipher = key.map(|key| (Aes256Gcm::new(&key.0.into()), key.check()));
        let compressor = compressor(generation, compression)?;
        Ok(PageCodec { generation, cipher, compressor, zstd_decompressor: None, compression })
    }

    /// A codec for the same generation, key and compression with
    /// compression contexts of its own, for another thread.
    pub fn fork(&self) -> Result<PageCodec, FormatError> {
        let compressor = compressor(self.generation, self.compression)?;
        Ok(PageCodec { cipher: self.cipher.clone(), compressor, zstd_decompressor: None, ..*self })
    }

    /// The key check to write in headers ([`KeyCheck::NONE`] without a key).
    pub fn key_check(&self) -> KeyCheck {
        self.cipher.as_ref().map_or(KeyCheck::NONE, |(_, check)| *check)
    }

    /// How this codec compresses.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Compresses (and seals) one page image into a frame payload.
    pub fn encode_page(&mut self, object: &str, pgno: PageNo, page: &[u8]) -> Result<Vec<u8>, FormatError> {
        let misuse = |what: &str, e: &dyn std::fmt::Display| FormatError::Misuse {
            object: object.to_string(),
            reason: format!("{what} page {pgno}: {e}"),
        };
        let compressed = match &mut self.compressor {
            Compressor::Lz4 => {
                let mut payload = vec![0u8; LZ4_PREFIX + lz4_flex::block::get_maximum_output_size(page.len())];
                payload[0] = LZ4_TAG;
                payload[1..LZ4_PREFIX].copy_from_slice(&page_hash(pgno, page).to_be_bytes());
                let written = lz4_flex::block::compress_into(page, &mut payload[LZ4_PREFIX..])
                    .map_err(|e| misuse("compress", &e))?;
                payload.truncate(LZ4_PREFIX + written);
                payload
            }
            Compressor::Zstd(compressor) => compressor.compress(page).map_err(|e| misuse("compress", &e))?,
        };
        let Some((cipher, _)) = &self.cipher else {
            return Ok(compressed);
        };
        let mut nonce = [0u8; NONCE_SIZE];
        getrandom::fill(&mut nonce).map_err(|e| misuse("draw a nonce for", &e))?;
        let aad = associated_data(self.generation, pgno);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &compressed, aad: &aad })
            .map_err(|_| misuse("seal", &"AES-GCM failed"))?;
        let mut payload = Vec::with_capacity(NONCE_SIZE + sealed.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&sealed);
        Ok(payload)
    }

    /// Checks that this codec can open frames of a segment whose header says
    /// `key_check`: the right key, or no key for a plain segment.
    pub fn check_key(&self, object: &str, key_check: KeyCheck) -> Result<(), FormatError> {
        let ours = self.key_check();
        if ours == key_check {
            return Ok(());
        }
        let reason = match (key_check == KeyCheck::NONE, ours == KeyCheck::NONE) {
            (false, true) => "the segment is encrypted and no encryption key is configured (pass the key file)".to_string(),
            (true, false) => "the segment is not encrypted but an encryption key is configured (remove the key, or point at the encrypted store)".to_string(),
            _ => format!(
                "wrong encryption key: the segment was sealed with key {key_check}, the configured key is {ours} (use the key the primary uses)"
            ),
        };
        Err(FormatError::WrongKey { object: object.to_string(), reason })
    }

    /// Opens (and decompresses) a frame payload into `page`, which must be
    /// exactly one page long, whatever codec wrote it. Returns the page's
    /// term in the rolling checksum ([`page_hash`]): an LZ4 payload carries
    /// it, checked here against the page, so it is computed once.
    pub fn decode_page(
        &mut self,
        object: &str,
        pgno: PageNo,
        payload: &[u8],
        page: &mut [u8],
    ) -> Result<u64, FormatError> {
        let bad = |reason: String| FormatError::BadFrame { object: object.to_string(), pgno, reason };
        let opened;
        let compressed = match &self.cipher {
            None => payload,
            Some((cipher, _)) => {
                if payload.len() < NONCE_SIZE + TAG_SIZE {
                    return Err(bad(format!(
                        "sealed payload of {} bytes is shorter than nonce and tag",
                        payload.len()
                    )));
                }
                let (nonce, sealed) = payload.split_at(NONCE_SIZE);
                let aad = associated_data(self.generation, pgno);
                opened =
                    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad }).map_err(|_| {
                        bad("authentication failed: the frame was altered or belongs to another page or database"
                            .into())
                    })?;
                &opened[..]
            }
        };
        match compressed.first() {
            Some(&LZ4_TAG) if compressed.len() > LZ4_PREFIX => {
                let stored = be64(&compressed[1..LZ4_PREFIX]);
                let written = lz4_flex::block::decompress_into(&compressed[LZ4_PREFIX..], page)
                    .map_err(|e| bad(format!("lz4: {e}")))?;
                if written != page.len() {
                    return Err(bad(format!("decompressed to {written} bytes, expected a page of {}", page.len())));
                }
                let computed = page_hash(pgno, page);
                if computed != stored {
                    return Err(bad(format!(
                        "page checksum mismatch (stored {stored:016x}, computed {computed:016x}): the frame is corrupt"
                    )));
                }
                Ok(computed)
            }
            _ if compressed.starts_with(&ZSTD_MAGIC) => {
                let decompressor = match &mut self.zstd_decompressor {
                    Some(decompressor) => decompressor,
                    empty => empty.insert(Box::new(
                        zstd::bulk::Decompressor::new().map_err(|e| bad(format!("initialise zstd: {e}")))?,
                    )),
                };
                let written =
                    decompressor.decompress_to_buffer(compressed, page).map_err(|e| bad(format!("zstd: {e}")))?;
                if written != page.len() {
                    return Err(bad(format!("decompressed to {written} bytes, expected a page of {}", page.len())));
                }
                Ok(page_hash(pgno, page))
            }
            _ => Err(bad(format!(
                "payload starts with {:02x?}, neither an LZ4 payload nor a zstd frame",
                &compressed[..compressed.len().min(4)]
            ))),
        }
    }
}

fn compressor(generation: GenerationId, compression: Compression) -> Result<Compressor, FormatError> {
    let Compression::Zstd { level } = compression else {
        return Ok(Compressor::Lz4);
    };
    let zstd_error = |e: std::io::Error| FormatError::Misuse {
        object: generation.to_string(),
        reason: format!("initialise zstd: {e}"),
    };
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(zstd_error)?;
    compressor.include_checksum(true).map_err(zstd_error)?;
    compressor.include_contentsize(true).map_err(zstd_error)?;
    Ok(Compressor::Zstd(Box::new(compressor)))
}

fn associated_data(generation: GenerationId, pgno: PageNo) -> [u8; 20] {
    let mut aad = [0u8; 20];
    aad[..16].copy_from_slice(&generation.0);
    aad[16..].copy_from_slice(&pgno.0.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation() -> GenerationId {
        GenerationId([9; 16])
    }

    #[test]
    fn plain_and_sealed_pages_round_trip() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        for compression in [Compression::Lz4, Compression::Zstd { level: 3 }] {
            for key in [None, Some(EncryptionKey::from_bytes([5; 32]))] {
                let mut codec = PageCodec::new(generation(), key.as_ref(), compression).unwrap();
                let payload = codec.encode_page("t", PageNo(3), &page).unwrap();
                assert!(payload.len() < page.len(), "{compression}: {} bytes", payload.len());
                let mut out = vec![0u8; 4096];
                let hash = codec.decode_page("t", PageNo(3), &payload, &mut out).unwrap();
                assert_eq!(out, page);
                assert_eq!(hash, page_hash(PageNo(3), &page));
            }
        }
    }

    #[test]
    fn a_sealed_frame_cannot_move_to_another_page() {
        let key = EncryptionKey::from_bytes([5; 32]);
        let mut codec = PageCodec::new(generation(), Some(&key), Compression::default()).unwrap();
        let payload = codec.encode_page("t", PageNo(3), &[1u8; 512]).unwrap();
        let mut out = vec![0u8; 512];
        let err = codec.decode_page("t", PageNo(4), &payload, &mut out).unwrap_err();
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }

    #[test]
    fn key_mismatch_messages_say_what_to_do() {
        let a = EncryptionKey::from_bytes([1; 32]);
        let b = EncryptionKey::from_bytes([2; 32]);
        let codec = PageCodec::new(generation(), Some(&a), Compression::default()).unwrap();
        let err = codec.check_key("l0/x", b.check()).unwrap_err().to_string();
        assert!(err.contains("wrong encryption key"), "{err}");
        let plain = PageCodec::new(generation(), None, Compression::default()).unwrap();
        let err = plain.check_key("l0/x", a.check()).unwrap_err().to_string();
        assert!(err.contains("no encryption key is configured"), "{err}");
    }

    #[test]
    fn either_codec_reads_the_others_pages() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8).collect();
        let mut lz4 = PageCodec::new(generation(), None, Compression::Lz4).unwrap();
        let mut zstd = PageCodec::new(generation(), None, Compression::Zstd { level: 1 }).unwrap();
        let mut out = vec![0u8; 4096];
        let payload = lz4.encode_page("t", PageNo(2), &page).unwrap();
        zstd.decode_page("t", PageNo(2), &payload, &mut out).unwrap();
        assert_eq!(out, page);
        let payload = zstd.encode_page("t", PageNo(2), &page).unwrap();
        lz4.decode_page("t", PageNo(2), &payload, &mut out).unwrap();
        assert_eq!(out, page);
    }

    #[test]
    fn a_corrupt_lz4_payload_is_refused_by_its_page_checksum() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut codec = PageCodec::new(generation(), None, Compression::Lz4).unwrap();
        let mut out = vec![0u8; 4096];
        let payload = codec.encode_page("l0/x", PageNo(7), &page).unwrap();
        // A literal byte changed: LZ4 still decodes, the page hash catches it.
        let mut flipped = payload.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let err = codec.decode_page("l0/x", PageNo(7), &flipped, &mut out).unwrap_err().to_string();
        assert!(err.contains("page 7 of segment l0/x") && err.contains("page checksum mismatch"), "{err}");
        // The frame moved to another page: its hash is seeded with the page number.
        let err = codec.decode_page("l0/x", PageNo(8), &payload, &mut out).unwrap_err().to_string();
        assert!(err.contains("page checksum mismatch"), "{err}");
        // Cut short, and an unknown first byte.
        let err = codec.decode_page("l0/x", PageNo(7), &payload[..20], &mut out).unwrap_err().to_string();
        assert!(err.contains("lz4") || err.contains("decompressed to"), "{err}");
        let err = codec.decode_page("l0/x", PageNo(7), &[0x99, 1, 2], &mut out).unwrap_err().to_string();
        assert!(err.contains("neither an LZ4 payload nor a zstd frame"), "{err}");
    }

    #[test]
    fn compression_names_parse() {
        assert_eq!(Compression::parse("lz4"), Ok(Compression::Lz4));
        assert_eq!(Compression::parse("ZSTD"), Ok(Compression::Zstd { level: 3 }));
        assert_eq!(Compression::parse("zstd:9"), Ok(Compression::Zstd { level: 9 }));
        assert!(Compression::parse("zstd:0").unwrap_err().contains("expected 1 to 19"));
        assert!(Compression::parse("gzip").unwrap_err().contains("expected lz4, zstd or zstd:LEVEL"));
        for c in [Compression::Lz4, Compression::Zstd { level: 5 }] {
            assert_eq!(Compression::parse(&c.to_string()), Ok(c));
        }
    }
}
