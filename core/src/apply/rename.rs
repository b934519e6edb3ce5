//! Putting a new database file in place (native, `sqlite` feature), and the
//! files that go with a database by name.
//!
//! A file nobody has open yet (every restore, a new replica's first sync)
//! is written whole into a temp file beside its destination, named
//! `.{name}.{what}-{pid}`, then renamed over the destination and the folder
//! fsynced ([`write_and_rename`]): readers find no file or the whole one.
//! Killed before the rename, the temp file is removed by the next run to the
//! same destination ([`remove_abandoned`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{NewDatabase, write_new_database};
use super::{ApplyError, SyncOptions};
use crate::plan::Plan;
use crate::store::Store;

/// Writes `plan`'s chain from `store` as a new database into a temp file
/// beside `dest` (named for `what`: "restoring", "syncing"), hands the temp
/// file and what it holds to `before_rename` (checks, a sidecar), then
/// renames it to `dest` and fsyncs the folder. On error the temp file is
/// removed.
pub(super) async fn write_and_rename(
    store: Arc<dyn Store>,
    dest: &Path,
    what: &str,
    plan: &Plan,
    options: &SyncOptions,
    before_rename: impl FnOnce(&Path, &NewDatabase) -> Result<(), ApplyError>,
) -> Result<NewDatabase, ApplyError> {
    remove_abandoned(dest, what);
    let temp = temp_beside(dest, what);
    remove_database(&temp)?;
    let result = async {
        let new = write_new_database(store, &temp, plan, options).await?;
        before_rename(&temp, &new)?;
        std::fs::rename(&temp, dest).map_err(ApplyError::io("rename", dest))?;
        crate::replica::sync_parent(dest)?;
        Ok(new)
    }
    .await;
    if result.is_err() {
        let _ = remove_database(&temp);
    }
    result
}

/// `.{name}.{what}-{pid}` beside `db`: where a run writes a new file
/// before renaming it into place.
fn temp_beside(db: &Path, what: &str) -> PathBuf {
    let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "database".into());
    db.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// Temp files of runs killed before they renamed their output: names
/// `.{name}.{what}-{pid}` (and their `-wal`/`-shm`) beside `out` whose
/// process is gone. Removed so a kill -9 leaves nothing behind for long.
fn remove_abandoned(out: &Path, what: &str) {
    // Whether a process is alive is read from /proc; without it, keep all.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let (Some(dir), Some(name)) = (out.parent(), out.file_name()) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!(".{}.{what}-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else { continue };
        let pid = rest.trim_end_matches("-wal").trim_end_matches("-shm");
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(file = %entry.path().display(), "removing the temp file of a run that was killed");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes a database and its WAL and shared-memory files, if present.
pub(super) fn remove_database(db: &Path) -> Result<(), ApplyError> {
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

/// `db` with `suffix` appended to its file name (`app.db` → `app.db-wal`).
pub(super) fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}
