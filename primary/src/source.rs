//! The replicator's connections to the application's database.
//!
//! - `reader` holds a read transaction almost all the time, so no
//!   checkpoint can discard WAL frames the replicator has not captured: with
//!   a read mark in the WAL, SQLite cannot restart the WAL; with read mark 0
//!   (started on a fully checkpointed WAL), it cannot backfill at all, so
//!   the WAL can restart at most once. It lets go only for a checkpoint
//!   window (see `Capturer::checkpoint_window`), never while the app waits.
//! - `checkpointer` runs the replicator's own checkpoints (PASSIVE, or
//!   TRUNCATE past the size limit on a quiet tick; never RESTART), watches
//!   `PRAGMA data_version`, and takes the write lock (`BEGIN IMMEDIATE`)
//!   only where nothing else can tell what was committed: at the start,
//!   when stores resuming and stores beginning must see the same moment.
//!   The app's writers wait on their busy timeout (or fail, without one)
//!   meanwhile. (One connection for all three: each connection is two
//!   descriptors, and a process may replicate a thousand databases.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, ErrorCode, OpenFlags};

/// How long the replicator waits for the write lock at a sync point before
/// trying again on a later tick.
const LOCK_TIMEOUT: Duration = Duration::from_millis(2_000);

/// How often the replicator retries the write lock while the app holds it.
/// SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms between tries, and an
/// app that commits back to back frees the lock for only microseconds
/// between transactions: such a handler can wait seconds for a gap while the
/// WAL grows. Polling this often finds one within a few transactions.
const LOCK_POLL: Duration = Duration::from_micros(100);

/// The connections to one database.
pub struct Source {
    db_path: PathBuf,
    reader: Connection,
    checkpointer: Connection,
    reading: bool,
    /// When the write lock was taken, while it is held (for the hold-time
    /// metric: the app's writers wait, or fail, for that long).
    locked_at: std::cell::Cell<Option<Instant>>,
    /// The database file, for reading pages the WAL does not hold. Opened
    /// once and kept: POSIX drops *every* lock a process holds on a file
    /// when it closes *any* descriptor of it, so opening and closing the
    /// file beside the connections would silently release their locks, and
    /// the app's last connection to close would then checkpoint and delete
    /// the WAL under the replicator. Declared last: dropped after them.
    db_file: std::fs::File,
    /// `db_file`'s device and inode, to tell whether the path still names it.
    db_identity: (u64, u64),
    /// Where the held read transaction's snapshot ends in the WAL.
    snapshot_end: Option<crate::wal::WalPosition>,
}

/// A file's device and inode.
fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

/// What the database's path names now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileAtPath {
    /// The file the connections have open.
    Ours,
    /// Another file (the database was replaced).
    Another,
    /// Nothing (deleted, maybe about to be created again).
    None,
}

/// The result of `PRAGMA wal_checkpoint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointResult {
    /// Whether the checkpoint could not complete (readers or writers in the way).
    pub busy: bool,
    /// Frames in the WAL.
    pub log_frames: i64,
    /// Frames copied into the database.
    pub checkpointed_frames: i64,
}

/// Checkpoint modes the replicator uses (never RESTART: it would wait for
/// and block the app's readers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    /// Copy what can be copied without waiting for anyone.
    Passive,
    /// Copy everything and truncate the WAL to zero bytes.
    Truncate,
}

fn open(db_path: &Path) -> Result<Connection> {
    let connection = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("open database {}", db_path.display()))?;
    connection.busy_timeout(LOCK_TIMEOUT)?;
    // When the replicator is the last connection to close, SQLite would
    // checkpoint and delete the WAL, and the next start could not tell that
    // nothing was lost: it would have to rescan every page.
    connection.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    // The app decides when it checkpoints; the replicator's connections
    // never checkpoint on commit (they do not commit anyway).
    connection.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
    // Pages are read once each (a scan through `sqlite_dbpage`, the schema
    // at a read transaction's start): SQLite's default 2 MB cache per
    // connection would only hold the last scan's pages, three times over.
    connection.execute_batch("PRAGMA cache_size=-64;")?;
    Ok(connection)
}

