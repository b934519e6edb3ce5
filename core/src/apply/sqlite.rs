//! Applying the log to a SQLite file (native, `sqlite` feature): [`sync`]
//! (and [`sync_replica`], which records the URL the replica follows) and
//! [`restore`]. A file that does not exist yet (every restore, a new
//! replica's first sync) is written in place by `file.rs`; what follows is
//! how a live replica is brought forward.
//!
//! Before it writes a replica that keeps a sidecar, a sync checks that the
//! file is this store's replica ([`check_replica`]): a file that holds data
//! and has no sidecar, or whose sidecar names another store, is refused,
//! never overwritten ([`remove_replica`] is how a caller replaces it on
//! purpose). A sidecar naming another *generation* is not enough to refuse:
//! a store starts a new generation when its primary starts a new lineage,
//! and its replicas then re-bootstrap; it is refused only when it also names
//! another store URL and the store does not hold that generation.
//!
//! [`sync`] reads the manifest, [`plan`](crate::plan)s a chain, fetches its
//! objects concurrently (a bounded window: the next L0 key is known as soon
//! as the previous object's 96-byte header has arrived, so downloads overlap
//! while the chain is still being discovered by name), and applies them in
//! order on a blocking thread:
//!
//! - every object is verified by the shared [`ObjectApplier`];
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
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::file::{NewDatabase, remove_abandoned, write_new_database};
use super::run::{CommitSink, Order, apply_in_order, apply_plan, base_position};
use super::{ApplyError, PageSink, SyncOptions, SyncSummary};
use crate::checksum::page_hash;
use crate::format::Header;
use crate::ids::{Checksum, PageNo, TxId};
use crate::layout::MANIFEST_KEY;
use crate::manifest::{Manifest, read_manifest, read_snapshot_index};
use crate::plan::{Base, Plan, ReplicaPosition, Target, plan};
use crate::replica::{
    PendingPosition, ReplicaError, ReplicaState, STATE_FORMAT_VERSION, SyncFailure, read_state, recorded_source,
    remove_state, same_location, state_path, write_state,
};
use crate::store::Store;

/// Commit the open transaction once it has written this many pages, so the
/// page-hash map (and the WAL) stay bounded.
const MAX_PAGES_PER_COMMIT: usize = 1 << 20;
/// The page cache of each of a sync's two connections, in KiB (why: in
/// `SqliteSink::open`).
const SYNC_CACHE_KIB: u32 = 256;

