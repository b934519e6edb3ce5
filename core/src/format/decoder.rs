//! The push decoder: a state machine fed with bytes in chunks of any size.
//! It verifies as it goes (header checksum, page order, frame lengths, the
//! page index against the frames it saw, the file checksum) and yields each
//! part as an [`Event`]. Memory holds one frame and the unparsed tail of the
//! last chunk; arbitrary input produces an error, never a panic.

use xxhash_rust::xxh3::Xxh3;

use super::header::{Header, IndexEntry, Trailer, be32};
use super::{FRAME_HEADER_SIZE, FormatError, HEADER_SIZE, INDEX_ENTRY_SIZE, TRAILER_SIZE, max_payload_len};
use crate::ids::PageNo;

/// One page frame as stored: its page number and its (compressed, maybe
/// sealed) payload. Decode the payload with [`super::PageCodec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The page.
    pub pgno: PageNo,
    /// The frame's payload bytes, exactly as in the segment.
    pub payload: Vec<u8>,
}

/// What the decoder found next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The header, always first.
    Header(Header),
    /// The next frame, in increasing page order.
    Frame(Frame),
    /// The trailer, last: the whole file has been verified.
    Trailer(Trailer),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    FrameHeader,
    FramePayload { pgno: u32, len: u32 },
    Index { remaining: u32 },
    Trailer,
    Done,
    Failed,
}

/// Decodes one segment. Feed bytes with [`SegmentDecoder::push`], say when
/// the input ended with [`SegmentDecoder::finish_input`], and pull
/// [`Event`]s with [`SegmentDecoder::next_event`] until it returns the
/// trailer. After an error the decoder stays failed.
pub struct SegmentDecoder {
    object: String,
    state: State,
    buf: Vec<u8>,
    pos: usize,
    input_ended: bool,
    /// Offset of `buf[pos]` in the segment.
    offset: u64,
    hasher: Xxh3,
    header: Option<Header>,
    last_pgno: u32,
    frame_count: u32,
    index_offset: u64,
    expected_index: Xxh3,
    actual_index: Xxh3,
}

impl SegmentDecoder {
    /// A decoder for the segment named `object` (its key or path: every
    /// error names it).
    pub fn new(object: impl Into<String>) -> SegmentDecoder {
        SegmentDecoder {
            object: object.into(),
            state: State::Header,
            buf: Vec::new(),
            pos: 0,
            input_ended: false,
            offset: 0,
            hasher: Xxh3::new(),
            header: None,
            last_pgno: 0,
            frame_count: 0,
            index_offset: 0,
            expected_index: Xxh3::new(),
            actual_index: Xxh3::new(),
        }
    }

    /// The segment's name, as given to [`SegmentDecoder::new`].
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The header, once decoded.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Whether the trailer has been decoded and verified.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes the decoder wants before it can make progress: the
    /// rest of the current part. Readers use it to size their next read.
    pub fn wanted(&self) -> usize {
        let need = match self.state {
            State::Header => HEADER_SIZE,
            State::FrameHeader => FRAME_HEADER_SIZE,
            State::FramePayload { len, .. } => len as usize,
            State::Index { .. } => INDEX_ENTRY_SIZE,
            State::Trailer => TRAILER_SIZE,
            State::Done | State::Failed => 0,
        };
        need.saturating_sub(self.buf.len() - self.pos)
    }

    /// Appends input bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= 64 * 1024) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Marks the end of input: from now on, a part that is not complete is
    /// reported as truncation instead of waiting for more bytes.
    pub fn finish_input(&mut self) {
        self.input_ended = true;
    }

