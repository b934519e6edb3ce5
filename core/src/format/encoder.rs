//! The streaming segment encoder: header first, then frames in page order,
//! then index and trailer. Memory holds one page and the index (16 bytes per
//! page written), whatever the segment's size.

use std::io::Write;

use xxhash_rust::xxh3::Xxh3;

use super::codec::PageCodec;
use super::header::{Header, IndexEntry, Trailer};
use super::{FRAME_HEADER_SIZE, FormatError, max_payload_len};
use crate::ids::{Checksum, PageNo};

/// What the encoder wrote, for logs and manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeSummary {
    /// Total size of the segment in bytes.
    pub size: u64,
    /// Number of page frames.
    pub page_count: u32,
    /// The trailer as written.
    pub trailer: Trailer,
}

/// Writes one segment. Call [`SegmentEncoder::write_page`] (or
/// [`SegmentEncoder::write_frame`] for payloads copied from another segment)
/// in strictly increasing page order, then [`SegmentEncoder::finish`].
/// Misuse gets a [`FormatError::Misuse`] naming the segment and the rule.
pub struct SegmentEncoder<W: Write> {
    object: String,
    header: Header,
    out: W,
    hasher: Xxh3,
    offset: u64,
    last_pgno: u32,
    index: Vec<IndexEntry>,
    /// Set once a write failed: the output is then garbage and must not be
    /// finished into something that looks valid.
    poisoned: bool,
}

impl<W: Write> SegmentEncoder<W> {
    /// Starts a segment named `object` (its key, for messages) by writing
    /// `header` to `out`.
    pub fn new(object: impl Into<String>, header: Header, out: W) -> Result<SegmentEncoder<W>, FormatError> {
        let object = object.into();
        header.validate(&object).map_err(|e| FormatError::Misuse { object: object.clone(), reason: e.to_string() })?;
        let mut encoder = SegmentEncoder {
            object,
            header,
            out,
            hasher: Xxh3::new(),
            offset: 0,
            last_pgno: 0,
            index: Vec::new(),
            poisoned: false,
        };
        let bytes = encoder.header.encode();
        encoder.write_all(&bytes)?;
        Ok(encoder)
    }

    /// The header this segment was started with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Compresses (and seals) `page` with `codec` and appends it as the frame
    /// of `pgno`.
    pub fn write_page(&mut self, codec: &mut PageCodec, pgno: PageNo, page: &[u8]) -> Result<(), FormatError> {
        if page.len() != self.header.page_size as usize {
            return Err(self.misuse(format!(
                "page {pgno} is {} bytes, but the segment's page size is {}",
                page.len(),
                self.header.page_size
            )));
        }
        if codec.key_check() != self.header.key_check {
            return Err(self.misuse("the page codec's key does not match the header's key check".into()));
        }
        if !self.header.compression.contains(codec.compression().codecs()) {
            return Err(self.misuse(format!(
                "the page codec compresses with {}, which the header's compression byte does not list",
                codec.compression()
            )));
        }
        self.check_order(pgno)?;
        let payload = codec.encode_page(&self.object, pgno, page)?;
        self.append_frame(pgno, &payload)
    }

    /// Appends an already-encoded frame payload (copied as bytes from a
    /// segment of the same database, key and page size: the merge path).
    pub fn write_frame(&mut self, pgno: PageNo, payload: &[u8]) -> Result<(), FormatError> {
        self.check_order(pgno)?;
        self.append_frame(pgno, payload)
    }

    /// Writes the end marker, the index and the trailer, and returns the
    /// output with a summary. `post_apply_checksum` is the database checksum
    /// at `max_txid`.
    pub fn finish(mut self, post_apply_checksum: Checksum) -> Result<(W, EncodeSummary), FormatError> {
        if self.poisoned {
            return Err(self.misuse("an earlier write failed; the segment is incomplete".into()));
        }
        let page_count = u32::try_from(self.index.len()).map_err(|_| self.misuse("more than 2^32 frames".into()))?;
        if self.header.flags.snapshot() && page_count != self.header.commit {
            return Err(self.misuse(format!(
                "snapshot holds {page_count} pages but commit is {}: a snapshot needs every page",
                self.header.commit
            )));
        }
        self.write_all(&[0u8; FRAME_HEADER_SIZE])?;
        let index_offset = self.offset;
        let index = std::mem::take(&mut self.index);
        for entry in &index {
            self.write_all(&entry.encode())?;
        }
        let mut trailer = Trailer { index_offset, page_count, post_apply_checksum, file_checksum: 0 };
        self.write_all(&trailer.encode_prefix())?;
        trailer.file_checksum = self.hasher.digest();
        let tail = trailer.file_checksum.to_be_bytes();
        self.out.write_all(&tail).map_err(|e| self.io(e))?;
        self.out.flush().map_err(|e| self.io(e))?;
        let size = self.offset + tail.len() as u64;
        Ok((self.out, EncodeSummary { size, page_count, trailer }))
    }

    fn check_order(&self, pgno: PageNo) -> Result<(), FormatError> {
        if pgno.0 == 0 {
            return Err(self.misuse("page 0 does not exist (pages start at 1)".into()));
        }
        if pgno.0 <= self.last_pgno {
            return Err(self.misuse(format!(
                "page {pgno} written after page {}: frames must be in strictly increasing page order",
                self.last_pgno
            )));
        }
        if pgno.0 > self.header.commit {
            return Err(
                self.misuse(format!("page {pgno} is past the database size of {} pages (commit)", self.header.commit))
            );
        }
        Ok(())
    }

    fn append_frame(&mut self, pgno: PageNo, payload: &[u8]) -> Result<(), FormatError> {
        let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        if payload_len == 0 || payload_len > max_payload_len(self.header.page_size) {
            return Err(self.misuse(format!("frame payload of page {pgno} has an invalid length {}", payload.len())));
        }
        let entry = IndexEntry { pgno, offset: self.offset, payload_len };
        let mut frame_header = [0u8; FRAME_HEADER_SIZE];
        frame_header[..4].copy_from_slice(&pgno.0.to_be_bytes());
        frame_header[4..].copy_from_slice(&payload_len.to_be_bytes());
        self.write_all(&frame_header)?;
        self.write_all(payload)?;
        self.index.push(entry);
        self.last_pgno = pgno.0;
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        if let Err(e) = self.out.write_all(bytes) {
            self.poisoned = true;
            return Err(self.io(e));
        }
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn misuse(&self, reason: String) -> FormatError {
        FormatError::Misuse { object: self.object.clone(), reason }
    }

    fn io(&self, source: std::io::Error) -> FormatError {
        FormatError::Io { op: "write", object: self.object.clone(), source }
    }
}
