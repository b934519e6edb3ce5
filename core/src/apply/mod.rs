//! Applying the log to a database: the one piece of logic behind
//! `edge-reader sync` (a replica that follows the store), `distributary
//! restore` (a new file at a chosen point) and in-memory replicas. (The
//! wasm edge reader follows the same chain through `crate::lazy`.)
//!
//! Every reader walks the same chain and verifies every object the same
//! way; only where the pages land differs (a [`PageSink`]):
//!
//! | module | what it does | targets |
//! |---|---|---|
//! | `prepare` | what every reader does first: manifest, snapshot index, position, plan; the page-size check | all |
//! | `chain` | walks a [`Plan`](crate::plan::Plan)'s chain by name, handing objects over in order ([`walk_chain`]) | all |
//! | `verify` | verifies one object and writes its pages to a sink: continuity, pre- and post-apply checksums ([`ObjectApplier`]); a new file's snapshot written last (`verify/snapshot_last`) | all |
//! | `page_hashes` | a sink of page hashes only ([`PageHashes`], for `distributary verify --deep`) | all |
//! | `memory` | a database image held in memory, synced in place ([`MemoryDatabase`], [`sync_in_memory`], [`download`]) | all (the fleet tests' simulated readers) |
//! | `fetch` | downloads bodies in the background: small ones into memory, large ones streamed to the applier | native |
//! | `run` | the apply loop on a blocking thread, over a sink that commits | native |
//! | `sync` | bringing a SQLite file to the target ([`sync`], [`sync_replica`]) | native, `sqlite` feature |
//! | `sidecar` | the file and its sidecar read together: whose replica it is ([`check_replica`]), its position after a crash, the record of a failure | native, `sqlite` feature |
//! | `sqlite` | a live replica written through `sqlite_dbpage` in one write transaction | native, `sqlite` feature |
//! | `file` | a new database file written in place, each page once (a restore, a replica's first sync) | native, `sqlite` feature |
//! | `rename` | a new file written beside its destination and renamed into place; a database's files by name | native, `sqlite` feature |
//! | `restore` | a new file at a chosen point ([`restore`]) | native, `sqlite` feature |
//! | `integrity` | a file's checksum as SQLite sees it ([`database_checksum`], [`replica_checksum`]) and [`integrity_check`] | native, `sqlite` feature |
//!
//! What every object goes through (`verify`): header and file checksum
//! (the decoder), generation, page size, TXID contiguity, pre-apply checksum
//! equal to the replica's unless it is a snapshot, and the post-apply
//! checksum, computed incrementally from the hashes of the pages replaced,
//! which must match before the object's writes are kept.

mod chain;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod fetch;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod file;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod integrity;
mod memory;
mod page_hashes;
mod prepare;
#[cfg(not(target_arch = "wasm32"))]
mod progress;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod rename;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod restore;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod run;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod sidecar;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod sqlite;
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
mod sync;
mod verify;

use std::sync::Arc;

use crate::format::{EncryptionKey, FormatError};
use crate::ids::{Checksum, GenerationId, TxId};
use crate::layout::MANIFEST_KEY;
use crate::manifest::ManifestError;
use crate::plan::{HistoryPoint, Plan, PlanError, ReplicaPosition};
use crate::store::StoreError;

pub use chain::{Fetcher, Started, walk_chain};
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
pub use integrity::{IntegrityCheck, database_checksum, integrity_check, replica_checksum};
pub use memory::{DEFAULT_MEMORY_LIMIT, Downloaded, MAX_MEMORY_LIMIT, MemoryDatabase, download, sync_in_memory};
pub use page_hashes::PageHashes;
pub(crate) use prepare::{check_page_size, planned, prepare, read_current};
#[cfg(not(target_arch = "wasm32"))]
pub use progress::{ProgressChoice, ProgressStyle, progress_printer};
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
pub use restore::{RestoreOptions, restore};
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
pub use sidecar::{check_replica, remove_replica};
#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
pub use sync::{sync, sync_replica, sync_replica_from};
pub use verify::{ObjectApplier, PageSink, PagesAt, Verified};
pub(crate) use verify::{check_continuity, empty_position};

