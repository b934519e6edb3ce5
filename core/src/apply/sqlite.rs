//! A live replica brought forward through SQLite (native, `sqlite`
//! feature): the [`PageSink`] of a sync whose file exists already and may
//! be open in other processes ([`SqliteSink`]; a file nobody has created yet
//! is written in place instead, `file.rs`).
//!
//! A sync fetches its chain's objects concurrently (`fetch.rs`: a bounded
//! window; the next L0 key is known as soon as the previous object's
//! 96-byte header has arrived, so downloads overlap while the chain is still
//! being discovered by name), and applies them in order on a blocking
//! thread (`run.rs`):
//!
//! - every object is verified by the shared [`ObjectApplier`](super::ObjectApplier);
//! - pages are written through the `sqlite_dbpage` virtual table inside one
//!   SQLite write transaction on a dedicated connection, each object under a
//!   savepoint, so a bad object is rolled back alone and the objects before
//!   it are committed; other processes reading the file see the old or the
//!   new state, never a mix (WAL mode);
//! - the database size is set to `commit` last, and the post-apply checksum
//!   is computed incrementally (old page hashes come from a second, read-only
//!   connection that sees the last committed state, or from the hashes of
//!   pages written earlier in the same transaction) and must match before
//!   `COMMIT`;
//! - memory holds a page, small objects (larger ones are streamed from the
//!   download, `fetch.rs`) and one hash per page written in the open
//!   transaction, which is committed often enough to bound it.
//!
//! Why an in-memory main database with the replica ATTACHed: statements that
//! only write `sqlite_dbpage` then never re-read the replica's schema, which
//! is inconsistent between the write of page 1 and the rest of an object's
//! pages (SQLite would report the schema as malformed). Page 1 is still
//! written last in each object, so every savepoint boundary is a consistent
//! database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::integrity::open_read_only;
use super::prepare::check_page_size;
use super::run::{CommitSink, base_position};
use super::{ApplyError, PageSink, SyncOptions, Verified};
use crate::checksum::page_hash;
use crate::format::Header;
use crate::ids::{Checksum, PageNo, TxId};
use crate::plan::{Base, Plan, ReplicaPosition};
use crate::replica::{PendingPosition, ReplicaSidecar, STATE_FORMAT_VERSION, SyncFailure, read_state, write_state};

/// Commit the open transaction once it has written this many pages, so the
/// page-hash map (and the WAL) stay bounded.
const MAX_PAGES_PER_COMMIT: usize = 1 << 20;
/// The page cache of each of a sync's two connections, in KiB (why: in
/// `SqliteSink::open`).
const SYNC_CACHE_KIB: u32 = 256;

/// The page SQLite reserves for its file locks (the one holding byte offset
/// `PENDING_BYTE`, 1 GiB unless changed): it holds no data, reads as zeros
/// and cannot be written, so every database over 1 GiB has this hole.
pub(super) fn lock_byte_page(page_size: u32) -> u32 {
    // SAFETY: with a zero argument this test control only reads the value
    // (SQLite changes it only for a nonzero one).
    let pending_byte =
        unsafe { rusqlite::ffi::sqlite3_test_control(rusqlite::ffi::SQLITE_TESTCTRL_PENDING_BYTE, 0u32) };
    (pending_byte as u32) / page_size + 1
}

/// Pages written through `sqlite_dbpage` into the replica, attached to an
/// in-memory connection, inside one write transaction; each object under a
/// savepoint. Keeps the sidecar state beside the file.
pub(super) struct SqliteSink {
    db: PathBuf,
    /// In-memory main database with the replica attached as `replica`.
    conn: Connection,
    /// Read-only connection: pages as last committed.
    reader: Connection,
    page_size: u32,
    /// SQLite's lock-byte page (see [`lock_byte_page`]): never written.
    lock_byte_page: u32,
    keep_state: bool,
    source: String,
    /// The last success and failure the sidecar recorded before this sync
    /// (kept as they are until the sync ends: see [`super::sync_replica`]).
    synced_ms: u64,
    last_failure: Option<SyncFailure>,
    /// Position as last committed.
    committed: ReplicaPosition,
    /// Database size in pages after every object kept.
    size: u32,
    /// Pages the file physically has in the open transaction.
    physical: u32,
    /// `physical` when the open object began, for its rollback.
    physical_before: u32,
    /// Hashes of pages written in the open transaction.
    written: HashMap<u32, u64>,
    in_transaction: bool,
    /// The primary's page 1 at the applied position, once written by this run.
    page_one: Option<Vec<u8>>,
    /// Its hash term at the applied position (from the sidecar, or `page_one`).
    page_one_hash: Option<u64>,
    /// Its hash term at `committed`.
    committed_page_one_hash: Option<u64>,
}