/// The WAL index header (both copies) as `connection`'s own mapping of
/// the index holds it, or `None` when the connection has not mapped it yet.
///
/// Read through SQLite's VFS (the database's `sqlite3_file` and its
/// `xShmMap`, which hands back the region the connection already maps):
/// a descriptor of our own on the `-shm` file would cost one more per
/// database, and could never be closed (closing any descriptor of a file
/// drops every POSIX lock the process holds on it: the read mark).
fn index_header(connection: &Connection) -> Option<[u8; 2 * crate::wal::INDEX_HEADER_SIZE]> {
    use rusqlite::ffi;
    // SAFETY: the handle is valid for the connection's life, and the
    // connection is used by this thread only (it is not `Sync`): SQLite
    // runs nothing on it while this reads. FILE_POINTER stores the main
    // database's `sqlite3_file` into `file`; `xShmMap` with bExtend = 0
    // returns the first region of the index as this connection maps it
    // (or null), valid until the connection closes. The header may be
    // changing under a writer in another process: it is copied with a
    // volatile read, and a torn copy is told apart by its two copies
    // differing.
    unsafe {
        let db = connection.handle();
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        let rc = ffi::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast::<std::ffi::c_void>(),
        );
        if rc != ffi::SQLITE_OK || file.is_null() || (*file).pMethods.is_null() {
            return None;
        }
        let methods = &*(*file).pMethods;
        let shm_map = if methods.iVersion >= 2 { methods.xShmMap? } else { return None };
        let mut region: *mut std::ffi::c_void = std::ptr::null_mut();
        let rc = shm_map(file, 0, 32 * 1024, 0, &raw mut region);
        if rc != ffi::SQLITE_OK || region.is_null() {
            return None;
        }
        Some(std::ptr::read_volatile(region.cast::<[u8; 2 * crate::wal::INDEX_HEADER_SIZE]>()))
    }
}

impl Source {
    /// Opens the database, refusing one that is missing or not in WAL mode.
    pub fn open(db_path: &Path) -> Result<Source> {
        if !db_path.exists() {
            bail!("database {} does not exist (start the app first, or pass --exec to start it)", db_path.display());
        }
        let reader = open(db_path)?;
        let mode: String = reader
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .with_context(|| format!("read the journal mode of {}", db_path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!(
                "database {} is in {mode:?} journal mode, not WAL: run `PRAGMA journal_mode=WAL;` on it once \
                 (the setting persists), then start the replicator again",
                db_path.display()
            );
        }
        let db_file = std::fs::File::open(db_path).with_context(|| format!("open {}", db_path.display()))?;
        let db_identity = identity(&db_file.metadata().with_context(|| format!("stat {}", db_path.display()))?);
        Ok(Source {
            snapshot_end: None,
            locked_at: std::cell::Cell::new(None),
            db_path: db_path.to_path_buf(),
            reader,
            checkpointer: open(db_path)?,
            reading: false,
            db_identity,
            db_file,
        })
    }

    /// The database's path.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The database file, open for as long as the connections (never open
    /// another descriptor of it: see the field's comment).
    pub fn db_file(&self) -> &std::fs::File {
        &self.db_file
    }

    /// The number of committed frames in the WAL as the WAL index says,
    /// without reading the WAL; `None` when the index cannot tell now.
    pub fn wal_frames(&self) -> Result<Option<u32>> {
        Ok(index_header(&self.checkpointer).as_ref().and_then(crate::wal::index_header_frames))
    }

    /// Whether the file at the database's path is no longer the one these
    /// connections have open: the app deleted (or renamed over) it and
    /// created another. A path with no file yet is not "replaced" (an app
    /// that deletes and recreates it is between the two steps).
    pub fn replaced(&self) -> Result<bool> {
        Ok(self.file_at_path()? == FileAtPath::Another)
    }

    /// Whether the database's path still names the file these connections
    /// have open. A WAL read by path belongs to the file at the path, so a
    /// capture that finds the path moved (mid-replacement) drops what it read.
    pub fn path_moved(&self) -> Result<bool> {
        Ok(self.file_at_path()? != FileAtPath::Ours)
    }

    fn file_at_path(&self) -> Result<FileAtPath> {
        match std::fs::metadata(&self.db_path) {
            Ok(now) if identity(&now) == self.db_identity => Ok(FileAtPath::Ours),
            Ok(_) => Ok(FileAtPath::Another),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileAtPath::None),
            Err(e) => Err(e).with_context(|| format!("stat {}", self.db_path.display())),
        }
    }