impl ApplyError {
    pub(super) fn sqlite(op: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> ApplyError + use<> {
        let path = path.to_path_buf();
        move |source| ApplyError::Sqlite { op, path, source }
    }

    pub(super) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError + use<> {
        let path = path.to_path_buf();
        move |source| ApplyError::Io { op, path, source }
    }
}

/// Brings the SQLite file `db` to `options.target` from `store`: the whole
/// of `distributary restore` on a temp file. [`sync_replica`] with the
/// store's display URL as the source a sidecar records.
pub async fn sync(store: Arc<dyn Store>, db: &Path, options: &SyncOptions) -> Result<SyncSummary, ApplyError> {
    let source = store.url().to_string();
    sync_replica(store, &source, db, options).await
}

/// Brings the replica `db` to `options.target` from `store`, whose URL as
/// the user gave it is `source`: the whole of `edge-reader sync`, and each
/// sync of `edge-reader serve`. The caller holds the replica's lock
/// ([`crate::replica::lock`]).
///
/// With `options.keep_state` (a replica, not a restore), the file must be
/// this store's replica or empty ([`check_replica`]), and the sidecar
/// records the outcome: `synced_ms` moves only when the sync succeeded, a
/// failure is recorded as `last_failure` (time and error).
pub async fn sync_replica(
    store: Arc<dyn Store>,
    source: &str,
    db: &Path,
    options: &SyncOptions,
) -> Result<SyncSummary, ApplyError> {
    sync_replica_from(store, source, db, options, None).await
}

/// [`sync_replica`] planned from `manifest`, one the caller read (or found
/// unchanged) a moment ago, instead of reading it again: `edge-reader
/// serve`, whose probe just found the next L0 segment, saves a request per
/// sync. A stale manifest only plans a longer way to the same state: the
/// L0 chain is probed by name from the replica's position either way.
pub async fn sync_replica_from(
    store: Arc<dyn Store>,
    source: &str,
    db: &Path,
    options: &SyncOptions,
    manifest: Option<Manifest>,
) -> Result<SyncSummary, ApplyError> {
    let result = sync_inner(store, source, db, options, manifest).await;
    if !options.keep_state || options.dry_run {
        return result;
    }
    match result {
        Ok(summary) => {
            // Even an idle sync confirms the replica is up to date.
            if let Some(state) = read_state(db)? {
                write_state(
                    db,
                    &ReplicaState { synced_ms: crate::clock::now_ms(), source: recorded_source(source), ..state },
                )?;
            }
            Ok(summary)
        }
        // A refused file is not touched at all.
        Err(error @ ApplyError::Replica(ReplicaError::NotAReplica { .. } | ReplicaError::OtherStore { .. })) => {
            Err(error)
        }
        Err(error) => {
            record_failure(db, &error);
            Err(error)
        }
    }
}

/// Records a failed sync in the replica's sidecar, if it has one. Best
/// effort: the sync's own error is what the caller reports.
fn record_failure(db: &Path, error: &ApplyError) {
    let message = crate::errors::error_chain(error);
    let recorded = read_state(db).and_then(|state| match state {
        Some(state) => write_state(
            db,
            &ReplicaState {
                last_failure: Some(SyncFailure { at_ms: crate::clock::now_ms(), error: message }),
                ..state
            },
        ),
        None => Ok(()),
    });
    if let Err(e) = recorded {
        tracing::warn!(db = %db.display(), error = %e, "record the failed sync in the replica state");
    }
}

/// Checks that `db` may be synced from `store` (URL `source`): it is
/// missing or empty (bootstrapped), or it is this store's replica. Refuses
/// with [`ReplicaError::NotAReplica`] a file that holds data and has no
/// sidecar, and with [`ReplicaError::OtherStore`] one whose sidecar names
/// another store URL and a generation this store does not hold. Reads the
/// manifest (and, only in the second case, one snapshot index).
pub async fn check_replica(store: &dyn Store, source: &str, db: &Path) -> Result<(), ApplyError> {
    let manifest = read_manifest(store).await?.map(|v| v.value);
    check_replica_against(store, source, db, manifest.as_ref()).await
}

async fn check_replica_against(
    store: &dyn Store,
    source: &str,
    db: &Path,
    manifest: Option<&Manifest>,
) -> Result<(), ApplyError> {
    if !db.exists() {
        return Ok(());
    }
    let Some(state) = read_state(db)? else {
        return match database_contents(db) {
            Some(found) => {
                Err(ReplicaError::NotAReplica { db: db.to_path_buf(), sidecar: state_path(db), found }.into())
            }
            None => Ok(()),
        };
    };
    let Some(manifest) = manifest else { return Ok(()) };
    // The same generation is the same lineage, whatever URL reaches it (a
    // CDN in front of the bucket); the same URL with a new generation is
    // the store starting a new lineage: re-bootstrap.
    if state.generation == manifest.generation || same_location(&state.source, source) {
        return Ok(());
    }
    // Another URL and another generation: still this store if it holds the
    // replica's generation (a new lineage, reached through another URL).
    if read_snapshot_index(store, state.generation).await?.is_some() {
        return Ok(());
    }
    Err(ReplicaError::OtherStore {
        db: db.to_path_buf(),
        recorded: crate::replica::source_url(&state.source),
        generation: state.generation,
        txid: state.txid,
        source_url: store.url().to_string(),
        store_generation: manifest.generation,
    }
    .into())
}

/// What a file without a sidecar holds, or `None` if it holds nothing a
/// bootstrap could lose: zero bytes, or a SQLite database without a single
/// table, index, view or trigger (what a first sync killed before its
/// first commit leaves).
fn database_contents(db: &Path) -> Option<String> {
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    if size(db) == 0 && size(&with_suffix(db, "-wal")) == 0 {
        return None;
    }
    let conn = match Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
    {
        Ok(conn) => conn,
        Err(e) => return Some(format!("{} bytes SQLite cannot open ({e})", size(db))),
    };
    let counted = conn.query_row(
        "SELECT count(*), coalesce(sum(type = 'table'), 0), coalesce(sum(type = 'index'), 0) FROM sqlite_schema",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
    );
    match counted {
        Ok((0, _, _)) => None,
        Ok((all, tables, indexes)) => Some(format!(
            "a SQLite database with {tables} table(s), {indexes} index(es) and {} other schema object(s)",
            all - tables - indexes
        )),
        Err(e) => Some(format!("{} bytes SQLite cannot read ({e})", size(db))),
    }
}

/// Removes a replica: the database, its WAL and shared-memory files, and
/// its sidecar (for `--force`, before a sync bootstraps it again).
pub fn remove_replica(db: &Path) -> Result<(), ApplyError> {
    remove_database(db)?;
    remove_state(db)?;
    Ok(())
}

/// Reads the manifest and plans the chain that brings `db` to the target;
/// with `options.keep_state`, checks first that `db` is this store's
/// replica and plans from its recorded position.
async fn plan_sync(
    store: &dyn Store,
    source: &str,
    db: &Path,
    options: &SyncOptions,
    known: Option<Manifest>,
) -> Result<(Plan, SyncSummary), ApplyError> {
    let manifest = match known {
        Some(manifest) => manifest,
        None => {
            read_manifest(store).await?.ok_or_else(|| ApplyError::NoManifest { url: store.url().to_string() })?.value
        }
    };
    if options.keep_state {
        check_replica_against(store, source, db, Some(&manifest)).await?;
    }
    let index = match options.target {
        Target::Newest => None,
        _ => read_snapshot_index(store, manifest.generation).await?.map(|v| v.value),
    };
    let position = if options.keep_state && db.exists() { current_position(db)? } else { None };
    let plan = plan(store, &manifest, index.as_ref(), position, options.target).await?;
    tracing::debug!(plan = %plan.describe(), "planned");
    let summary = SyncSummary::planned(&plan, position, manifest.newest.txid);
    Ok((plan, summary))
}

async fn sync_inner(
    store: Arc<dyn Store>,
    source: &str,
    db: &Path,
    options: &SyncOptions,
    manifest: Option<Manifest>,
) -> Result<SyncSummary, ApplyError> {
    let started = Instant::now();
    let (plan, mut summary) = plan_sync(store.as_ref(), source, db, options, manifest).await?;
    if options.dry_run {
        return Ok(summary);
    }
    let source = recorded_source(source);
    if is_new_database(db) {
        // Nobody has the file open yet: write it whole and rename it in.
        let new = sync_new_file(store, db, &plan, options, &source).await?;
        summary.reached(new.position, new.objects, new.bytes, new.page_one, started);
        return Ok(summary);
    }
    let apply = {
        let (db, plan, options) = (db.to_path_buf(), plan.clone(), options.clone());
        move |applying| apply_in_order(SqliteSink::open(&db, &plan, &options, &source)?, &plan, &options, applying)
    };
    let outcome = match apply_plan(store, &plan, options, Order::Chain, apply).await {
        // A segment that does not fit a replica continuing from its sidecar:
        // say so if the file is not where the sidecar says.
        Err(error @ (ApplyError::Discontinuous { .. } | ApplyError::PostChecksum { .. }))
            if options.keep_state && matches!(plan.base, Base::Replica(_)) =>
        {
            return Err(explain_misfit(db, error));
        }
        outcome => outcome?,
    };
    summary.reached(outcome.position, outcome.objects, outcome.bytes, outcome.page_one, started);
    Ok(summary)
}

/// Whether `db` is a database nobody has created yet (no file, no WAL).
fn is_new_database(db: &Path) -> bool {
    !db.exists() && !with_suffix(db, "-wal").exists()
}

/// `.{name}.{what}-{pid}` beside `db`: where a run writes a new file
/// before renaming it into place.
fn temp_beside(db: &Path, what: &str) -> PathBuf {
    let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "database".into());
    db.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// A new replica's first sync: the database written whole into a temp
/// file, its sidecar written, then the file renamed into place. Killed
/// before the rename, the next sync starts again (the sidecar alone, with
/// no database, is not a position); after it, the sidecar is already there.
async fn sync_new_file(
    store: Arc<dyn Store>,
    db: &Path,
    plan: &Plan,
    options: &SyncOptions,
    source: &str,
) -> Result<NewDatabase, ApplyError> {
    remove_abandoned(db, "syncing");
    let temp = temp_beside(db, "syncing");
    remove_database(&temp)?;
    let result = async {
        let new = write_new_database(store, &temp, plan, options).await?;
        if options.keep_state {
            let state = ReplicaState {
                format_version: STATE_FORMAT_VERSION,
                generation: new.position.generation,
                page_size: plan.page_size,
                txid: new.position.txid,
                checksum: new.position.checksum,
                timestamp_ms: new.position.timestamp_ms,
                synced_ms: 0,
                source: source.to_string(),
                last_failure: None,
                page_one_hash: new.page_one.as_deref().map(|page| Checksum(page_hash(PageNo(1), page))),
                pending: None,
            };
            write_state(db, &state)?;
        }
        std::fs::rename(&temp, db).map_err(ApplyError::io("rename", db))?;
        crate::replica::sync_parent(db)?;
        Ok(new)
    }
    .await;
    if result.is_err() {
        let _ = remove_database(&temp);
    }
    result
}

/// The replica's position from its sidecar, checked against the database
/// when the sidecar says a commit was in progress. `None` when unknown.
fn current_position(db: &Path) -> Result<Option<ReplicaPosition>, ApplyError> {
    let Some(state) = read_state(db)? else {
        return Ok(None);
    };
    let Some(pending) = state.pending else {
        return Ok(Some(state.position()));
    };
    // Killed around a commit: the database is at one of the two positions.
    let (file_checksum, _) = database_checksum(db)?;
    let file_page_one = file_page_one_hash(db)?;
    let as_replica = |page_one: Option<Checksum>| match (page_one, file_page_one) {
        (Some(logical), Some(file)) => Checksum(file_checksum.0 ^ file ^ logical.0),
        _ => file_checksum,
    };
    let checksum = as_replica(state.page_one_hash);
    let pending_checksum = as_replica(pending.page_one_hash);
    let position = if checksum == state.checksum {
        Some(state.position())
    } else if pending_checksum == pending.checksum {
        Some(ReplicaPosition {
            generation: state.generation,
            txid: pending.txid,
            checksum: pending.checksum,
            timestamp_ms: pending.timestamp_ms,
        })
    } else {
        tracing::warn!(db = %db.display(), %checksum, "replica matches neither recorded position; bootstrapping");
        None
    };
    if let Some(position) = position {
        write_state(
            db,
            &ReplicaState {
                txid: position.txid,
                checksum: position.checksum,
                timestamp_ms: position.timestamp_ms,
                page_one_hash: if position.txid == pending.txid && position.txid != state.txid {
                    pending.page_one_hash
                } else {
                    state.page_one_hash
                },
                pending: None,
                ..state
            },
        )?;
    }
    Ok(position)
}

/// After a segment did not fit a replica: [`ReplicaError::Mismatch`] when
/// the file does not hold the state its sidecar names (a database restored
/// or replaced without its sidecar), naming the fix; otherwise `error`.
/// Costs one read of the database, on this failure path only.
fn explain_misfit(db: &Path, error: ApplyError) -> ApplyError {
    let (Ok(Some(state)), Ok(actual)) = (read_state(db), replica_checksum(db)) else { return error };
    if actual == state.checksum {
        return error;
    }
    tracing::warn!(db = %db.display(), %error, "the replica file does not match its sidecar");
    ApplyError::Replica(crate::replica::ReplicaError::Mismatch {
        db: db.to_path_buf(),
        sidecar: crate::replica::state_path(db),
        txid: state.txid,
        recorded: state.checksum,
        actual,
    })
}

/// The rolling checksum and page count of a SQLite database as SQLite sees
/// it (WAL included), read page by page in one read transaction.
pub fn database_checksum(db: &Path) -> Result<(Checksum, u32), ApplyError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(ApplyError::sqlite("open", db))?;
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
fn file_page_one_hash(db: &Path) -> Result<Option<u64>, ApplyError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(ApplyError::sqlite("open", db))?;
    let page: Option<Vec<u8>> = conn
        .query_row("SELECT data FROM sqlite_dbpage WHERE pgno = 1", [], |r| r.get(0))
        .optional()
        .map_err(ApplyError::sqlite("read", db))?;
    Ok(page.map(|page| page_hash(PageNo(1), &page)))
}

