//! The objects a lazy replica reads pages from, and what it knows of each:
//! the payloads it holds (an object fetched whole, or the first frames of a
//! large one) and where the other frames are (the page index, read whole
//! for an L1 segment, chunk by chunk on demand for a snapshot).

use std::io::Cursor;

use bytes::Bytes;

use crate::apply::ApplyError;
use crate::format::{
    FRAME_HEADER_SIZE, FormatError, HEADER_SIZE, Header, INDEX_ENTRY_SIZE, IndexEntry, SegmentReader, TRAILER_SIZE,
    max_payload_len,
};

/// Index entries per chunk of a snapshot's page index fetched at once:
/// 4 KiB, the entries of 256 neighbouring pages.
pub const INDEX_CHUNK_ENTRIES: u32 = 256;

/// Where a frame is in its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Offset of the frame (its page-number field).
    pub offset: u64,
    /// Length of its payload.
    pub payload_len: u32,
}

impl Extent {
    /// One past the frame's last byte.
    pub fn end(self) -> u64 {
        self.offset + FRAME_HEADER_SIZE as u64 + u64::from(self.payload_len)
    }
}

/// How the frames not held in memory are found.
pub enum Rest {
    /// None: every frame is held.
    Nothing,
    /// The whole page index, read at sync, by ascending page.
    Index(Vec<(u32, Extent)>),
    /// A snapshot's index (pages `1..=commit`, entry `p` at
    /// `index_offset + 16 (p - 1)`), read in chunks when pages are wanted.
    SnapshotIndex {
        /// Offset of the first index entry.
        index_offset: u64,
    },
}

/// One object a replica version reads pages from.
pub struct Source {
    /// Identifies the object in the page cache.
    pub uid: u64,
    /// The object's key.
    pub key: String,
    /// Its header, checked against the chain.
    pub header: Header,
    /// Payloads held in memory, by ascending page.
    pub held: Vec<(u32, Bytes)>,
    /// Where the other frames are.
    pub rest: Rest,
}

/// Where one page's frame is.
pub enum Find {
    /// Its payload is in memory.
    Held(Bytes),
    /// At this extent of the object.
    At(Extent),
    /// Its index entry is in this chunk of the snapshot's index, not read yet.
    InChunk(u32),
    /// The object does not have the page.
    Absent,
}

impl Source {
    /// A source whose whole object is in `body`: verified whole (file
    /// checksum included, as every reader verifies an object it reads
    /// whole) and held in memory.
    pub fn whole(uid: u64, key: &str, body: Bytes) -> Result<(Source, crate::format::Trailer), ApplyError> {
        let mut reader = SegmentReader::open(key, Cursor::new(body))?;
        let header = reader.header().clone();
        let mut held = Vec::new();
        // Frames come in ascending page order (the decoder checks it).
        while let Some(frame) = reader.next_frame()? {
            held.push((frame.pgno.0, Bytes::from(frame.payload)));
        }
        let trailer = *reader.trailer().expect("next_frame returned None after the trailer");
        Ok((Source { uid, key: key.to_string(), header, held, rest: Rest::Nothing }, trailer))
    }

    /// A snapshot of `size` bytes whose first bytes are `head`: the frames
    /// wholly in `head` are held, the others found through its index.
    pub fn snapshot(uid: u64, key: &str, header: Header, head: &Bytes, size: u64) -> Result<Source, ApplyError> {
        let index_bytes = u64::from(header.commit) * INDEX_ENTRY_SIZE as u64;
        let index_offset = size
            .checked_sub(TRAILER_SIZE as u64 + index_bytes)
            .filter(|&offset| offset >= (HEADER_SIZE + FRAME_HEADER_SIZE) as u64)
            .ok_or_else(|| {
                malformed(key, format!("{size} bytes cannot hold {} pages and their index", header.commit))
            })?;
        let held = head_frames(key, &header, head, index_offset)?;
        Ok(Source { uid, key: key.to_string(), header, held, rest: Rest::SnapshotIndex { index_offset } })
    }