    /// Starts holding a read transaction (a no-op if already held).
    pub fn begin_read(&mut self) -> Result<()> {
        if self.reading {
            return Ok(());
        }
        self.reader.execute_batch("BEGIN")?;
        // A read transaction takes its snapshot at its first read.
        self.reader.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        self.reading = true;
        self.snapshot_end = self.snapshot_wal_end()?;
        Ok(())
    }

    /// Where the held read transaction's snapshot ends in the WAL (`None`
    /// without one, or for a snapshot of an empty WAL).
    pub fn held_snapshot_end(&self) -> Option<crate::wal::WalPosition> {
        if self.reading { self.snapshot_end } else { None }
    }

    /// Ends the read transaction.
    pub fn end_read(&mut self) -> Result<()> {
        if self.reading {
            self.reader.execute_batch("COMMIT")?;
            self.reading = false;
        }
        Ok(())
    }

    /// Takes the database's write lock; `Ok(false)` if the app held it for
    /// longer than the lock timeout (try again later).
    pub fn lock_writes(&mut self) -> Result<bool> {
        // SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms between
        // tries; this one polls (see LOCK_POLL), for up to LOCK_TIMEOUT.
        let mut waiting_since = Instant::now();
        self.checkpointer.busy_handler(Some(move |attempt: i32| {
            if attempt == 0 {
                waiting_since = Instant::now();
            }
            if waiting_since.elapsed() >= LOCK_TIMEOUT {
                return false;
            }
            std::thread::sleep(LOCK_POLL);
            true
        }))?;
        let locked = self.checkpointer.execute_batch("BEGIN IMMEDIATE");
        self.checkpointer.busy_timeout(LOCK_TIMEOUT)?;
        match locked {
            Ok(()) => {
                self.locked_at.set(Some(Instant::now()));
                Ok(true)
            }
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::DatabaseBusy => Ok(false),
            Err(e) => Err(e).context("take the write lock"),
        }
    }

    /// Releases the write lock; returns how long it was held.
    pub fn unlock_writes(&self) -> Result<Option<Duration>> {
        if !self.checkpointer.is_autocommit() {
            self.checkpointer.execute_batch("ROLLBACK")?;
        }
        Ok(self.locked_at.take().map(|at| at.elapsed()))
    }

