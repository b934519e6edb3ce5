//! Scanning the log: frame headers, committed transactions after a
//! position, and the pages a scan may keep so the capture does not read
//! them again.

use std::fs::File;
use std::io::{self};
use std::path::Path;

use super::checksum::checksum;
use super::{FRAME_HEADER_SIZE, WalError, WalHeader, WalPosition, WalTransaction, be32};

/// WAL: same salts), stopping at the first invalid frame or after
/// `max_frames` frames. Frames after the last commit frame are left for a
/// later call. Memory holds one page and the page-offset lists.
pub fn read_transactions(
    path: &Path,
    header: &WalHeader,
    from: WalPosition,
    max_frames: u64,
) -> Result<Vec<WalTransaction>, WalError> {
    Ok(scan_transactions(path, header, from, max_frames)?.transactions)
}

/// What a frame's header says of the WAL that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The salts of the WAL that wrote the frame.
    pub salts: (u32, u32),
    /// The cumulative checksum after the frame.
    pub checksum: (u32, u32),
}

impl FrameHeader {
    /// The salts and checksum words of a frame header's 24 bytes.
    fn parse(bytes: &[u8]) -> FrameHeader {
        FrameHeader {
            salts: (be32(&bytes[8..12]), be32(&bytes[12..16])),
            checksum: (be32(&bytes[16..20]), be32(&bytes[20..24])),
        }
    }
}

/// Reads frame `index`'s header, unchecked; `None` past the end of the
/// file. SQLite writes a frame's header before its page, and frames in
/// order, so a frame that still carries an older WAL's salts has not been
/// reached by the WAL being written now.
pub fn read_frame_header(path: &Path, header: &WalHeader, index: u64) -> Result<Option<FrameHeader>, WalError> {
    use std::os::unix::fs::FileExt;
    let io_err = |source| WalError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_err)?;
    let mut bytes = [0u8; FRAME_HEADER_SIZE as usize];
    match file.read_exact_at(&mut bytes, header.frame_offset(index)) {
        Ok(()) => Ok(Some(FrameHeader::parse(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// What [`scan_transactions`] found.
pub struct Scan {
    /// The committed transactions, in order.
    pub transactions: Vec<WalTransaction>,
    /// Whether the scan stopped at `max_frames` (more frames may follow)
    /// rather than at the WAL's end.
    pub at_limit: bool,
    /// Where the scan stopped, when it stopped at the WAL's end.
    pub end: Option<LogEnd>,
    /// The frame index the scan stopped at (the first frame not read).
    pub stopped_at: u64,
    /// The file's length when the scan began.
    pub file_len: u64,
}

impl Scan {
    /// Whether the scan stopped at the end of the file exactly where a
    /// frame would begin. SQLite writes whole frames, so a log that ends
    /// with the file ends on a frame's boundary; a file cut elsewhere was
    /// truncated under the log (`journal_size_limit`) or is being written.
    pub fn ended_on_file_boundary(&self, header: &WalHeader) -> bool {
        self.end == Some(LogEnd::EndOfFile) && self.file_len == header.frame_offset(self.stopped_at)
    }
}

/// What ends a WAL's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEnd {
    /// The end of the file.
    EndOfFile,
    /// A frame with other salts (a leftover of an earlier WAL cycle, or the
    /// first frame of a later one that has reached this far), or page 0.
    Salts(u32, u32),
    /// A frame whose checksum does not follow (torn, or rolled back).
    Checksum,
}

/// [`read_transactions`], also telling whether the scan reached the end.
pub fn scan_transactions(
    path: &Path,
    header: &WalHeader,
    from: WalPosition,
    max_frames: u64,
) -> Result<Scan, WalError> {
    scan(path, header, from, max_frames, None)
}

/// [`scan_transactions`] that also keeps the page bytes of the committed
/// frames it validated, newest frame per page, up to `budget` bytes (see
/// [`FramePages`]).
pub fn scan_keeping_pages(
    path: &Path,
    header: &WalHeader,
    from: WalPosition,
    max_frames: u64,
    budget: u64,
) -> Result<(Scan, FramePages), WalError> {
    let mut pages = FramePages::with_budget(budget);
    let scan = scan(path, header, from, max_frames, Some(&mut pages))?;
    Ok((scan, pages))
}

/// The page bytes of committed frames read by a scan, the newest frame of
/// each page, kept so that a capture writes them from the very buffer their
/// checksums were verified on instead of reading the WAL again. Only
/// `budget` bytes of pages are kept: a page past it (a long backlog, a huge
/// transaction) is read again by its frame's offset.
#[derive(Default)]
pub struct FramePages {
    /// Page number to (offset of the frame's page data, bytes).
    newest: std::collections::HashMap<u32, (u64, Vec<u8>)>,
    /// Page buffers of replaced frames, reused for the next ones.
    spare: Vec<Vec<u8>>,
    budget: u64,
    kept: u64,
}

impl FramePages {
    /// Keeps nothing.
    pub fn none() -> FramePages {
        FramePages::default()
    }

    fn with_budget(budget: u64) -> FramePages {
        FramePages { budget, ..FramePages::default() }
    }

    /// The bytes of `pgno` if the frame whose page data is at `offset` is
    /// the one kept for it.
    pub fn get(&self, pgno: u32, offset: u64) -> Option<&[u8]> {
        match self.newest.get(&pgno) {
            Some((kept_offset, bytes)) if *kept_offset == offset => Some(bytes),
            _ => None,
        }
    }

    /// Whether a page of `len` bytes not kept yet fits in the budget.
    fn fits(&self, pgno: u32, len: u64, staged: u64) -> bool {
        self.newest.contains_key(&pgno) || self.kept + staged + len <= self.budget
    }

    /// A copy of `page` in a reused buffer when there is one.
    fn copy_of(&mut self, page: &[u8]) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut buffer) => {
                buffer.clear();
                buffer.extend_from_slice(page);
                buffer
            }
            None => page.to_vec(),
        }
    }

    /// Keeps a committed frame's page, replacing an older frame's.
    fn keep(&mut self, pgno: u32, offset: u64, page: Vec<u8>) {
        let len = page.len() as u64;
        match self.newest.insert(pgno, (offset, page)) {
            Some((_, replaced)) => self.spare.push(replaced),
            None => self.kept += len,
        }
    }
}

