//! Checking a SQLite file as SQLite sees it (native, `sqlite` feature): its
//! rolling checksum read page by page ([`database_checksum`]), the same as
//! compared with the primary's ([`replica_checksum`]), and SQLite's own
//! integrity check ([`integrity_check`]).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::ApplyError;
use crate::checksum::page_hash;
use crate::ids::{Checksum, PageNo};
use crate::replica::read_state;

/// A read-only connection to `db` (no mutex: each connection is used by
/// one thread).
pub(super) fn open_read_only(db: &Path) -> Result<Connection, ApplyError> {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(ApplyError::sqlite("open", db))
}

/// The rolling checksum and page count of a SQLite database as SQLite sees
/// it (WAL included), read page by page in one read transaction.
pub fn database_checksum(db: &Path) -> Result<(Checksum, u32), ApplyError> {
    let conn = open_read_only(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(ApplyError::sqlite("configure", db))?;
    let mut statement =
        conn.prepare("SELECT pgno, data FROM sqlite_dbpage ORDER BY pgno").map_err(ApplyError::sqlite("read", db))?;
    let mut rows = statement.query([]).map_err(ApplyError::sqlite("read", db))?;
    let mut checksum = Checksum::EMPTY;
    let mut pages = 0u32;
    while let Some(row) = rows.next().map_err(ApplyError::sqlite("read", db))? {
        let pgno: u32 = row.get(0).map_err(ApplyError::sqlite("read", db))?;
        let data = row.get_ref(1).map_err(ApplyError::sqlite("read", db))?;
        let bytes = data.as_blob().map_err(|e| ApplyError::sqlite("read", db)(e.into()))?;
        checksum = checksum.toggle_page(PageNo(pgno), bytes);
        pages = pages.max(pgno);
    }
    Ok((checksum, pages))
}

/// The hash term of page 1 of the file as SQLite sees it, if it has one.
pub(super) fn file_page_one_hash(db: &Path) -> Result<Option<u64>, ApplyError> {
    let conn = open_read_only(db)?;
    let page: Option<Vec<u8>> = conn
        .query_row("SELECT data FROM sqlite_dbpage WHERE pgno = 1", [], |r| r.get(0))
        .optional()
        .map_err(ApplyError::sqlite("read", db))?;
    Ok(page.map(|page| page_hash(PageNo(1), &page)))
}

/// A file's checksum `file_checksum` as compared with the primary's: with
/// the primary's page 1 (hash term `logical`) in place of the file's own
/// (`file_page_one`), whose change counter and version stamps SQLite
/// rewrites on every commit of page 1. Unchanged when either is unknown.
pub(super) fn as_replica(file_checksum: Checksum, file_page_one: Option<u64>, logical: Option<Checksum>) -> Checksum {
    match (logical, file_page_one) {
        (Some(logical), Some(file)) => Checksum(file_checksum.0 ^ file ^ logical.0),
        _ => file_checksum,
    }
}

/// A replica's rolling checksum as compared with the primary's: the file's,
/// with the primary's page 1 recorded in the sidecar in place of the file's
/// own ([`as_replica`]). Without a sidecar, the file's checksum.
pub fn replica_checksum(db: &Path) -> Result<Checksum, ApplyError> {
    let (checksum, _) = database_checksum(db)?;
    let logical = read_state(db)?.and_then(|state| state.page_one_hash);
    Ok(as_replica(checksum, file_page_one_hash(db)?, logical))
}

/// How much checking `PRAGMA integrity_check` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrityCheck {
    /// None.
    None,
    /// `PRAGMA quick_check`.
    Quick,
    /// `PRAGMA integrity_check`.
    Full,
}

/// Runs SQLite's integrity check on `db`.
pub fn integrity_check(db: &Path, mode: IntegrityCheck) -> Result<(), ApplyError> {
    let pragma = match mode {
        IntegrityCheck::None => return Ok(()),
        IntegrityCheck::Quick => "PRAGMA quick_check",
        IntegrityCheck::Full => "PRAGMA integrity_check",
    };
    let conn = open_read_only(db)?;
    let mut statement = conn.prepare(pragma).map_err(ApplyError::sqlite("check", db))?;
    let lines: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .map_err(ApplyError::sqlite("check", db))?;
    if lines != ["ok"] {
        return Err(ApplyError::Integrity { path: db.to_path_buf(), report: lines.join("; ") });
    }
    Ok(())
}