    /// Runs a checkpoint from the replicator's own connection.
    pub fn checkpoint(&self, mode: CheckpointMode) -> Result<CheckpointResult> {
        let sql = match mode {
            CheckpointMode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            CheckpointMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        // TRUNCATE holds the app's write lock from start to end: with a busy
        // timeout it would keep holding it while waiting for the app's
        // readers to finish (and the app's writers would wait, or fail, all
        // that time). Without one it gives up at once and is tried again.
        let wait = if mode == CheckpointMode::Truncate { Duration::ZERO } else { LOCK_TIMEOUT };
        self.checkpointer.busy_timeout(wait)?;
        let result = self
            .checkpointer
            .query_row(sql, [], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?)))
            .with_context(|| format!("checkpoint {}", self.db_path.display()));
        self.checkpointer.busy_timeout(LOCK_TIMEOUT)?;
        let (busy, log_frames, checkpointed_frames) = result?;
        Ok(CheckpointResult { busy: busy != 0, log_frames, checkpointed_frames })
    }

    /// `PRAGMA data_version` on the checkpointer's connection: changes when
    /// another connection commits.
    pub fn data_version(&self) -> Result<i64> {
        // Cached: this runs on every short tick of every database.
        let mut statement = self.checkpointer.prepare_cached("PRAGMA data_version")?;
        Ok(statement.query_row([], |row| row.get(0))?)
    }

    /// Where in the WAL the read transaction's snapshot ends: the WAL's
    /// salts, its committed frame count and the checksum chain after the
    /// last of them, from `sqlite3_snapshot_get`. Its opaque bytes are a copy
    /// of the WAL index header the snapshot was taken from (sqlite.org's
    /// wal.c, `WalIndexHdr`): frame count at 16 and checksum at 24 in the
    /// machine's byte order, salts at 32 as the WAL file stores them. `None`
    /// for a snapshot of an empty WAL (frame 0 of a WAL whose header may not
    /// be written yet). Needs SQLite built with SQLITE_ENABLE_SNAPSHOT.
    pub fn snapshot_wal_end(&self) -> Result<Option<crate::wal::WalPosition>> {
        if !self.reading {
            bail!("snapshot_wal_end needs the read transaction");
        }
        let mut snapshot: *mut rusqlite::ffi::sqlite3_snapshot = std::ptr::null_mut();
        // SAFETY: the handle is the reader's, used on this thread only; the
        // snapshot is copied out and freed before returning.
        let bytes = unsafe {
            let rc = rusqlite::ffi::sqlite3_snapshot_get(self.reader.handle(), c"main".as_ptr(), &mut snapshot);
            // SQLITE_ERROR with a read transaction held in WAL mode: the
            // snapshot is of a WAL no frame was written to since it was
            // reset (its header has no frame checksum yet).
            if rc == rusqlite::ffi::SQLITE_ERROR {
                return Ok(None);
            }
            if rc != rusqlite::ffi::SQLITE_OK {
                bail!(
                    "read the snapshot of {} (SQLite error {rc}; is SQLite built with SQLITE_ENABLE_SNAPSHOT?)",
                    self.db_path.display()
                );
            }
            let bytes = (*snapshot).hidden;
            rusqlite::ffi::sqlite3_snapshot_free(snapshot);
            bytes
        };
        let native = |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let stored = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let frames = native(16);
        if frames == 0 {
            return Ok(None);
        }
        Ok(Some(crate::wal::WalPosition {
            salt1: stored(32),
            salt2: stored(36),
            frame: u64::from(frames),
            checksum: (native(24), native(28)),
        }))
    }

    /// The page size and page count as the read transaction sees them.
    pub fn page_geometry(&self) -> Result<(u32, u32)> {
        let page_size: u32 = self.reader.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let page_count: u32 = self.reader.query_row("PRAGMA page_count", [], |row| row.get(0))?;
        Ok((page_size, page_count))
    }

    /// Calls `visit(pgno, page)` for every page, in order, as the read
    /// transaction sees the database (through `sqlite_dbpage`, so the pages
    /// are consistent with each other and include the WAL's frames).
    pub fn for_each_page(&self, mut visit: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<u32> {
        if !self.reading {
            bail!("for_each_page needs the read transaction");
        }
        let mut statement = self
            .reader
            .prepare("SELECT pgno, data FROM sqlite_dbpage('main') ORDER BY pgno")
            .context("query sqlite_dbpage (is SQLite built with SQLITE_ENABLE_DBPAGE_VTAB?)")?;
        let mut rows = statement.query([])?;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            let pgno: u32 = row.get(0)?;
            let data = row.get_ref(1)?.as_blob()?;
            count += 1;
            if pgno != count {
                bail!("sqlite_dbpage returned page {pgno} where page {count} was expected");
            }
            visit(pgno, data)?;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_says_which_wal_frame_the_read_transaction_ends_at() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let app = Connection::open(&db).unwrap();
        app.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        app.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);").unwrap();
        let mut source = Source::open(&db).unwrap();
        let wal = crate::wal::wal_path(&db);
        let end_now = || {
            let header = crate::wal::read_header(&wal).unwrap().unwrap();
            crate::wal::read_transactions(&wal, &header, header.start(), u64::MAX).unwrap().last().unwrap().end
        };
        for i in 0..3 {
            app.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        source.begin_read().unwrap();
        let seen = end_now();
        // Commits after the snapshot do not move it.
        app.execute("INSERT INTO t VALUES (99)", []).unwrap();
        assert_eq!(source.snapshot_wal_end().unwrap(), Some(seen));
        assert_ne!(end_now(), seen);
        source.end_read().unwrap();
        source.begin_read().unwrap();
        assert_eq!(source.snapshot_wal_end().unwrap(), Some(end_now()));
        assert_eq!(source.wal_frames().unwrap(), Some(end_now().frame as u32));
        // A fully checkpointed, reset WAL: the snapshot is of an empty WAL.
        source.end_read().unwrap();
        source.checkpoint(CheckpointMode::Truncate).unwrap();
        source.begin_read().unwrap();
        assert_eq!(source.snapshot_wal_end().unwrap(), None);
    }
}