impl SqliteSink {
    pub(super) fn open(db: &Path, plan: &Plan, options: &SyncOptions, source: &str) -> Result<SqliteSink, ApplyError> {
        let conn = Connection::open_in_memory().map_err(ApplyError::sqlite("open", db))?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(ApplyError::sqlite("configure", db))?;
        let db_text = db.to_str().ok_or_else(|| ApplyError::Io {
            op: "open",
            path: db.to_path_buf(),
            source: std::io::Error::other("the path is not valid UTF-8"),
        })?;
        conn.execute("ATTACH DATABASE ?1 AS replica", [db_text]).map_err(ApplyError::sqlite("open", db))?;
        let existing: u32 =
            conn.query_row("PRAGMA replica.page_count", [], |r| r.get(0)).map_err(ApplyError::sqlite("read", db))?;
        if existing == 0 {
            // A new file: give it the store's page size before anything is
            // written (sqlite_dbpage writes whole pages of the file's size).
            conn.execute_batch(&format!("PRAGMA replica.page_size = {};", plan.page_size))
                .map_err(ApplyError::sqlite("create", db))?;
            // Switching an empty file to WAL writes its header in a
            // rollback-journal transaction: killed then, the hot journal
            // left behind makes every read-only open fail
            // (SQLITE_READONLY_ROLLBACK) until a writer rolls it back. An
            // empty file has nothing a journal could restore: write the
            // header without one.
            let _: String = conn
                .query_row("PRAGMA replica.journal_mode = OFF", [], |r| r.get(0))
                .map_err(ApplyError::sqlite("create", db))?;
        }
        let page_size: u32 =
            conn.query_row("PRAGMA replica.page_size", [], |r| r.get(0)).map_err(ApplyError::sqlite("read", db))?;
        // Whatever the base: sqlite_dbpage cannot change a file's page size.
        check_page_size(plan, page_size, &db.display().to_string(), "move the replica away to rebuild it")?;
        // A sync writes each page once and reads each old page once (for
        // its hash), so SQLite's default page cache of 2 MB per connection
        // saves nothing and was a third of the edge reader's peak: 256 KiB on
        // both connections took an incremental sync of a 1 GB replica from
        // 18.6-19.1 MB peak RSS to 12.2-12.7 MB, no slower
        // (docs/BENCHMARKS.md, "A small reader for devices").
        conn.execute_batch(&format!("PRAGMA replica.cache_size = -{SYNC_CACHE_KIB};"))
            .map_err(ApplyError::sqlite("configure", db))?;
        let mode: String = conn
            .query_row("PRAGMA replica.journal_mode = WAL", [], |r| r.get(0))
            .map_err(ApplyError::sqlite("set WAL mode on", db))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %db.display(), mode, "replica is not in WAL mode; readers may block syncs");
        }
        let reader = open_read_only(db)?;
        reader.busy_timeout(std::time::Duration::from_secs(30)).map_err(ApplyError::sqlite("configure", db))?;
        reader
            .execute_batch(&format!("PRAGMA cache_size = -{SYNC_CACHE_KIB};"))
            .map_err(ApplyError::sqlite("configure", db))?;
        let size: u32 =
            reader.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(ApplyError::sqlite("read", db))?;
        let previous = if options.keep_state { read_state(db)? } else { None };
        let page_one_hash = match plan.base {
            Base::Replica(_) => previous.as_ref().and_then(|s| s.page_one_hash).map(|c| c.0),
            _ => None,
        };
        let (synced_ms, last_failure) = previous.map_or((0, None), |s| (s.synced_ms, s.last_failure));
        Ok(SqliteSink {
            db: db.to_path_buf(),
            conn,
            reader,
            page_size,
            lock_byte_page: lock_byte_page(page_size),
            keep_state: options.keep_state,
            source: source.to_string(),
            synced_ms,
            last_failure,
            committed: base_position(plan),
            size,
            physical: size,
            physical_before: size,
            written: HashMap::new(),
            in_transaction: false,
            page_one: None,
            page_one_hash,
            committed_page_one_hash: page_one_hash,
        })
    }

    fn sql(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> ApplyError + use<> {
        ApplyError::sqlite(op, &self.db)
    }

    /// Sets the size, records the pending position, commits, and writes the
    /// sidecar.
    fn commit(&mut self, position: ReplicaPosition) -> Result<(), ApplyError> {
        if !self.in_transaction {
            return Ok(());
        }
        if self.size < self.physical {
            // Must be the transaction's last write to sqlite_dbpage: any
            // later page write cancels a pending truncation.
            self.conn
                .prepare_cached("INSERT INTO sqlite_dbpage(pgno, data, schema) VALUES (?1, NULL, 'replica')")
                .and_then(|mut s| s.execute([self.size + 1]))
                .map_err(self.sql("truncate"))?;
        }
        if self.keep_state {
            let mut state = self.state(self.committed);
            state.page_one_hash = self.committed_page_one_hash.map(Checksum);
            state.pending = Some(PendingPosition {
                txid: position.txid,
                checksum: position.checksum,
                timestamp_ms: position.timestamp_ms,
                page_one_hash: self.page_one_hash.map(Checksum),
            });
            if self.committed.generation != position.generation || self.committed.txid == TxId::ZERO {
                // No trustworthy earlier position: a crash now must bootstrap
                // unless the commit happened.
                state.generation = position.generation;
                state.checksum = Checksum(!position.checksum.0);
            }
            write_state(&self.db, &state)?;
        }
        self.conn.execute_batch("COMMIT").map_err(self.sql("commit to"))?;
        self.in_transaction = false;
        self.written.clear();
        self.physical = self.size;
        self.committed = position;
        self.committed_page_one_hash = self.page_one_hash;
        if self.keep_state {
            write_state(&self.db, &self.state(position))?;
        }
        tracing::debug!(db = %self.db.display(), txid = %position.txid, "committed");
        Ok(())
    }

    fn state(&self, position: ReplicaPosition) -> ReplicaSidecar {
        ReplicaSidecar {
            format_version: STATE_FORMAT_VERSION,
            generation: position.generation,
            page_size: self.page_size,
            txid: position.txid,
            checksum: position.checksum,
            timestamp_ms: position.timestamp_ms,
            synced_ms: self.synced_ms,
            source: self.source.clone(),
            last_failure: self.last_failure.clone(),
            page_one_hash: self.page_one_hash.map(Checksum),
            pending: None,
        }
    }
}

