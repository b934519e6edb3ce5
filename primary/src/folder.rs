//! A folder of databases (`replicate --dir`, Litestream 0.5's `dbs[].dir`):
//! every file whose name matches the pattern is replicated to its own
//! prefix of each store (its path below the folder), databases created
//! while running are picked up at the next scan (one sync interval), and
//! removed ones are flushed and stopped. A matching file that is not a
//! SQLite database in WAL mode is reported once and skipped; it is looked
//! at again at every scan, and picked up once it is one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use distributary_core::store::{PrefixedStore, child_url};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::metrics::Metrics;
use crate::replicator::fleet::Change;
use crate::replicator::open::Opening;
use crate::replicator::{CheckpointPolicy, ReplicaSpec, Replicator};

/// Databases of a folder started at once: each start scans the database
/// and asks its stores, so a thousand found together would otherwise hold
/// hundreds of blocking threads (and their memory) at the same moment.
const STARTS_AT_ONCE: usize = 4;

/// What the watcher needs to start a database of the folder.
pub struct FolderWatch {
    /// The folder.
    pub dir: PathBuf,
    /// Which file names are databases (`*`, `?`, `[a-z]`, as Litestream's
    /// `pattern`).
    pub pattern: String,
    /// Whether subfolders are scanned too.
    pub recursive: bool,
    /// Whether the folder is scanned again after the start (Litestream's
    /// `watch`); without it the databases found at the start are all.
    pub watch: bool,
    /// The folder's stores: each database gets the prefix of its path
    /// below the folder in each.
    pub replicas: Vec<ReplicaSpec>,
    pub policy: CheckpointPolicy,
    pub spill_bytes: u64,
    /// How often the folder is scanned.
    pub interval: Duration,
    /// `compaction: local`: each database's prefix is compacted in this
    /// process, from its start until it goes away.
    pub local: Option<(distributary_core::compact::CompactConfig, Duration)>,
}

/// Where a database of the folder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Started {
    /// Its start task is opening it.
    Opening,
    /// It was handed to the fleet.
    Added,
    /// Its file went away before its start reported: the fleet is told to
    /// remove it once it has it.
    GoneWhileOpening,
}