/// A replica's rolling checksum as compared with the primary's: the file's,
/// with the primary's page 1 (recorded in the sidecar) in place of the
/// file's own, whose change counter and version stamps SQLite rewrites on
/// every commit of page 1. Without a sidecar, the file's checksum.
pub fn replica_checksum(db: &Path) -> Result<Checksum, ApplyError> {
    let (checksum, _) = database_checksum(db)?;
    let logical = read_state(db)?.and_then(|state| state.page_one_hash);
    Ok(match (logical, file_page_one_hash(db)?) {
        (Some(logical), Some(file)) => Checksum(checksum.0 ^ file ^ logical.0),
        _ => checksum,
    })
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
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(ApplyError::sqlite("open", db))?;
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

/// How a restore goes.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The sync options (`keep_state` is ignored: a restore writes none).
    pub sync: SyncOptions,
    /// Replace an existing output.
    pub force: bool,
    /// The integrity check to run before the rename.
    pub integrity: IntegrityCheck,
}

/// Restores the database at `options.sync.target` into the new file `out`:
/// the chain written page by page into a temp file beside it
/// ([`write_new_database`]: each page once, no journal, no checkpoint),
/// checked, then renamed into place (and the folder fsynced). Killed part
/// way, the temp file is removed by the next restore to the same output.
pub async fn restore(store: Arc<dyn Store>, out: &Path, options: &RestoreOptions) -> Result<SyncSummary, ApplyError> {
    if out.exists() && !options.force && !options.sync.dry_run {
        return Err(ApplyError::Exists { path: out.to_path_buf() });
    }
    let started = Instant::now();
    let sync_options = SyncOptions { keep_state: false, ..options.sync.clone() };
    let source = store.url().to_string();
    let (plan, mut summary) = plan_sync(store.as_ref(), &source, out, &sync_options, None).await?;
    if sync_options.dry_run {
        return Ok(summary);
    }
    remove_abandoned(out, "restoring");
    let temp = temp_beside(out, "restoring");
    remove_database(&temp)?;
    let result = async {
        let new = write_new_database(store, &temp, &plan, &sync_options).await?;
        summary.reached(new.position, new.objects, new.bytes, new.page_one, started);
        integrity_check(&temp, options.integrity)?;
        // The check's connection leaves an empty WAL and its index beside
        // the temp file; the restored file needs neither (the first
        // connection to it creates its own), and after the rename their
        // names would match nothing.
        remove_empty_wal(&temp)?;
        if options.force {
            remove_database(out)?;
        }
        std::fs::rename(&temp, out).map_err(ApplyError::io("rename", out))?;
        crate::replica::sync_parent(out)?;
        Ok(summary)
    }
    .await;
    if result.is_err() {
        let _ = remove_database(&temp);
    }
    result
}

