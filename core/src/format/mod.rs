//! The segment file format, byte for byte as `docs/FORMAT.md` specifies it.
//!
//! A segment is: a 96-byte [`Header`], page frames sorted by page number, an
//! 8-byte end-of-frames marker, a page index (16 bytes per frame), and a
//! 32-byte [`Trailer`]. All integers are big-endian.
//!
//! - [`SegmentEncoder`] writes one to any `std::io::Write`, a page at a time.
//! - [`SegmentDecoder`] is a push parser: feed it bytes in chunks of any size
//!   and it yields [`Event`]s, verifying everything as it goes.
//! - [`SegmentReader`] drives the decoder from any `std::io::Read`.
//! - [`PageCodec`] turns page images into frame payloads and back
//!   (LZ4 or zstd, then optionally AES-256-GCM).
//!
//! Nothing here depends on an async runtime, so it builds for wasm32.

mod codec;
mod decoder;
mod encoder;
mod header;
mod key;
mod reader;

pub use codec::{Codecs, Compression, PageCodec};
pub use decoder::{Event, Frame, SegmentDecoder};
pub use encoder::{EncodeSummary, SegmentEncoder};
pub use header::{Flags, Header, IndexEntry, Trailer};
pub use key::{EncryptionKey, KeyCheck, KeyFileError};
pub use reader::{SegmentReader, read_segment_header};

use crate::ids::{PageNo, TxId};

/// First four bytes of every segment.
pub const MAGIC: [u8; 4] = *b"DSEG";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 96;
/// Size of a frame's header (page number, payload length) in bytes.
pub const FRAME_HEADER_SIZE: usize = 8;
/// Size of one page index entry in bytes.
pub const INDEX_ENTRY_SIZE: usize = 16;
/// Size of the trailer in bytes.
pub const TRAILER_SIZE: usize = 32;
/// Smallest and largest SQLite page sizes.
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest SQLite page size.
pub const MAX_PAGE_SIZE: u32 = 65_536;

/// The largest frame payload accepted for a page size: a page that zstd could
/// not shrink, zstd's frame overhead, and the sealing overhead, with room to
/// spare. Bounds the decoder's memory whatever a corrupt length field says.
pub fn max_payload_len(page_size: u32) -> u32 {
    page_size + page_size / 8 + 1024
}

/// Everything that can be wrong with a segment or with the way the encoder
/// is used. Variants carrying `object` name the segment (its key, or a path)
/// so the message points at the thing to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes are not a segment, or not one this version understands.
    #[error("read segment {object}: {reason}")]
    Malformed {
        /// The segment's key or path.
        object: String,
        /// What is wrong, with the offset where it was found.
        reason: String,
    },
    /// A checksum stored in the segment does not match its bytes.
    #[error(
        "verify segment {object}: {what} checksum mismatch (stored {stored:016x}, computed {computed:016x}): the object is corrupt"
    )]
    ChecksumMismatch {
        /// The segment's key or path.
        object: String,
        /// Which checksum: "header", "file" or "page index".
        what: &'static str,
        /// Value stored in the segment.
        stored: u64,
        /// Value computed from the bytes.
        computed: u64,
    },
    /// The segment ended before its trailer.
    #[error("read segment {object}: truncated after {offset} bytes (expected {expected})")]
    Truncated {
        /// The segment's key or path.
        object: String,
        /// How many bytes were read.
        offset: u64,
        /// What was expected next.
        expected: &'static str,
    },
    /// The segment is sealed and no key, or another key, was supplied.
    #[error("decrypt segment {object}: {reason}")]
    WrongKey {
        /// The segment's key or path.
        object: String,
        /// "no encryption key configured" or "wrong encryption key ...".
        reason: String,
    },
    /// A frame failed to decompress or unseal although the file checksum
    /// matched (or was not checked, for a single-page range read).
    #[error("decode page {pgno} of segment {object}: {reason}")]
    BadFrame {
        /// The segment's key or path.
        object: String,
        /// The page whose frame is bad.
        pgno: PageNo,
        /// What went wrong.
        reason: String,
    },
    /// The encoder was used out of order or with inconsistent input.
    #[error("encode segment {object}: {reason}")]
    Misuse {
        /// The segment being written.
        object: String,
        /// What the caller did wrong.
        reason: String,
    },
    /// Writing or reading the underlying stream failed.
    #[error("{op} segment {object}: {source}")]
    Io {
        /// "read" or "write".
        op: &'static str,
        /// The segment's key or path.
        object: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The TXID range a segment covers, printed as `[min, max]` in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxRange {
    /// First transaction covered.
    pub min_txid: TxId,
    /// Last transaction covered.
    pub max_txid: TxId,
}

impl std::fmt::Display for TxRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}]", self.min_txid, self.max_txid)
    }
}