    /// A segment read through its page index: `tail` holds the index and the
    /// trailer (the last bytes of the object), `head` its first bytes.
    pub fn indexed(
        uid: u64,
        key: &str,
        header: Header,
        head: &Bytes,
        tail: &[u8],
        size: u64,
    ) -> Result<(Source, crate::format::Trailer), ApplyError> {
        let trailer_bytes: &[u8; TRAILER_SIZE] = tail
            .get(tail.len().saturating_sub(TRAILER_SIZE)..)
            .and_then(|t| t.try_into().ok())
            .ok_or_else(|| malformed(key, "shorter than a trailer".into()))?;
        let trailer = crate::format::Trailer::decode(trailer_bytes, key)?;
        let index_len = u64::from(trailer.page_count) * INDEX_ENTRY_SIZE as u64;
        if trailer.index_offset.checked_add(index_len + TRAILER_SIZE as u64) != Some(size) {
            return Err(malformed(
                key,
                format!(
                    "the trailer puts {} index entries at offset {} of a {size}-byte object",
                    trailer.page_count, trailer.index_offset
                ),
            ));
        }
        let index = tail
            .get(tail.len() - TRAILER_SIZE - index_len as usize..tail.len() - TRAILER_SIZE)
            .ok_or_else(|| malformed(key, "the page index was not fetched whole".into()))?;
        let mut entries = Vec::with_capacity(trailer.page_count as usize);
        let mut expected_offset = HEADER_SIZE as u64;
        let mut last = 0u32;
        for raw in index.chunks_exact(INDEX_ENTRY_SIZE) {
            let entry = IndexEntry::decode(raw.try_into().expect("chunks of 16 bytes"));
            check_entry(key, &header, &entry, expected_offset, trailer.index_offset)?;
            if entry.pgno.0 <= last {
                return Err(malformed(key, format!("index entry for page {} after page {last}", entry.pgno)));
            }
            last = entry.pgno.0;
            let extent = Extent { offset: entry.offset, payload_len: entry.payload_len };
            expected_offset = extent.end();
            entries.push((entry.pgno.0, extent));
        }
        if expected_offset + FRAME_HEADER_SIZE as u64 != trailer.index_offset {
            return Err(malformed(key, format!("the frames end at {expected_offset}, not before the end marker")));
        }
        let held = head_frames(key, &header, head, trailer.index_offset)?;
        let source = Source { uid, key: key.to_string(), header, held, rest: Rest::Index(entries) };
        Ok((source, trailer))
    }

    /// The same object, knowing its header only: where its pages are is
    /// forgotten (for a resident replica, whose pages are all decoded).
    pub fn without_payloads(&self) -> Source {
        Source {
            uid: self.uid,
            key: self.key.clone(),
            header: self.header.clone(),
            held: Vec::new(),
            rest: Rest::Nothing,
        }
    }

    /// The pages this object holds, when it holds a known set (not a
    /// snapshot, which holds `1..=commit`).
    pub fn pages(&self) -> Vec<u32> {
        match &self.rest {
            Rest::Index(entries) => entries.iter().map(|(pgno, _)| *pgno).collect(),
            _ => self.held.iter().map(|(pgno, _)| *pgno).collect(),
        }
    }

    /// Where page `pgno`'s frame is.
    pub fn find(&self, pgno: u32, chunk: Option<&[u8]>) -> Find {
        if let Ok(at) = self.held.binary_search_by_key(&pgno, |(p, _)| *p) {
            return Find::Held(self.held[at].1.clone());
        }
        match &self.rest {
            Rest::Nothing => Find::Absent,
            Rest::Index(entries) => match entries.binary_search_by_key(&pgno, |(p, _)| *p) {
                Ok(at) => Find::At(entries[at].1),
                Err(_) => Find::Absent,
            },
            Rest::SnapshotIndex { .. } if pgno == 0 || pgno > self.header.commit => Find::Absent,
            Rest::SnapshotIndex { .. } => {
                let number = (pgno - 1) / INDEX_CHUNK_ENTRIES;
                let Some(chunk) = chunk else { return Find::InChunk(number) };
                let at = ((pgno - 1) % INDEX_CHUNK_ENTRIES) as usize * INDEX_ENTRY_SIZE;
                match chunk.get(at..at + INDEX_ENTRY_SIZE) {
                    Some(raw) => {
                        let entry = IndexEntry::decode(raw.try_into().expect("16 bytes"));
                        Find::At(Extent { offset: entry.offset, payload_len: entry.payload_len })
                    }
                    None => Find::Absent,
                }
            }
        }
    }

    /// The byte range of chunk `number` of a snapshot's page index.
    pub fn chunk_range(&self, number: u32) -> Option<std::ops::Range<u64>> {
        let Rest::SnapshotIndex { index_offset } = self.rest else { return None };
        let first = number * INDEX_CHUNK_ENTRIES;
        let entries = self.header.commit.checked_sub(first)?.min(INDEX_CHUNK_ENTRIES);
        let start = index_offset + u64::from(first) * INDEX_ENTRY_SIZE as u64;
        Some(start..start + u64::from(entries) * INDEX_ENTRY_SIZE as u64)
    }