/// Errors of restore and sync. Each names the object key, TXID range or
/// path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object is corrupt, sealed with another key, or malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The manifest or snapshot index could not be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// No chain reaches the target.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The sidecar or lock failed.
    #[cfg(not(target_arch = "wasm32"))]
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    /// The store has no manifest.
    #[error("read {url}/{MANIFEST_KEY}: not found (is the store URL right, and has the primary replicated yet?)")]
    NoManifest {
        /// The store's URL.
        url: String,
    },
    /// SQLite failed.
    #[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
    #[error("{op} {path}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The database file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An object does not continue the replica's state.
    #[error("apply {key} {range}: {reason}")]
    Discontinuous {
        /// The object.
        key: String,
        /// Its TXID range.
        range: crate::format::TxRange,
        /// What does not fit, with the replica's TXID.
        reason: String,
    },
    /// The database after applying an object does not have the checksum the
    /// object says; the object's writes were rolled back.
    #[error("apply {key}: post-apply checksum mismatch (expected {expected}, computed {computed}); rolled back")]
    PostChecksum {
        /// The object.
        key: String,
        /// The checksum in the object's trailer.
        expected: Checksum,
        /// The checksum of the database after writing it.
        computed: Checksum,
    },
    /// An object the chain needs is not in the store.
    #[error(
        "read {key}: not found: TXIDs [{from_txid}, {to_txid}] are not in the store (dropped by retention, or not uploaded yet)"
    )]
    Missing {
        /// The key probed.
        key: String,
        /// First TXID missing.
        from_txid: TxId,
        /// Last TXID wanted.
        to_txid: TxId,
    },
    /// The target TXID is inside a segment that covers several transactions.
    #[error("reach TXID {target}: it is inside {key} {range}; the nearest reachable TXIDs are {before} and {after}")]
    InsideSegment {
        /// The target.
        target: TxId,
        /// The segment.
        key: String,
        /// Its range.
        range: crate::format::TxRange,
        /// The state before the segment.
        before: TxId,
        /// The state after it.
        after: TxId,
    },
    /// The output exists and `--force` was not given.
    #[error("restore to {path}: the file exists (pass --force to replace it)")]
    Exists {
        /// The output.
        path: std::path::PathBuf,
    },
    /// `PRAGMA integrity_check` did not say ok.
    #[error("check {path}: integrity check failed: {report}")]
    Integrity {
        /// The database.
        path: std::path::PathBuf,
        /// What SQLite reported.
        report: String,
    },
    /// A background task failed.
    #[error("{op}: {reason}")]
    Task {
        /// What was being done.
        op: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Applying an object would make an in-memory database larger than its
    /// limit; nothing of the object was applied.
    #[error(
        "apply {key}: the database would be {bytes} bytes ({pages} pages of {page_size}), past this replica's memory limit of {limit} bytes (raise the limit up to {max} bytes, or read this database with the native edge-reader)",
        max = memory::MAX_MEMORY_LIMIT
    )]
    TooLarge {
        /// The object.
        key: String,
        /// Pages the database would have.
        pages: u32,
        /// Its page size in bytes.
        page_size: u32,
        /// `pages * page_size`.
        bytes: u64,
        /// The replica's limit in bytes.
        limit: u64,
    },
}

#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
impl ApplyError {
    /// [`ApplyError::Sqlite`] of `op` on `path`, for `map_err`.
    pub(super) fn sqlite(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(rusqlite::Error) -> ApplyError + use<> {
        let path = path.to_path_buf();
        move |source| ApplyError::Sqlite { op, path, source }
    }

    /// [`ApplyError::Io`] of `op` on `path`, for `map_err`.
    pub(super) fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ApplyError + use<> {
        let path = path.to_path_buf();
        move |source| ApplyError::Io { op, path, source }
    }
}

/// How far a sync or restore has come: reported every 100 ms by native
/// readers, after each object by the wasm reader.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// The TXID the replica reached (in the open transaction).
    pub txid: TxId,
    /// Objects applied so far.
    pub objects: u64,
    /// Bytes of objects applied so far.
    pub bytes: u64,
    /// Bytes received so far, objects still arriving included.
    pub fetched: u64,
    /// Bytes of every object whose download has started: the chain's
    /// total once its last object has started (0 when unknown).
    pub expected: u64,
    /// Pages written so far.
    pub pages: u64,
    /// The last report of the run.
    pub done: bool,
}