/// Scans `watch.dir` every interval until `shutdown`, sending a
/// [`Change`] for each database that appears or goes away.
pub async fn watch(
    folder: FolderWatch,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    changes: mpsc::UnboundedSender<Change>,
) -> Result<()> {
    let mut running = BTreeMap::<PathBuf, Started>::new();
    // Each database's start task, which runs its local compactors after
    // the start; told to stop when the database goes away.
    let mut compacting = BTreeMap::<PathBuf, watch::Sender<bool>>::new();
    let mut compactors = Vec::new();
    // Why each matching file is not replicated: said once (again only if
    // the reason changes); the file is looked at again at every scan.
    let mut skipped = BTreeMap::<PathBuf, String>::new();
    // Databases being opened report back here: a failure is retried at
    // the next scan.
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<(PathBuf, Result<()>)>();
    let mut first = true;
    let starts = Arc::new(Semaphore::new(STARTS_AT_ONCE));
    tracing::info!(dir = %folder.dir.display(), pattern = %folder.pattern, recursive = folder.recursive, "watching a folder of databases");
    loop {
        while let Ok((path, result)) = opened_rx.try_recv() {
            let gone = running.get(&path) == Some(&Started::GoneWhileOpening);
            match result {
                // Its Add went into the channel before this report: the
                // Remove comes after it.
                Ok(()) if gone => {
                    running.remove(&path);
                    let _ = changes.send(Change::Remove(path));
                }
                Ok(()) => {
                    running.insert(path, Started::Added);
                }
                Err(e) => {
                    if !gone {
                        tracing::error!(db = %path.display(), error = %format!("{e:#}"), "could not start replicating; trying again at the next scan");
                    }
                    running.remove(&path);
                }
            }
        }
        if first || folder.watch {
            let found = scan(&folder.dir, &folder.pattern, folder.recursive)
                .with_context(|| format!("scan the folder {}", folder.dir.display()));
            match found {
                Ok(found) => {
                    let gone: Vec<PathBuf> = running.keys().filter(|p| !found.contains(*p)).cloned().collect();
                    for gone in gone {
                        if let Some(stop) = compacting.remove(&gone) {
                            let _ = stop.send(true);
                        }
                        match running.get(&gone) {
                            // Still opening: removed once its start reports.
                            Some(Started::Opening) => {
                                running.insert(gone, Started::GoneWhileOpening);
                            }
                            Some(Started::Added) => {
                                running.remove(&gone);
                                let _ = changes.send(Change::Remove(gone));
                            }
                            _ => {}
                        }
                    }
                    skipped.retain(|path, _| found.contains(path));
                    let new: Vec<PathBuf> = found.iter().filter(|p| !running.contains_key(*p)).cloned().collect();
                    for path in new {
                        match readiness(&path) {
                            Readiness::NotYet => continue,
                            Readiness::Refused(reason) => {
                                if skipped.get(&path) != Some(&reason) {
                                    tracing::warn!(db = %path.display(), "skipped: {reason}");
                                    skipped.insert(path, reason);
                                }
                                continue;
                            }
                            Readiness::Ready => {}
                        }
                        skipped.remove(&path);
                        running.insert(path.clone(), Started::Opening);
                        let (stop_compacting, compactor_stop) = watch::channel(false);
                        compacting.insert(path.clone(), stop_compacting);
                        let opening = Opening { shutdown: shutdown.clone(), wait_for_db: false, bound: None };
                        let tasks = Tasks { changes: &changes, opened: &opened_tx, starts: &starts, compactor_stop };
                        compactors.push(start(&folder, path, &metrics, opening, tasks)?);
                    }
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "folder scan failed; trying again"),
            }
            first = false;
        }
        compactors.retain(|task: &tokio::task::JoinHandle<()>| !task.is_finished());
        tokio::select! {
            _ = tokio::time::sleep(folder.interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    // A compaction pass in progress finishes.
    for stop in compacting.values() {
        let _ = stop.send(true);
    }
    for compactor in compactors {
        let _ = compactor.await;
    }
    Ok(())
}

/// Where a start task reports, and what stops its compactors.
struct Tasks<'a> {
    changes: &'a mpsc::UnboundedSender<Change>,
    opened: &'a mpsc::UnboundedSender<(PathBuf, Result<()>)>,
    starts: &'a Arc<Semaphore>,
    compactor_stop: watch::Receiver<bool>,
}

/// Opens the replicator of `path` in a task of its own (a store that is
/// slow to answer holds up no other database; at most [`STARTS_AT_ONCE`]
/// at a time) and hands it to the fleet; then, with `compaction: local`,
/// compacts each of its prefixes until `tasks.compactor_stop`.
fn start(
    folder: &FolderWatch,
    path: PathBuf,
    metrics: &Arc<Metrics>,
    opening: Opening,
    tasks: Tasks<'_>,
) -> Result<tokio::task::JoinHandle<()>> {
    let replicas = replicas_of(&folder.dir, &path, &folder.replicas)?;
    let (policy, spill_bytes, local) = (folder.policy, folder.spill_bytes, folder.local.clone());
    let (metrics, changes, opened) = (metrics.clone(), tasks.changes.clone(), tasks.opened.clone());
    let compaction = metrics.compaction();
    let (starts, stop) = (tasks.starts.clone(), tasks.compactor_stop);
    Ok(tokio::spawn(async move {
        let turn = starts.acquire_owned().await.expect("the semaphore is never closed");
        let opened_replicator = Replicator::open(&path, &replicas, policy, metrics, &opening).await;
        drop(turn);
        let started = opened_replicator.is_ok();
        let result = opened_replicator.map(|mut replicator| {
            replicator.set_spill_bytes(spill_bytes);
            tracing::info!(db = %path.display(), "replicating a database of the folder");
            let _ = changes.send(Change::Add(Box::new(replicator)));
        });
        let _ = opened.send((path, result));
        // Compacted once its first segments are in the store.
        if let (true, Some((config, interval))) = (started, local) {
            let compactors: Vec<_> = replicas
                .iter()
                .map(|replica| {
                    let metrics = compaction.clone();
                    crate::compact::spawn_watch(replica.store.clone(), config.clone(), interval, stop.clone(), metrics)
                })
                .collect();
            for compactor in compactors {
                let _ = compactor.await;
            }
        }
    }))
}

/// The stores of the database at `path` in the folder `dir`: each of the
/// folder's stores under the prefix of its path below the folder.
pub fn replicas_of(dir: &Path, path: &Path, replicas: &[ReplicaSpec]) -> Result<Vec<ReplicaSpec>> {
    let relative = relative_key(dir, path)?;
    Ok(replicas
        .iter()
        .map(|spec| ReplicaSpec {
            url: child_url(&spec.url, &relative),
            store: Arc::new(PrefixedStore::new(spec.store.clone(), &relative)),
            ..spec.clone()
        })
        .collect())
}

enum Readiness {
    Ready,
    /// Being created: nothing to report.
    NotYet,
    Refused(String),
}

/// Whether the file at `path` is a SQLite database in WAL mode, from its
/// header alone (opening it would create its WAL and index files).
fn readiness(path: &Path) -> Readiness {
    use std::io::Read;
    let mut header = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut header));
    match read {
        Err(e) => Readiness::Refused(format!("cannot be read: {e}")),
        // An app creating it has not written its first page yet.
        Ok(n) if n < header.len() => Readiness::NotYet,
        Ok(_) if &header[..16] != b"SQLite format 3\0" => {
            Readiness::Refused("not a SQLite database (change the pattern to leave it out)".into())
        }
        // Bytes 18 and 19: the file format's write and read versions, 2 in WAL mode.
        Ok(_) if header[18] != 2 || header[19] != 2 => Readiness::Refused(
            "not in WAL mode: run `PRAGMA journal_mode=WAL;` on it once (the setting persists); it is picked up \
             at the next scan"
                .into(),
        ),
        Ok(_) => Readiness::Ready,
    }
}

