//! Reading SQLite's write-ahead log: header, frames, salts and the
//! cumulative frame checksums, grouped into committed transactions.
//!
//! WAL layout (sqlite.org/fileformat2.html#walformat): a 32-byte header
//! (magic, version, page size, checkpoint sequence, salt-1, salt-2, checksum
//! of the first 24 bytes), then frames of a 24-byte header (page number,
//! database size in pages for commit frames else 0, salt-1, salt-2, two
//! checksum words) followed by one page. Each frame's checksum continues the
//! previous one's, so a frame is valid only if its salts match the header's
//! and its checksum follows from every frame before it. The log ends at the
//! first invalid frame; frames after the last commit frame belong to a
//! transaction still in progress (or rolled back) and are never shipped.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Size of the WAL header in bytes.
pub const WAL_HEADER_SIZE: u64 = 32;
/// Size of a frame header in bytes.
pub const FRAME_HEADER_SIZE: u64 = 24;
const MAGIC_LITTLE_ENDIAN: u32 = 0x377f_0682;
const MAGIC_BIG_ENDIAN: u32 = 0x377f_0683;
const WAL_VERSION: u32 = 3_007_000;

/// Errors reading the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The file could not be read.
    #[error("read WAL {path}: {source}")]
    Io {
        /// The WAL's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The header is not a SQLite WAL header.
    #[error("read WAL {path}: {reason}")]
    BadHeader {
        /// The WAL's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The parsed WAL header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    /// Checksum words are big-endian (magic 0x377f0683) or little-endian.
    pub big_endian_checksums: bool,
    /// Database page size in bytes.
    pub page_size: u32,
    /// Checkpoint sequence number.
    pub checkpoint_seq: u32,
    /// Salt-1: incremented on every WAL restart.
    pub salt1: u32,
    /// Salt-2: random on every WAL restart.
    pub salt2: u32,
    /// The header's checksum: the seed of the first frame's checksum.
    pub checksum: (u32, u32),
}

/// A position in the WAL: the next frame to read and the checksum chain up
/// to it. Saved in the replicator's state so a restart continues exactly
/// where it stopped, and detects a WAL that was replaced meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalPosition {
    /// Salt-1 of the WAL this position is in.
    pub salt1: u32,
    /// Salt-2 of the WAL this position is in.
    pub salt2: u32,
    /// Index of the next frame (0-based).
    pub frame: u64,
    /// Cumulative checksum after the frame before `frame` (the header's
    /// checksum for frame 0).
    pub checksum: (u32, u32),
}

/// One committed transaction found in the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalTransaction {
    /// For each page written, the file offset of its page data in the
    /// newest frame of this transaction, sorted by page number.
    pub pages: Vec<(u32, u64)>,
    /// Database size in pages after the commit.
    pub commit: u32,
    /// The position after the commit frame.
    pub end: WalPosition,
}