impl CommitSink for SqliteSink {
    fn commit(&mut self, position: ReplicaPosition) -> Result<(), ApplyError> {
        SqliteSink::commit(self, position)
    }

    fn commit_is_full(&self) -> bool {
        self.written.len() >= MAX_PAGES_PER_COMMIT
    }

    fn take_page_one(&mut self) -> Option<Vec<u8>> {
        self.page_one.take()
    }

    fn path(&self) -> &Path {
        &self.db
    }

    fn opened_size(&self) -> u32 {
        self.size
    }
}

impl PageSink for SqliteSink {
    fn page_hash(&mut self, pgno: PageNo) -> Result<u64, ApplyError> {
        if let Some(hash) = self.written.get(&pgno.0) {
            return Ok(*hash);
        }
        if pgno.0 == 1
            && let Some(hash) = self.page_one_hash
        {
            // The file's page 1 carries SQLite's own stamps, not the primary's.
            return Ok(hash);
        }
        let data: Option<Vec<u8>> = self
            .reader
            .prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")
            .and_then(|mut s| s.query_row([pgno.0], |r| r.get(0)).optional())
            .map_err(self.sql("read"))?;
        let data = data.ok_or_else(|| ApplyError::Io {
            op: "read page of",
            path: self.db.clone(),
            source: std::io::Error::other(format!("page {pgno} is missing (the file is shorter than recorded)")),
        })?;
        Ok(page_hash(pgno, &data))
    }

    fn begin_object(&mut self, _key: &str, _header: &Header) -> Result<(), ApplyError> {
        if !self.in_transaction {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.sql("begin a transaction on"))?;
            self.in_transaction = true;
        }
        self.conn.execute_batch("SAVEPOINT segment").map_err(self.sql("open a savepoint on"))?;
        self.physical_before = self.physical;
        Ok(())
    }

    fn write_page(&mut self, pgno: PageNo, page: &[u8]) -> Result<(), ApplyError> {
        self.conn
            .prepare_cached("INSERT INTO sqlite_dbpage(pgno, data, schema) VALUES (?1, ?2, 'replica')")
            .and_then(|mut s| s.execute(params![pgno.0, page]))
            .map_err(self.sql("write page to"))?;
        self.physical = self.physical.max(pgno.0);
        Ok(())
    }

    fn finish_object(&mut self, object: Verified) -> Result<(), ApplyError> {
        self.conn.execute_batch("RELEASE segment").map_err(self.sql("release a savepoint on"))?;
        if let Some(page) = object.page_one {
            self.page_one_hash = Some(page_hash(PageNo(1), &page));
            self.page_one = Some(page);
        }
        self.written.extend(object.written);
        self.size = object.commit;
        Ok(())
    }

    fn rollback_object(&mut self) -> Result<(), ApplyError> {
        self.conn
            .execute_batch("ROLLBACK TO segment; RELEASE segment")
            .map_err(self.sql("roll back a savepoint on"))?;
        self.physical = self.physical_before;
        Ok(())
    }

    fn lock_byte_page(&self) -> u32 {
        self.lock_byte_page
    }
}

impl Drop for SqliteSink {
    fn drop(&mut self) {
        if self.in_transaction {
            // An error path left the transaction open: nothing in it was
            // verified completely.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}
