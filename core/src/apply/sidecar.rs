//! A replica's file and its sidecar, read together (native, `sqlite`
//! feature): whether the file may be synced from a store at all
//! ([`check_replica`]), where the replica is after a sync was killed around
//! a commit, why a segment did not fit it, and the record of a failed sync.
//!
//! A file that holds data and has no sidecar, or whose sidecar names
//! another store, is refused, never overwritten ([`remove_replica`] is how
//! a caller replaces it on purpose). A sidecar naming another *generation*
//! is not enough to refuse: a store starts a new generation when its
//! primary starts a new lineage, and its replicas then re-bootstrap; it is
//! refused only when it also names another store URL and the store does not
//! hold that generation.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::integrity::{as_replica, database_checksum, file_page_one_hash, replica_checksum};
use super::rename::{remove_database, with_suffix};
use super::{ApplyError, SyncSummary};
use crate::manifest::{Manifest, read_manifest, read_snapshot_index};
use crate::plan::ReplicaPosition;
use crate::replica::{
    ReplicaError, ReplicaSidecar, SyncFailure, read_state, recorded_source, remove_state, same_location, state_path,
    write_state,
};
use crate::store::Store;

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

pub(super) async fn check_replica_against(
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

/// The replica's position from its sidecar, checked against the database
/// when the sidecar says a commit was in progress. `None` when unknown.
pub(super) fn current_position(db: &Path) -> Result<Option<ReplicaPosition>, ApplyError> {
    let Some(state) = read_state(db)? else {
        return Ok(None);
    };
    let Some(pending) = state.pending else {
        return Ok(Some(state.position()));
    };
    // Killed around a commit: the database is at one of the two positions.
    let (file_checksum, _) = database_checksum(db)?;
    let file_page_one = file_page_one_hash(db)?;
    let checksum = as_replica(file_checksum, file_page_one, state.page_one_hash);
    let pending_checksum = as_replica(file_checksum, file_page_one, pending.page_one_hash);
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
            &ReplicaSidecar {
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
pub(super) fn explain_misfit(db: &Path, error: ApplyError) -> ApplyError {
    let (Ok(Some(state)), Ok(actual)) = (read_state(db), replica_checksum(db)) else { return error };
    if actual == state.checksum {
        return error;
    }
    tracing::warn!(db = %db.display(), %error, "the replica file does not match its sidecar");
    ApplyError::Replica(ReplicaError::Mismatch {
        db: db.to_path_buf(),
        sidecar: state_path(db),
        txid: state.txid,
        recorded: state.checksum,
        actual,
    })
}

/// Records the outcome of a sync of the replica `db` from `source` in its
/// sidecar: `synced_ms` moves only when the sync succeeded, a failure is
/// recorded as `last_failure` (time and error), and a file the sync refused
/// is not touched at all. Returns `result`.
pub(super) fn record_outcome(
    db: &Path,
    source: &str,
    result: Result<SyncSummary, ApplyError>,
) -> Result<SyncSummary, ApplyError> {
    match result {
        Ok(summary) => {
            // Even an idle sync confirms the replica is up to date.
            if let Some(state) = read_state(db)? {
                write_state(
                    db,
                    &ReplicaSidecar { synced_ms: crate::clock::now_ms(), source: recorded_source(source), ..state },
                )?;
            }
            Ok(summary)
        }
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
            &ReplicaSidecar {
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
