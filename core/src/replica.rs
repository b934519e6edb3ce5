//! A replica's position on disk: the sidecar state file beside the
//! database, and the lock file that keeps two syncs off one replica.
//!
//! ```text
//! replica.db                      the SQLite file (WAL mode), readable by anyone
//! replica.db-distributary.json    the sidecar: generation, TXID, checksum
//! replica.db-distributary.lock    held (flock) while a sync runs
//! ```
//!
//! The sidecar is written crash-safely (temp file, fsync, rename, fsync of
//! the folder) *after* each commit. Just before a commit it is rewritten
//! with the position the commit leads to as `pending`: a sync that finds a
//! pending position knows it was killed around a commit, computes the
//! database's checksum once, and takes whichever of the two positions
//! matches (or bootstraps from a snapshot if neither does).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::{Checksum, GenerationId, TxId};
use crate::plan::ReplicaPosition;

/// The sidecar format this code writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Errors reading or writing the sidecar or taking the lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The sidecar is not valid.
    #[error("read {path}: invalid replica state: {reason} (delete it to bootstrap the replica again)")]
    Invalid {
        /// The sidecar's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database file is not at the state its sidecar names: it was
    /// replaced or restored without its sidecar (or with another one).
    #[error(
        "{db} does not hold the state its sidecar names (TXID {txid}, checksum {recorded}; the file's checksum is {actual}): the database was replaced or restored without its sidecar (delete {sidecar} to bootstrap the replica again)"
    )]
    Mismatch {
        /// The database.
        db: PathBuf,
        /// The sidecar.
        sidecar: PathBuf,
        /// The TXID the sidecar names.
        txid: TxId,
        /// The checksum the sidecar names.
        recorded: Checksum,
        /// The file's checksum.
        actual: Checksum,
    },
    /// Another sync holds the replica's lock.
    #[error("lock {path}: another sync of this replica is running (retry later, or wait without --no-wait)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

/// The sidecar: where the replica is in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaState {
    /// [`STATE_FORMAT_VERSION`].
    pub format_version: u32,
    /// The lineage followed.
    pub generation: GenerationId,
    /// The database's page size in bytes.
    pub page_size: u32,
    /// The last transaction applied.
    pub txid: TxId,
    /// Rolling checksum of the database at `txid`.
    pub checksum: Checksum,
    /// Commit time of `txid` on the primary, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// When the replica last synced successfully, milliseconds since the Unix epoch.
    pub synced_ms: u64,
    /// The store URL synced from (for `status`).
    pub source: String,
    /// Hash term ([`crate::checksum::page_hash`]) of the primary's page 1 at
    /// `txid`. SQLite restamps page 1's change counter and version fields
    /// (bytes 24..28 and 92..100) whenever it commits page 1, so the
    /// replica's file differs from the primary there; the replica's checksum
    /// is the file's with this term in place of its own page 1's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_one_hash: Option<Checksum>,
    /// Set just before a commit and cleared after it: the database is at
    /// `txid` or at `pending` (the commit's result) when this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingPosition>,
}

/// The position a commit in progress leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingPosition {
    /// The last transaction of the commit.
    pub txid: TxId,
    /// Rolling checksum of the database after the commit.
    pub checksum: Checksum,
    /// Commit time of `txid`, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The primary's page 1 hash term at `txid` (see [`ReplicaState`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_one_hash: Option<Checksum>,
}

impl ReplicaState {
    /// The position recorded.
    pub fn position(&self) -> ReplicaPosition {
        ReplicaPosition {
            generation: self.generation,
            txid: self.txid,
            checksum: self.checksum,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// The sidecar's path for a database.
pub fn state_path(db: &Path) -> PathBuf {
    sibling(db, "-distributary.json")
}

/// The lock file's path for a database.
pub fn lock_path(db: &Path) -> PathBuf {
    sibling(db, "-distributary.lock")
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    db.with_file_name(name)
}

/// Reads the sidecar of `db`; `None` if there is none.
pub fn read_state(db: &Path) -> Result<Option<ReplicaState>, ReplicaError> {
    let path = state_path(db);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReplicaError::Io { op: "read", path, source }),
    };
    let state: ReplicaState = serde_json::from_slice(&bytes)
        .map_err(|e| ReplicaError::Invalid { path: path.clone(), reason: e.to_string() })?;
    if state.format_version > STATE_FORMAT_VERSION {
        return Err(ReplicaError::Invalid {
            path,
            reason: format!("format version {} is newer than this build; upgrade", state.format_version),
        });
    }
    Ok(Some(state))
}

/// Writes the sidecar of `db` atomically and durably: temp file, fsync,
/// rename over the old one, fsync of the folder.
pub fn write_state(db: &Path, state: &ReplicaState) -> Result<(), ReplicaError> {
    let path = state_path(db);
    let temp = sibling(db, "-distributary.json.tmp");
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplicaError::Io { op, path, source }
    };
    // Serialising a plain struct of numbers and strings cannot fail.
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    let mut file = File::create(&temp).map_err(io("create", &temp))?;
    file.write_all(&bytes).map_err(io("write", &temp))?;
    file.sync_all().map_err(io("fsync", &temp))?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(io("rename", &path))?;
    sync_parent(&path)
}

/// Removes the sidecar of `db` (when the replica is replaced).
pub fn remove_state(db: &Path) -> Result<(), ReplicaError> {
    let path = state_path(db);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_parent(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ReplicaError::Io { op: "remove", path, source }),
    }
}

/// Fsyncs the folder holding `path`, so a rename in it is durable.
pub fn sync_parent(path: &Path) -> Result<(), ReplicaError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    #[cfg(unix)]
    {
        let dir =
            File::open(&parent).map_err(|source| ReplicaError::Io { op: "open", path: parent.clone(), source })?;
        dir.sync_all().map_err(|source| ReplicaError::Io { op: "fsync", path: parent, source })?;
    }
    Ok(())
}

/// The lock of one replica, held until dropped. The OS releases it if the
/// process dies, so a killed sync never leaves it stuck.
#[derive(Debug)]
pub struct ReplicaLock {
    _file: File,
}

/// Takes the replica's lock: waits for another sync to finish if `wait`,
/// otherwise fails at once with [`ReplicaError::Locked`].
pub fn lock(db: &Path, wait: bool) -> Result<ReplicaLock, ReplicaError> {
    let path = lock_path(db);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ReplicaError::Io { op: "open", path: path.clone(), source })?;
    if wait {
        file.lock().map_err(|source| ReplicaError::Io { op: "lock", path, source })?;
    } else {
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(ReplicaError::Locked { path }),
            Err(std::fs::TryLockError::Error(source)) => return Err(ReplicaError::Io { op: "lock", path, source }),
        }
    }
    Ok(ReplicaLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("replica.db");
        assert_eq!(read_state(&db).unwrap(), None);
        let state = ReplicaState {
            format_version: STATE_FORMAT_VERSION,
            generation: GenerationId([3; 16]),
            page_size: 4096,
            txid: TxId(42),
            checksum: Checksum(7),
            timestamp_ms: 1,
            synced_ms: 2,
            source: "file:///x".into(),
            page_one_hash: None,
            pending: None,
        };
        write_state(&db, &state).unwrap();
        assert_eq!(read_state(&db).unwrap(), Some(state));
        let held = lock(&db, false).unwrap();
        assert!(matches!(lock(&db, false), Err(ReplicaError::Locked { .. })));
        drop(held);
        lock(&db, false).unwrap();
    }
}