/// The files below `dir` whose names match `pattern`, leaving out SQLite's
/// own files (`-wal`, `-shm`, `-journal`) and our metadata folders.
pub fn scan(dir: &Path, pattern: &str, recursive: bool) -> Result<BTreeSet<PathBuf>> {
    let mut found = BTreeSet::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            // A subfolder removed during the scan.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && folder != dir => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", folder.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("read {}", folder.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if recursive && !name.ends_with(crate::state::FOLDER_SUFFIX) {
                    folders.push(entry.path());
                }
                continue;
            }
            let sqlite_own = ["-wal", "-shm", "-journal"].iter().any(|suffix| name.ends_with(suffix));
            if kind.is_file() && !sqlite_own && glob_match(pattern, name) {
                found.insert(entry.path());
            }
        }
    }
    Ok(found)
}

/// Whether `name` matches a shell pattern as Go's `filepath.Match` reads
/// it (Litestream's `pattern`): `*` any run of characters, `?` one,
/// `[abc]`, `[a-z]` and `[^a-z]` classes, `\` quoting the next character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|skip| match_from(&p[1..], &n[skip..])),
        Some(_) if n.is_empty() => false,
        Some('?') => match_from(&p[1..], &n[1..]),
        Some('[') => match class(&p[1..], n[0]) {
            Some((true, rest)) => match_from(rest, &n[1..]),
            _ => false,
        },
        Some('\\') if p.len() > 1 => p[1] == n[0] && match_from(&p[2..], &n[1..]),
        Some(c) => *c == n[0] && match_from(&p[1..], &n[1..]),
    }
}

/// Matches `c` against the class that `p` starts inside of (after `[`);
/// returns whether it matched and the pattern after `]`, or `None` for a
/// class with no end (which matches nothing).
fn class(p: &[char], c: char) -> Option<(bool, &[char])> {
    let (negated, mut i) = match p.first() {
        Some('^' | '!') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negated, &p[i + 1..]));
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            lo
        };
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&hi| hi != ']') {
            let hi = p[i + 1];
            matched |= lo <= c && c <= hi;
            i += 2;
        } else {
            matched |= lo == c;
        }
    }
}

/// The store key prefix of a database below the folder: its relative path
/// with `/` separators.
fn relative_key(dir: &Path, path: &Path) -> Result<String> {
    let relative = path.strip_prefix(dir).with_context(|| format!("{} is not in {}", path.display(), dir.display()))?;
    let parts: Vec<&str> =
        relative.iter().map(|p| p.to_str().context("a file name that is not UTF-8")).collect::<Result<_>>()?;
    let key = parts.join("/");
    distributary_core::store::validate_key(&key)
        .with_context(|| format!("{} cannot name a store prefix (rename it)", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_litestream_reads_them() {
        assert!(glob_match("*.db", "app.db"));
        assert!(!glob_match("*.db", "app.db-wal"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("tenant-?.db", "tenant-7.db"));
        assert!(!glob_match("tenant-?.db", "tenant-17.db"));
        assert!(glob_match("[a-c]*.sqlite", "b1.sqlite"));
        assert!(!glob_match("[^a-c]*.sqlite", "b1.sqlite"));
        assert!(glob_match("[!a-c]*.sqlite", "d1.sqlite"));
        assert!(glob_match("\\*.db", "*.db"));
        assert!(!glob_match("\\*.db", "a.db"));
        assert!(!glob_match("[a-c", "a"));
    }

    #[test]
    fn each_database_gets_its_path_below_the_folder_as_prefix() {
        let dir = Path::new("/data");
        assert_eq!(relative_key(dir, Path::new("/data/t1/app.db")).unwrap(), "t1/app.db");
        assert!(relative_key(dir, Path::new("/data/.hidden/app.db")).is_err());
    }

    #[test]
    fn a_scan_finds_matching_databases_and_leaves_out_sqlite_files_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.db", "a.db-wal", "a.db-shm", "b.db", "notes.txt", "sub/c.db", "a.db-distributary/state.db"] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        let names = |recursive| -> Vec<String> {
            scan(dir.path(), "*.db", recursive)
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names(false), ["a.db", "b.db"]);
        assert_eq!(names(true), ["a.db", "b.db", "sub/c.db"]);
    }

    #[test]
    fn files_that_are_not_wal_databases_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("new.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(readiness(&empty), Readiness::NotYet));
        let text = dir.path().join("text.db");
        std::fs::write(&text, "not a database at all, just text").unwrap();
        assert!(matches!(readiness(&text), Readiness::Refused(r) if r.contains("not a SQLite database")));
        let rollback = dir.path().join("rollback.db");
        rusqlite::Connection::open(&rollback).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        assert!(matches!(readiness(&rollback), Readiness::Refused(r) if r.contains("journal_mode=WAL")));
        let wal = dir.path().join("wal.db");
        rusqlite::Connection::open(&wal).unwrap().execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)").unwrap();
        assert!(matches!(readiness(&wal), Readiness::Ready));
    }
}