/// Bytes read from the WAL per `pread` while scanning (whole frames).
const SCAN_READ_BYTES: u64 = 256 * 1024;

fn scan(
    path: &Path,
    header: &WalHeader,
    from: WalPosition,
    max_frames: u64,
    mut keep: Option<&mut FramePages>,
) -> Result<Scan, WalError> {
    use std::os::unix::fs::FileExt;
    let io_err = |source| WalError::Io { path: path.to_path_buf(), source };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Scan {
                transactions: Vec::new(),
                at_limit: false,
                end: Some(LogEnd::EndOfFile),
                stopped_at: from.frame,
                file_len: 0,
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    let file_len = file.metadata().map_err(io_err)?.len();
    let page_size = u64::from(header.page_size);
    let frame_size = FRAME_HEADER_SIZE + page_size;
    // Frames are contiguous: whole frames are read in large preads, and
    // each frame's checksum and page bytes come from that one buffer.
    let frames_per_read = (SCAN_READ_BYTES / frame_size).max(1);
    let mut buffer = Vec::new();
    let mut transactions = Vec::new();
    let mut pending: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    // Frames of the transaction not committed yet, kept once it is.
    let mut uncommitted: Vec<(u32, u64, Vec<u8>)> = Vec::new();
    let mut uncommitted_bytes = 0;
    let mut position = from;
    let mut index = from.frame;
    let end_index = from.frame.saturating_add(max_frames);
    let mut end = None;
    'reads: while index < end_index {
        let offset = header.frame_offset(index);
        let whole_frames = file_len.saturating_sub(offset) / frame_size;
        let count = frames_per_read.min(end_index - index).min(whole_frames);
        if count == 0 {
            end = Some(LogEnd::EndOfFile);
            break;
        }
        buffer.resize((count * frame_size) as usize, 0);
        // A file cut short meanwhile ends the log where it was cut (a
        // previous WAL's tail can be truncated while it is read).
        match file.read_exact_at(&mut buffer, offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                end = Some(LogEnd::EndOfFile);
                break;
            }
            Err(e) => return Err(io_err(e)),
        }
        for frame in buffer.chunks_exact(frame_size as usize) {
            let (frame_header, page) = frame.split_at(FRAME_HEADER_SIZE as usize);
            let pgno = be32(&frame_header[0..4]);
            let commit = be32(&frame_header[4..8]);
            let FrameHeader { salts, checksum: stored } = FrameHeader::parse(frame_header);
            if salts != (header.salt1, header.salt2) || pgno == 0 {
                end = Some(LogEnd::Salts(salts.0, salts.1));
                break 'reads; // a leftover frame of an earlier WAL cycle: the log ends here
            }
            let sum = checksum(header.big_endian_checksums, position.checksum, &frame_header[..8]);
            let sum = checksum(header.big_endian_checksums, sum, page);
            if sum != stored {
                end = Some(LogEnd::Checksum);
                break 'reads; // torn or stale frame
            }
            position.checksum = sum;
            let page_offset = header.frame_offset(index) + FRAME_HEADER_SIZE;
            index += 1;
            pending.insert(pgno, page_offset);
            if let Some(keep) = keep.as_deref_mut()
                && keep.fits(pgno, page_size, uncommitted_bytes)
            {
                uncommitted.push((pgno, page_offset, keep.copy_of(page)));
                uncommitted_bytes += page_size;
            }
            if commit != 0 {
                position.frame = index;
                if let Some(keep) = keep.as_deref_mut() {
                    for (pgno, offset, page) in uncommitted.drain(..) {
                        keep.keep(pgno, offset, page);
                    }
                    uncommitted_bytes = 0;
                }
                transactions.push(WalTransaction {
                    pages: std::mem::take(&mut pending).into_iter().collect(),
                    commit,
                    end: position,
                });
            }
        }
    }
    if let Some(keep) = keep {
        // Frames after the last commit are not kept; their buffers are.
        keep.spare.extend(uncommitted.into_iter().map(|(_, _, page)| page));
    }
    Ok(Scan { transactions, at_limit: end.is_none(), end, stopped_at: index, file_len })
}