    /// The next event, `Ok(None)` if more input is needed first.
    pub fn next_event(&mut self) -> Result<Option<Event>, FormatError> {
        let result = self.step();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn step(&mut self) -> Result<Option<Event>, FormatError> {
        loop {
            match self.state {
                State::Failed => {
                    return Err(self.malformed("decoder already failed on an earlier error".into()));
                }
                State::Done => {
                    if self.pos < self.buf.len() {
                        return Err(
                            self.malformed(format!("unexpected bytes after the trailer at offset {}", self.offset))
                        );
                    }
                    return Ok(None);
                }
                State::Header => {
                    let Some(bytes) = self.take(HEADER_SIZE, "header")? else {
                        return Ok(None);
                    };
                    let mut raw = [0u8; HEADER_SIZE];
                    raw.copy_from_slice(&bytes);
                    let header = Header::decode(&raw, &self.object)?;
                    self.header = Some(header.clone());
                    self.state = State::FrameHeader;
                    return Ok(Some(Event::Header(header)));
                }
                State::FrameHeader => {
                    let frame_offset = self.offset;
                    let Some(bytes) = self.take(FRAME_HEADER_SIZE, "a frame header")? else {
                        return Ok(None);
                    };
                    let pgno = be32(&bytes[0..4]);
                    let len = be32(&bytes[4..8]);
                    if pgno == 0 {
                        if len != 0 {
                            return Err(self.malformed(format!(
                                "end-of-frames marker at offset {frame_offset} has length {len}, expected 0"
                            )));
                        }
                        self.index_offset = self.offset;
                        self.state = match self.frame_count {
                            0 => State::Trailer,
                            n => State::Index { remaining: n },
                        };
                        self.check_snapshot_complete()?;
                        continue;
                    }
                    self.check_frame(frame_offset, pgno, len)?;
                    let entry = IndexEntry { pgno: PageNo(pgno), offset: frame_offset, payload_len: len };
                    self.expected_index.update(&entry.encode());
                    self.state = State::FramePayload { pgno, len };
                }
                State::FramePayload { pgno, len } => {
                    let Some(payload) = self.take(len as usize, "a frame payload")? else {
                        return Ok(None);
                    };
                    self.last_pgno = pgno;
                    self.frame_count += 1;
                    self.state = State::FrameHeader;
                    return Ok(Some(Event::Frame(Frame { pgno: PageNo(pgno), payload })));
                }
                State::Index { remaining } => {
                    let Some(bytes) = self.take(INDEX_ENTRY_SIZE, "a page index entry")? else {
                        return Ok(None);
                    };
                    self.actual_index.update(&bytes);
                    self.state = match remaining - 1 {
                        0 => State::Trailer,
                        n => State::Index { remaining: n },
                    };
                }
                State::Trailer => {
                    if self.buf.len() - self.pos < TRAILER_SIZE {
                        if self.input_ended {
                            return Err(self.truncated("the trailer"));
                        }
                        return Ok(None);
                    }
                    let mut raw = [0u8; TRAILER_SIZE];
                    raw.copy_from_slice(&self.buf[self.pos..self.pos + TRAILER_SIZE]);
                    // The file checksum covers everything before its own field.
                    self.hasher.update(&raw[..24]);
                    self.pos += TRAILER_SIZE;
                    self.offset += TRAILER_SIZE as u64;
                    let trailer = Trailer::decode(&raw, &self.object)?;
                    self.verify_trailer(&trailer)?;
                    self.state = State::Done;
                    return Ok(Some(Event::Trailer(trailer)));
                }
            }
        }
    }

    /// Takes `n` bytes (hashing them) if they are all buffered.
    fn take(&mut self, n: usize, what: &'static str) -> Result<Option<Vec<u8>>, FormatError> {
        if self.buf.len() - self.pos < n {
            if self.input_ended {
                return Err(self.truncated(what));
            }
            return Ok(None);
        }
        let bytes = self.buf[self.pos..self.pos + n].to_vec();
        self.hasher.update(&bytes);
        self.pos += n;
        self.offset += n as u64;
        Ok(Some(bytes))
    }

    fn check_frame(&self, offset: u64, pgno: u32, len: u32) -> Result<(), FormatError> {
        let Some(header) = &self.header else {
            return Err(self.malformed("frame before header".into()));
        };
        if pgno <= self.last_pgno {
            return Err(self.malformed(format!(
                "frame for page {pgno} at offset {offset} follows page {}: pages must strictly increase",
                self.last_pgno
            )));
        }
        if pgno > header.commit {
            return Err(self.malformed(format!(
                "frame for page {pgno} at offset {offset} is past the database size of {} pages",
                header.commit
            )));
        }
        if len == 0 || len > max_payload_len(header.page_size) {
            return Err(self.malformed(format!(
                "frame for page {pgno} at offset {offset} has payload length {len}, outside 1..={}",
                max_payload_len(header.page_size)
            )));
        }
        Ok(())
    }

    fn check_snapshot_complete(&self) -> Result<(), FormatError> {
        match &self.header {
            Some(header) if header.flags.snapshot() && self.frame_count != header.commit => Err(self.malformed(
                format!("snapshot holds {} pages but its database has {} (commit)", self.frame_count, header.commit),
            )),
            _ => Ok(()),
        }
    }

    fn verify_trailer(&self, trailer: &Trailer) -> Result<(), FormatError> {
        let computed = self.hasher.digest();
        if trailer.file_checksum != computed {
            return Err(FormatError::ChecksumMismatch {
                object: self.object.clone(),
                what: "file",
                stored: trailer.file_checksum,
                computed,
            });
        }
        if trailer.page_count != self.frame_count {
            return Err(self.malformed(format!(
                "trailer counts {} pages but the segment holds {} frames",
                trailer.page_count, self.frame_count
            )));
        }
        if trailer.index_offset != self.index_offset {
            return Err(self.malformed(format!(
                "trailer puts the page index at offset {} but it starts at {}",
                trailer.index_offset, self.index_offset
            )));
        }
        let (stored, computed) = (self.actual_index.digest(), self.expected_index.digest());
        if stored != computed {
            return Err(FormatError::ChecksumMismatch {
                object: self.object.clone(),
                what: "page index",
                stored,
                computed,
            });
        }
        Ok(())
    }

    fn malformed(&self, reason: String) -> FormatError {
        FormatError::Malformed { object: self.object.clone(), reason }
    }

    fn truncated(&self, expected: &'static str) -> FormatError {
        FormatError::Truncated {
            object: self.object.clone(),
            offset: self.offset + (self.buf.len() - self.pos) as u64,
            expected,
        }
    }
}
