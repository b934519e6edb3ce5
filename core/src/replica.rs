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
//!
//! The sidecar also says which store the replica follows (`source`: the
//! store URL as given, credentials stripped, see [`recorded_source`]), so a
//! sync pointed at a database that is not that store's replica refuses it
//! instead of overwriting it ([`ReplicaError::NotAReplica`],
//! [`ReplicaError::OtherStore`]), and it records the last successful sync
//! and the last failed one separately, for `edge-reader status`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::{Checksum, GenerationId, TxId};
use crate::plan::ReplicaPosition;
use crate::store::StoreUrl;

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
    #[error(
        "read {path}: invalid replica state: {reason} (sync with --force to replace the database with the store's)"
    )]
    Invalid {
        /// The sidecar's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database file is not at the state its sidecar names: it was
    /// replaced or restored without its sidecar (or with another one).
    #[error(
        "{db} does not hold the state its sidecar names (TXID {txid}, checksum {recorded}; the file's checksum is {actual}): the database was replaced or restored without its sidecar {sidecar} (sync with --force to replace it with the store's database)"
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
    /// The database exists, holds data and has no sidecar: it is not a
    /// replica (an ordinary SQLite file, or one whose sidecar was lost).
    #[error(
        "sync {db}: the file holds {found} and has no replica state ({sidecar} is missing), so it is not a replica of this store; refusing to overwrite it (pass another --db, or --force to replace it with the store's database)"
    )]
    NotAReplica {
        /// The database.
        db: PathBuf,
        /// The sidecar that is missing.
        sidecar: PathBuf,
        /// What the file holds ("3 tables, 2 indexes", "data SQLite cannot read: ...").
        found: String,
    },
    /// The sidecar names another store: the database is that store's replica.
    #[error(
        "sync {db}: it is a replica of {recorded} (generation {generation}, TXID {txid}), not of {source_url} (generation {store_generation}, which does not hold generation {generation}); refusing to overwrite it (pass the --source it follows, another --db, or --force to replace it)"
    )]
    OtherStore {
        /// The database.
        db: PathBuf,
        /// The store its sidecar names.
        recorded: String,
        /// The generation its sidecar names.
        generation: GenerationId,
        /// The TXID its sidecar names.
        txid: TxId,
        /// The store this sync reads.
        source_url: String,
        /// That store's current generation.
        store_generation: GenerationId,
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
pub struct ReplicaSidecar {
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
    /// When a sync last finished successfully (the replica then held
    /// everything the store held), milliseconds since the Unix epoch; 0
    /// while none has (a first bootstrap in progress or failed). A failed
    /// sync does not move it, even when it kept the objects it verified
    /// before the failure.
    pub synced_ms: u64,
    /// The store followed: its URL as given to the last sync, without
    /// credentials ([`recorded_source`]). Sidecars of older versions hold
    /// the store's display form instead; [`source_url`] reads both.
    pub source: String,
    /// The last sync that failed, kept after later successes (compare its
    /// time with `synced_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<SyncFailure>,
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

/// A failed sync, as the sidecar records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFailure {
    /// When it failed, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The error, with its causes.
    pub error: String,
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
    /// The primary's page 1 hash term at `txid` (see [`ReplicaSidecar`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_one_hash: Option<Checksum>,
}

impl ReplicaSidecar {
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

/// The form of a store URL a sidecar records: the URL as given, minus
/// anything that may be a credential. `user:password@` is dropped from
/// every URL (and from an S3 `endpoint=`), and an `http(s)://` store's
/// query string is dropped whole: it exists to carry a shared token
/// (`?token=...`) or a signature, and which of its parameters are secret
/// cannot be told. A replica that follows such a store needs `--source`
/// for `edge-reader status` to measure lag.
pub fn recorded_source(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match scheme {
        "http" | "https" => {
            let location = rest.split(['?', '#']).next().unwrap_or_default();
            format!("{scheme}://{}", strip_userinfo(location))
        }
        "s3" => {
            let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
            let pairs: Vec<String> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some(("endpoint", value)) => match value.split_once("://") {
                        Some((scheme, rest)) => format!("endpoint={scheme}://{}", strip_userinfo(rest)),
                        None => pair.to_string(),
                    },
                    _ => pair.to_string(),
                })
                .collect();
            let location = strip_userinfo(location);
            if pairs.is_empty() { format!("s3://{location}") } else { format!("s3://{location}?{}", pairs.join("&")) }
        }
        _ => url.to_string(),
    }
}