/// A callback for progress reports.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Ranged parts of one large snapshot fetched at once by default: enough
/// that one connection's rate does not cap a restore from S3, few enough
/// that memory stays small (4 MiB a part).
pub const DEFAULT_PARTS: usize = 4;

/// How to sync.
#[derive(Clone)]
pub struct SyncOptions {
    /// The state to reach.
    pub target: HistoryPoint,
    /// The encryption key, for encrypted stores.
    pub key: Option<EncryptionKey>,
    /// Objects fetched at once (at least 1).
    pub concurrency: usize,
    /// Ranged parts of one large snapshot fetched at once from a remote
    /// store when a new file is written (1: one stream).
    pub parts: usize,
    /// Keep the sidecar state beside the database (sync); a restore into a
    /// new file does not.
    pub keep_state: bool,
    /// Only plan: fetch and apply nothing.
    pub dry_run: bool,
    /// Called after each object applied.
    pub progress: Option<ProgressFn>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            target: HistoryPoint::Newest,
            key: None,
            concurrency: 8,
            parts: DEFAULT_PARTS,
            keep_state: true,
            dry_run: false,
            progress: None,
        }
    }
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("target", &self.target)
            .field("key", &self.key)
            .field("concurrency", &self.concurrency)
            .field("parts", &self.parts)
            .field("keep_state", &self.keep_state)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// What a sync or restore did.
#[derive(Clone, Debug)]
pub struct SyncSummary {
    /// The generation now followed.
    pub generation: GenerationId,
    /// The TXID before (`None`: no usable position, bootstrapped).
    pub from_txid: Option<TxId>,
    /// The TXID reached.
    pub to_txid: TxId,
    /// The database's rolling checksum at `to_txid`.
    pub checksum: Checksum,
    /// Commit time of `to_txid`, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Objects applied.
    pub objects: u64,
    /// Bytes downloaded and applied.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The newest TXID the manifest named.
    pub manifest_newest: TxId,
    /// The plan followed.
    pub plan: Plan,
    /// The primary's page 1 at `to_txid`, if this run wrote it (SQLite
    /// restamps its change counter in the file; a restore puts it back).
    pub page_one: Option<Vec<u8>>,
}

impl SyncSummary {
    /// The summary before anything is applied: the replica at `position`
    /// (if any), following `plan`, with `manifest_newest` from the manifest.
    pub fn planned(plan: &Plan, position: Option<ReplicaPosition>, manifest_newest: TxId) -> SyncSummary {
        SyncSummary {
            generation: plan.generation,
            from_txid: position.filter(|p| p.generation == plan.generation).map(|p| p.txid),
            to_txid: position.map_or(TxId::ZERO, |p| p.txid),
            checksum: position.map_or(Checksum::EMPTY, |p| p.checksum),
            timestamp_ms: position.map_or(0, |p| p.timestamp_ms),
            objects: 0,
            bytes: 0,
            seconds: 0.0,
            manifest_newest,
            plan: plan.clone(),
            page_one: None,
        }
    }

    /// The database is at `position` now.
    fn reach(&mut self, position: crate::plan::ReplicaPosition) {
        self.generation = position.generation;
        self.to_txid = position.txid;
        self.checksum = position.checksum;
        self.timestamp_ms = position.timestamp_ms;
    }

    /// Records what a run applied, which brought the database to `position`.
    #[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
    fn reached(
        &mut self,
        position: crate::plan::ReplicaPosition,
        objects: u64,
        bytes: u64,
        page_one: Option<Vec<u8>>,
        started: std::time::Instant,
    ) {
        self.reach(position);
        self.objects = objects;
        self.bytes = bytes;
        self.page_one = page_one;
        self.seconds = started.elapsed().as_secs_f64();
    }
}
