//! Bringing a SQLite file forward (native, `sqlite` feature): [`sync`],
//! [`sync_replica`] (which records the URL the replica follows) and
//! [`sync_replica_from`] (planned from a manifest the caller just read).
//!
//! A sync plans like every reader ([`prepare`]), then either writes a file
//! nobody has created yet whole and renames it into place (`rename.rs`, a
//! new replica's first sync), or brings a live replica forward through
//! SQLite (`sqlite.rs`). Before it writes a replica that keeps a sidecar,
//! it checks that the file is this store's replica, and it recovers the
//! replica's position after a crash (`sidecar.rs`); afterwards the sidecar
//! records whether the sync succeeded.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::file::NewDatabase;
use super::prepare::prepare;
use super::rename::{with_suffix, write_and_rename};
use super::run::{Order, apply_in_order, apply_plan};
use super::sidecar::{check_replica_against, current_position, explain_misfit, record_outcome};
use super::sqlite::SqliteSink;
use super::{ApplyError, SyncOptions, SyncSummary};
use crate::checksum::page_hash;
use crate::ids::{Checksum, PageNo};
use crate::manifest::Manifest;
use crate::plan::{Base, Plan};
use crate::replica::{ReplicaSidecar, STATE_FORMAT_VERSION, recorded_source, write_state};
use crate::store::Store;

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
/// this store's replica or empty ([`check_replica`](super::check_replica)),
/// and the sidecar records the outcome: `synced_ms` moves only when the
/// sync succeeded, a failure is recorded as `last_failure` (time and error).
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
    let started = Instant::now();
    let result = match plan_sync(store.as_ref(), source, db, options, manifest).await {
        Ok((plan, summary)) if !options.dry_run => {
            apply_planned(store, source, db, options, &plan, summary, started).await
        }
        planned => planned.map(|(_, summary)| summary),
    };
    if !options.keep_state || options.dry_run {
        return result;
    }
    record_outcome(db, source, result)
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
    prepare(store, known, options.target, async |manifest: &Manifest| {
        if !options.keep_state {
            return Ok(None);
        }
        check_replica_against(store, source, db, Some(manifest)).await?;
        if db.exists() { current_position(db) } else { Ok(None) }
    })
    .await
}

/// Applies `plan` (planned for `db` in `summary`, at `started`): the whole
/// of a sync once planned.
async fn apply_planned(
    store: Arc<dyn Store>,
    source: &str,
    db: &Path,
    options: &SyncOptions,
    plan: &Plan,
    mut summary: SyncSummary,
    started: Instant,
) -> Result<SyncSummary, ApplyError> {
    let source = recorded_source(source);
    if is_new_database(db) {
        // Nobody has the file open yet: write it whole and rename it in.
        let new = sync_new_file(store, db, plan, options, &source).await?;
        summary.reached(new.position, new.objects, new.bytes, new.page_one, started);
        return Ok(summary);
    }
    let apply = {
        let (db, plan, options) = (db.to_path_buf(), plan.clone(), options.clone());
        move |applying| apply_in_order(SqliteSink::open(&db, &plan, &options, &source)?, &plan, &options, applying)
    };
    let outcome = match apply_plan(store, plan, options, Order::Chain, apply).await {
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
    write_and_rename(store, db, "syncing", plan, options, |_, new| {
        if !options.keep_state {
            return Ok(());
        }
        let state = ReplicaSidecar {
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
        Ok(())
    })
    .await
}
