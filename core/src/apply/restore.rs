//! `distributary restore` (native, `sqlite` feature): the database at a
//! chosen point written into a new file, checked, then renamed into place.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::integrity::{IntegrityCheck, integrity_check};
use super::prepare::prepare;
use super::rename::{remove_database, with_suffix, write_and_rename};
use super::{ApplyError, SyncOptions, SyncSummary};
use crate::store::Store;

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
/// the chain written page by page into a temp file beside it (each page
/// once, no journal, no checkpoint), checked, then renamed into place (and
/// the folder fsynced) by [`write_and_rename`]. Killed part way, the temp
/// file is removed by the next restore to the same output.
pub async fn restore(store: Arc<dyn Store>, out: &Path, options: &RestoreOptions) -> Result<SyncSummary, ApplyError> {
    if out.exists() && !options.force && !options.sync.dry_run {
        return Err(ApplyError::Exists { path: out.to_path_buf() });
    }
    let started = Instant::now();
    let sync_options = SyncOptions { keep_state: false, ..options.sync.clone() };
    // A new file has no position: the chain starts from a snapshot.
    let (plan, mut summary) = prepare(store.as_ref(), None, sync_options.target, async |_: &_| Ok(None)).await?;
    if sync_options.dry_run {
        return Ok(summary);
    }
    let new = write_and_rename(store, out, "restoring", &plan, &sync_options, |temp, new| {
        // The time taken is the writing's; the checks below are not counted.
        summary.reached(new.position, new.objects, new.bytes, None, started);
        integrity_check(temp, options.integrity)?;
        // The check's connection leaves an empty WAL and its index beside
        // the temp file; the restored file needs neither (the first
        // connection to it creates its own), and after the rename their
        // names would match nothing.
        remove_empty_wal(temp)?;
        if options.force {
            remove_database(out)?;
        }
        Ok(())
    })
    .await?;
    summary.page_one = new.page_one;
    Ok(summary)
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