    /// Checks chunk `number` of a snapshot's index as fetched: one entry
    /// per page in order, each frame inside the frames and right after
    /// the one before.
    pub fn check_chunk(&self, number: u32, raw: &[u8]) -> Result<(), ApplyError> {
        let Rest::SnapshotIndex { index_offset } = self.rest else { return Ok(()) };
        let mut expected_offset = None;
        for (i, entry) in raw.chunks_exact(INDEX_ENTRY_SIZE).enumerate() {
            let entry = IndexEntry::decode(entry.try_into().expect("16 bytes"));
            let pgno = number * INDEX_CHUNK_ENTRIES + i as u32 + 1;
            if entry.pgno.0 != pgno {
                return Err(malformed(&self.key, format!("index entry {pgno} is for page {}", entry.pgno)));
            }
            let expected = expected_offset.unwrap_or(if pgno == 1 { HEADER_SIZE as u64 } else { entry.offset });
            check_entry(&self.key, &self.header, &entry, expected, index_offset)?;
            expected_offset = Some(entry.offset + FRAME_HEADER_SIZE as u64 + u64::from(entry.payload_len));
        }
        Ok(())
    }
}

/// Checks one index entry: a page of the database, its frame at `expected`
/// and inside the frames (which end where the index starts, less the end
/// marker), with a payload no longer than the format allows.
fn check_entry(
    key: &str,
    header: &Header,
    entry: &IndexEntry,
    expected: u64,
    index_offset: u64,
) -> Result<(), ApplyError> {
    let pgno = entry.pgno;
    if pgno.0 == 0 || pgno.0 > header.commit {
        return Err(malformed(key, format!("index entry for page {pgno} of a {}-page database", header.commit)));
    }
    if entry.offset != expected {
        return Err(malformed(key, format!("page {pgno}'s frame is at {}, expected {expected}", entry.offset)));
    }
    if entry.payload_len == 0 || entry.payload_len > max_payload_len(header.page_size) {
        return Err(malformed(key, format!("page {pgno}'s payload length {} is out of bounds", entry.payload_len)));
    }
    let end = entry.offset + FRAME_HEADER_SIZE as u64 + u64::from(entry.payload_len);
    if end + FRAME_HEADER_SIZE as u64 > index_offset {
        return Err(malformed(
            key,
            format!("page {pgno}'s frame runs past the frames (into the index at {index_offset})"),
        ));
    }
    Ok(())
}

/// The frames wholly inside `head` (the object's first bytes), checked
/// for order and bounds; their payloads are verified when decoded.
fn head_frames(key: &str, header: &Header, head: &Bytes, index_offset: u64) -> Result<Vec<(u32, Bytes)>, ApplyError> {
    let mut frames = Vec::new();
    let mut offset = HEADER_SIZE;
    let mut last = 0u32;
    let limit = head.len().min(usize::try_from(index_offset).unwrap_or(usize::MAX));
    while offset + FRAME_HEADER_SIZE <= limit {
        let pgno = be32(&head[offset..]);
        let len = be32(&head[offset + 4..]);
        if pgno == 0 {
            break; // the end marker
        }
        if pgno <= last || pgno > header.commit {
            return Err(malformed(key, format!("frame at offset {offset} is for page {pgno} after page {last}")));
        }
        if len == 0 || len > max_payload_len(header.page_size) {
            return Err(malformed(key, format!("frame at offset {offset} has a payload length of {len}")));
        }
        let end = offset + FRAME_HEADER_SIZE + len as usize;
        if end > limit {
            break;
        }
        frames.push((pgno, head.slice(offset + FRAME_HEADER_SIZE..end)));
        last = pgno;
        offset = end;
    }
    Ok(frames)
}

/// The payload of the frame at `extent`, out of `bytes` holding the
/// object's range starting at `start`, after checking its frame header.
pub fn payload_at(key: &str, pgno: u32, extent: Extent, start: u64, bytes: &Bytes) -> Result<Bytes, ApplyError> {
    let at = usize::try_from(extent.offset - start).expect("a fetched range is in memory");
    let frame = bytes
        .get(at..at + FRAME_HEADER_SIZE)
        .ok_or_else(|| malformed(key, format!("page {pgno}'s frame was not fetched")))?;
    let (found, len) = (be32(frame), be32(&frame[4..]));
    if found != pgno || len != extent.payload_len {
        return Err(malformed(
            key,
            format!(
                "the index puts page {pgno} ({} bytes) at offset {}, where the frame is page {found} ({len} bytes)",
                extent.payload_len, extent.offset
            ),
        ));
    }
    let body = at + FRAME_HEADER_SIZE;
    if body + len as usize > bytes.len() {
        return Err(malformed(key, format!("page {pgno}'s frame was not fetched whole")));
    }
    Ok(bytes.slice(body..body + len as usize))
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn malformed(key: &str, reason: String) -> ApplyError {
    FormatError::Malformed { object: key.to_string(), reason }.into()
}