/// `host/path` without a leading `user:password@`.
fn strip_userinfo(location: &str) -> String {
    let (authority, path) = location.split_at(location.find('/').unwrap_or(location.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{host}{path}")
}

/// The store URL a sidecar's `source` names. Older versions recorded the
/// store's display form, which for an S3 store with a custom endpoint is
/// `s3://bucket/prefix (endpoint http://host:port)`: that is turned back
/// into `s3://bucket/prefix?endpoint=http://host:port` (the region and
/// path-style settings it did not record come from the environment).
pub fn source_url(recorded: &str) -> String {
    if let Some(rest) = recorded.strip_prefix("s3://")
        && let Some((location, endpoint)) = rest.split_once(" (endpoint ")
        && let Some(endpoint) = endpoint.strip_suffix(')')
    {
        return format!("s3://{location}?endpoint={endpoint}");
    }
    recorded.to_string()
}

/// Whether two store URLs (or recorded sources) name the same place: the
/// same folder, bucket + prefix + endpoint, or HTTP base, whatever their
/// query settings (region, path style, token).
pub fn same_location(a: &str, b: &str) -> bool {
    let (a, b) = (source_url(a), source_url(b));
    let trim = |endpoint: &Option<String>| endpoint.as_deref().map(|e| e.trim_end_matches('/').to_string());
    match (StoreUrl::parse(&a), StoreUrl::parse(&b)) {
        (Ok(StoreUrl::File { root: x }), Ok(StoreUrl::File { root: y })) => x == y,
        (
            Ok(StoreUrl::S3 { bucket: xb, prefix: xp, endpoint: xe, .. }),
            Ok(StoreUrl::S3 { bucket: yb, prefix: yp, endpoint: ye, .. }),
        ) => xb == yb && xp == yp && trim(&xe) == trim(&ye),
        (Ok(StoreUrl::Http { base: x, .. }), Ok(StoreUrl::Http { base: y, .. })) => {
            strip_userinfo(&x) == strip_userinfo(&y)
        }
        (Ok(_), Ok(_)) => false,
        _ => a == b,
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
pub fn read_state(db: &Path) -> Result<Option<ReplicaSidecar>, ReplicaError> {
    let path = state_path(db);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReplicaError::Io { op: "read", path, source }),
    };
    let state: ReplicaSidecar = serde_json::from_slice(&bytes)
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
pub fn write_state(db: &Path, state: &ReplicaSidecar) -> Result<(), ReplicaError> {
    let path = state_path(db);
    // Serialising a plain struct of numbers and strings cannot fail.
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    crate::atomic_file::write_atomic(&path, &bytes).map_err(|source| ReplicaError::Io { op: "write", path, source })
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
    let parent = crate::atomic_file::parent(path);
    crate::atomic_file::fsync_dir(parent).map_err(|source| ReplicaError::Io {
        op: "fsync",
        path: parent.to_path_buf(),
        source,
    })
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
        let state = ReplicaSidecar {
            format_version: STATE_FORMAT_VERSION,
            generation: GenerationId([3; 16]),
            page_size: 4096,
            txid: TxId(42),
            checksum: Checksum(7),
            timestamp_ms: 1,
            synced_ms: 2,
            source: "file:///x".into(),
            last_failure: Some(SyncFailure { at_ms: 3, error: "read l0/7: checksum mismatch".into() }),
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

    #[test]
    fn a_sidecar_without_the_failure_fields_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("replica.db");
        // What version 1 sidecars of earlier builds hold: no failure fields,
        // and the display form of an S3 store with an endpoint.
        let mut old = serde_json::json!({
            "format_version": 1, "generation": GenerationId([1; 16]).to_string(), "page_size": 4096,
            "txid": TxId(3), "checksum": Checksum(7), "timestamp_ms": 1, "synced_ms": 2,
            "source": "s3://app-bucket/app (endpoint http://127.0.0.1:9100)",
        });
        std::fs::write(state_path(&db), serde_json::to_vec(&old).unwrap()).unwrap();
        let state = read_state(&db).unwrap().unwrap();
        assert_eq!(state.last_failure, None);
        assert_eq!(source_url(&state.source), "s3://app-bucket/app?endpoint=http://127.0.0.1:9100");
        // An unknown field is still refused (deny_unknown_fields).
        old["surprise"] = 1.into();
        std::fs::write(state_path(&db), serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(matches!(read_state(&db), Err(ReplicaError::Invalid { .. })));
    }

    #[test]
    fn recorded_sources_keep_the_url_and_drop_credentials() {
        for (given, recorded) in [
            (
                "s3://app-bucket/app?endpoint=http://127.0.0.1:9100",
                "s3://app-bucket/app?endpoint=http://127.0.0.1:9100",
            ),
            (
                "s3://b/p?endpoint=http://key:secret@127.0.0.1:9100&region=eu-west-1",
                "s3://b/p?endpoint=http://127.0.0.1:9100&region=eu-west-1",
            ),
            ("https://cdn.example.com/app?token=abc", "https://cdn.example.com/app"),
            ("https://user:pw@cdn.example.com/app/?token=abc#x", "https://cdn.example.com/app/"),
            ("file:///var/lib/store", "file:///var/lib/store"),
        ] {
            assert_eq!(recorded_source(given), recorded, "{given}");
        }
        assert!(same_location("s3://bkt/p (endpoint http://h:1)", "s3://bkt/p/?endpoint=http://h:1/&region=x"));
        assert!(same_location("https://cdn.example.com/app?token=1", "https://cdn.example.com/app/"));
        assert!(!same_location("s3://bkt/p?endpoint=http://h:1", "s3://bkt/p?endpoint=http://h:2"));
        assert!(!same_location("file:///a", "file:///b"));
        assert!(!same_location("file:///a", "s3://bucket/a"));
    }
}