/// `db` with `suffix` appended to its file name (`app.db` → `app.db-wal`).
fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes the WAL and shared-memory files of a database nobody has open,
/// once its WAL is checkpointed (empty); a WAL with frames is an error.
fn remove_empty_wal(db: &Path) -> Result<(), ApplyError> {
    let wal = with_suffix(db, "-wal");
    match std::fs::metadata(&wal) {
        Ok(meta) if meta.len() > 0 => {
            return Err(ApplyError::Io {
                op: "finish",
                path: wal,
                source: std::io::Error::other("the WAL still holds frames after a TRUNCATE checkpoint"),
            });
        }
        Ok(_) => std::fs::remove_file(&wal).map_err(ApplyError::io("remove", &wal))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ApplyError::Io { op: "stat", path: wal, source }),
    }
    let shm = with_suffix(db, "-shm");
    match std::fs::remove_file(&shm) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ApplyError::Io { op: "remove", path: shm, source }),
    }
}

/// Removes a database and its WAL and shared-memory files, if present.
fn remove_database(db: &Path) -> Result<(), ApplyError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = with_suffix(db, suffix);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ApplyError::Io { op: "remove", path, source }),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Applying: one blocking thread, one SQLite write transaction at a time.

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
struct SqliteSink {
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
    /// (kept as they are until the sync ends: see [`sync_replica`]).
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
    fn open(db: &Path, plan: &Plan, options: &SyncOptions, source: &str) -> Result<SqliteSink, ApplyError> {
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
        if page_size != plan.page_size {
            return Err(ApplyError::Discontinuous {
                key: MANIFEST_KEY.to_string(),
                range: crate::format::TxRange { min_txid: TxId::ZERO, max_txid: plan.manifest_newest },
                reason: format!(
                    "the store's page size is {} but {} has pages of {page_size} bytes (move the replica away to rebuild it)",
                    plan.page_size,
                    db.display()
                ),
            });
        }
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
        let reader =
            Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(ApplyError::sqlite("open", db))?;
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

    fn state(&self, position: ReplicaPosition) -> ReplicaState {
        ReplicaState {
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

    fn finish_object(
        &mut self,
        header: &Header,
        written: Vec<(u32, u64)>,
        page_one: Option<Vec<u8>>,
    ) -> Result<(), ApplyError> {
        self.conn.execute_batch("RELEASE segment").map_err(self.sql("release a savepoint on"))?;
        if let Some(page) = page_one {
            self.page_one_hash = Some(page_hash(PageNo(1), &page));
            self.page_one = Some(page);
        }
        self.written.extend(written);
        self.size = header.commit;
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