/// The path of a database's WAL.
pub fn wal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Reads the WAL header; `Ok(None)` if the WAL is missing or shorter than a
/// header (no transaction since the last TRUNCATE checkpoint).
pub fn read_header(path: &Path) -> Result<Option<WalHeader>, WalError> {
    let io_err = |source| WalError::Io { path: path.to_path_buf(), source };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let mut bytes = [0u8; WAL_HEADER_SIZE as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read(&mut bytes[filled..]) {
            Ok(0) => return Ok(None),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    parse_header(&bytes).map(Some).map_err(|reason| WalError::BadHeader { path: path.to_path_buf(), reason })
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn parse_header(bytes: &[u8; 32]) -> Result<WalHeader, String> {
    let magic = be32(&bytes[0..4]);
    let big_endian_checksums = match magic {
        MAGIC_BIG_ENDIAN => true,
        MAGIC_LITTLE_ENDIAN => false,
        other => return Err(format!("bad magic {other:#010x}: not a SQLite WAL")),
    };
    let version = be32(&bytes[4..8]);
    if version != WAL_VERSION {
        return Err(format!("unsupported WAL format version {version}"));
    }
    let raw_page_size = be32(&bytes[8..12]);
    let page_size = if raw_page_size == 1 { 65_536 } else { raw_page_size };
    if !page_size.is_power_of_two() || !(512..=65_536).contains(&page_size) {
        return Err(format!("invalid page size {raw_page_size}"));
    }
    let computed = checksum(big_endian_checksums, (0, 0), &bytes[..24]);
    let stored = (be32(&bytes[24..28]), be32(&bytes[28..32]));
    if computed != stored {
        return Err("header checksum mismatch (the WAL is being reset or is corrupt)".into());
    }
    Ok(WalHeader {
        big_endian_checksums,
        page_size,
        checkpoint_seq: be32(&bytes[12..16]),
        salt1: be32(&bytes[16..20]),
        salt2: be32(&bytes[20..24]),
        checksum: stored,
    })
}

/// SQLite's WAL checksum: over 32-bit words in the WAL's byte order,
/// `s0 += x[i] + s1; s1 += x[i+1] + s0`, continuing from `seed`.
///
/// Every frame's page goes through this (a third of the replicator's CPU
/// under a busy app), and one chain of dependent additions leaves most of
/// the processor idle. The step is linear: a pair `(x0, x1)` maps the sums
/// `v` to `M·v + (x0, x0 + x1)` with `M = [[1, 1], [1, 2]]`, so `n` pairs
/// map `v` to `Mⁿ·v + c`, where `c` is their checksum from zero. Long
/// inputs are therefore cut into four equal runs summed side by side from
/// zero, then joined in order by `Mⁿ`.
pub fn checksum(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    const LANES: usize = 4;
    let lane_bytes = data.len() / 8 / LANES * 8;
    if lane_bytes < 64 {
        return checksum_in_order(big_endian, seed, data);
    }
    let (runs, rest) = data.split_at(lane_bytes * LANES);
    // Plain loops over the four runs, not iterator adaptors: the tests run
    // the replicator unoptimised, where adaptors cost ten times as much.
    let run: [&[u8]; LANES] = std::array::from_fn(|lane| &runs[lane * lane_bytes..(lane + 1) * lane_bytes]);
    let mut lanes = [(0u32, 0u32); LANES];
    let mut at = 0;
    while at + 8 <= lane_bytes {
        for lane in 0..LANES {
            let pair = &run[lane][at..at + 8];
            let (x0, x1) = if big_endian {
                (be32(&pair[0..4]), be32(&pair[4..8]))
            } else {
                (le32(&pair[0..4]), le32(&pair[4..8]))
            };
            let sums = &mut lanes[lane];
            sums.0 = sums.0.wrapping_add(x0).wrapping_add(sums.1);
            sums.1 = sums.1.wrapping_add(x1).wrapping_add(sums.0);
        }
        at += 8;
    }
    let jump = Jump::over(lane_bytes as u64 / 8);
    let sums = lanes.into_iter().fold(seed, |sums, lane| jump.apply(sums, lane));
    checksum_in_order(big_endian, sums, rest)
}

/// [`checksum`] one pair after the other.
fn checksum_in_order(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    for pair in data.chunks_exact(8) {
        let (x0, x1) =
            if big_endian { (be32(&pair[0..4]), be32(&pair[4..8])) } else { (le32(&pair[0..4]), le32(&pair[4..8])) };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

/// `Mⁿ` of [`checksum`]: what `n` pairs do to the sums they start from.
struct Jump([[u32; 2]; 2]);

impl Jump {
    fn over(mut n: u64) -> Jump {
        let mul = |a: [[u32; 2]; 2], b: [[u32; 2]; 2]| {
            let cell = |i: usize, j: usize| a[i][0].wrapping_mul(b[0][j]).wrapping_add(a[i][1].wrapping_mul(b[1][j]));
            [[cell(0, 0), cell(0, 1)], [cell(1, 0), cell(1, 1)]]
        };
        let (mut power, mut result) = ([[1, 1], [1, 2]], [[1, 0], [0, 1]]);
        while n > 0 {
            if n & 1 == 1 {
                result = mul(result, power);
            }
            power = mul(power, power);
            n >>= 1;
        }
        Jump(result)
    }

    /// The sums after the pairs, given the sums before them and the
    /// pairs' checksum from zero.
    fn apply(&self, (s0, s1): (u32, u32), (c0, c1): (u32, u32)) -> (u32, u32) {
        let [[a, b], [c, d]] = self.0;
        (
            a.wrapping_mul(s0).wrapping_add(b.wrapping_mul(s1)).wrapping_add(c0),
            c.wrapping_mul(s0).wrapping_add(d.wrapping_mul(s1)).wrapping_add(c1),
        )
    }
}

impl WalHeader {
    /// The position of the first frame of this WAL.
    pub fn start(&self) -> WalPosition {
        WalPosition { salt1: self.salt1, salt2: self.salt2, frame: 0, checksum: self.checksum }
    }

    /// File offset of frame `index`'s header.
    pub fn frame_offset(&self, index: u64) -> u64 {
        WAL_HEADER_SIZE + index * (FRAME_HEADER_SIZE + u64::from(self.page_size))
    }
}

/// Reads the committed transactions after `from` (which must belong to this
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

/// The size of the WAL index's header, at the start of its first region
/// (the `-shm` file): two copies of it (a reader trusts them only when they
/// agree).
pub const INDEX_HEADER_SIZE: usize = 48;

/// The number of committed frames in the WAL, from the two copies of the
/// WAL index header (`header`, the index's first `2 * INDEX_HEADER_SIZE`
/// bytes). `None` while a writer is changing the header (its two copies
/// differ) or before it is initialised: ask later.
pub fn index_header_frames(header: &[u8; 2 * INDEX_HEADER_SIZE]) -> Option<u32> {
    let (first, second) = header.split_at(INDEX_HEADER_SIZE);
    // The header is in the machine's byte order; byte 12 is "initialised".
    if first != second || first[12] == 0 {
        return None;
    }
    Some(u32::from_ne_bytes([first[16], first[17], first[18], first[19]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_in_four_runs_equals_the_checksum_in_order() {
        let mut random = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        let data: Vec<u8> = (0..70_000).map(|_| next() as u8).collect();
        for len in [0, 8, 24, 256, 504, 512, 520, 1024, 4096, 4100, 8192, 65_536, 65_543, 70_000] {
            for big_endian in [false, true] {
                let seed = (next() as u32, next() as u32);
                assert_eq!(
                    checksum(big_endian, seed, &data[..len]),
                    checksum_in_order(big_endian, seed, &data[..len]),
                    "{len} bytes, big-endian {big_endian}"
                );
            }
        }
    }

    fn wal_database(dir: &Path) -> (rusqlite::Connection, PathBuf) {
        let path = dir.join("t.db");
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        connection.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);").unwrap();
        (connection, path)
    }

    #[test]
    fn reads_committed_transactions_and_stops_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (connection, db) = wal_database(dir.path());
        for i in 0..5 {
            connection.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let wal = wal_path(&db);
        let header = read_header(&wal).unwrap().unwrap();
        assert_eq!(header.page_size, 4096);
        let transactions = read_transactions(&wal, &header, header.start(), u64::MAX).unwrap();
        // CREATE TABLE plus five inserts.
        assert_eq!(transactions.len(), 6);
        let last = transactions.last().unwrap();
        // Continuing from the end finds nothing new; one more insert is one more.
        assert!(read_transactions(&wal, &header, last.end, u64::MAX).unwrap().is_empty());
        connection.execute("INSERT INTO t VALUES (99)", []).unwrap();
        let more = read_transactions(&wal, &header, last.end, u64::MAX).unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].commit, last.commit);
    }

    #[test]
    fn a_scan_says_whether_it_stopped_at_its_limit_or_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (connection, db) = wal_database(dir.path());
        for i in 0..3 {
            connection.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let wal = wal_path(&db);
        let header = read_header(&wal).unwrap().unwrap();
        let all = scan_transactions(&wal, &header, header.start(), u64::MAX).unwrap();
        assert!(!all.at_limit, "a scan without a limit ends at the end");
        let frames = all.transactions.last().unwrap().end.frame;
        let short = scan_transactions(&wal, &header, header.start(), frames - 1).unwrap();
        assert!(short.at_limit, "a scan one frame short stops at its limit");
        assert!(short.transactions.len() < all.transactions.len());
        // Exactly as many frames as there are: the scan cannot tell, and
        // says it may have stopped early (the safe answer for a sync point).
        let exact = scan_transactions(&wal, &header, header.start(), frames).unwrap();
        assert_eq!(exact.transactions.len(), all.transactions.len());
        assert!(exact.at_limit);
    }

    #[test]
    fn a_corrupt_frame_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (connection, db) = wal_database(dir.path());
        connection.execute("INSERT INTO t VALUES (1)", []).unwrap();
        connection.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let wal = wal_path(&db);
        let header = read_header(&wal).unwrap().unwrap();
        let all = read_transactions(&wal, &header, header.start(), u64::MAX).unwrap();
        // Flip a byte in the last frame's page.
        let mut bytes = std::fs::read(&wal).unwrap();
        let last_frame = all.last().unwrap().end.frame - 1;
        let at = (header.frame_offset(last_frame) + FRAME_HEADER_SIZE + 100) as usize;
        bytes[at] ^= 0xff;
        std::fs::write(&wal, &bytes).unwrap();
        let read = read_transactions(&wal, &header, header.start(), u64::MAX).unwrap();
        assert_eq!(read.len(), all.len() - 1);
    }
}
