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
mod checksum;
mod scan;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use self::checksum::checksum;
pub use self::scan::{
    FrameHeader, FramePages, LogEnd, Scan, read_frame_header, read_transactions, scan_keeping_pages, scan_transactions,
};

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

pub(super) fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

pub(super) fn le32(bytes: &[u8]) -> u32 {
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
