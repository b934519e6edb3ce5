//! Stepping a [`Replicator`] against a temporary SQLite file and the
//! memory store, without sleeps.

use super::*;
use crate::wal;
use distributary_core::checksum::page_hash;
use distributary_core::retry::RetryBound;
use distributary_core::store::MemoryStore;
use distributary_core::{GenerationId, PageNo};
use rusqlite::Connection;

/// A replicator of a new database whose app checkpoints only when told.
fn start(dir: &Path) -> (Connection, Replicator, Arc<Metrics>) {
    let db = dir.join("app.db");
    let app = Connection::open(&db).unwrap();
    app.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    app.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);").unwrap();
    let spec = ReplicaSpec {
        url: "memory://a".into(),
        store: Arc::new(MemoryStore::new()),
        sync_interval: std::time::Duration::from_secs(1),
        key: None,
        compression: Compression::default(),
    };
    let metrics = Arc::new(Metrics::default());
    let starts = [Start::Plan(StartPlan::NewGeneration(GenerationId::new(1).unwrap()))];
    let replicator = Replicator::start(&db, &[spec], &starts, CheckpointPolicy::default(), metrics.clone()).unwrap();
    (app, replicator, metrics)
}

/// [`start`], then ten commits captured: a later tail starts past the
/// frames a new WAL's first commits take.
fn start_past_ten_commits(dir: &Path) -> (Connection, Replicator, Arc<Metrics>) {
    let (app, mut replicator, metrics) = start(dir);
    for _ in 0..10 {
        commit(&app);
    }
    replicator.capture_pass().unwrap();
    (app, replicator, metrics)
}

fn commit(app: &Connection) {
    app.execute("INSERT INTO t VALUES (randomblob(3000))", []).unwrap();
}

fn restart_wal(app: &Connection) {
    app.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
    commit(app); // the first commit after a complete checkpoint restarts the WAL
}

/// What a checkpoint window lets happen while the replicator holds no
/// read mark: a commit into the old WAL's tail, then `restarts` restarts
/// of the WAL, each with one commit.
fn window(app: &Connection, replicator: &mut Replicator, restarts: usize) {
    replicator.source.end_read().unwrap();
    commit(app);
    for _ in 0..restarts {
        restart_wal(app);
    }
    replicator.source.begin_read().unwrap();
}

#[test]
fn one_restart_during_a_window_captures_the_old_tail_and_the_new_wal_one_txid_each() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start(dir.path());
    for _ in 0..10 {
        commit(&app); // the tail starts past the frames the new WAL gets
    }
    replicator.capture_pass().unwrap();
    let before = replicator.captured()[0];
    window(&app, &mut replicator, 1);
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 0);
    assert_eq!(replicator.captured()[0].0, before.0 + 2, "the tail's commit and the new WAL's");
}

/// A window in which the app commits a tail, restarts the WAL and fills
/// the new WAL with one-frame commits until it holds exactly the frames
/// before the tail's first. Returns the tail's first frame and how many
/// one-frame commits the app made.
fn new_wal_up_to_the_tail(app: &Connection, replicator: &mut Replicator) -> (u64, u64) {
    let tail_start = replicator.capture.wal.unwrap().frame;
    replicator.source.end_read().unwrap();
    commit(app); // the tail
    restart_wal(app);
    let wal_path = wal::wal_path(replicator.db_path());
    let mut commits = 0;
    while committed_frames(&wal_path) < tail_start {
        // One frame each: the same leaf page again.
        app.execute("UPDATE t SET x = randomblob(3000) WHERE rowid = 1", []).unwrap();
        commits += 1;
    }
    assert_eq!(committed_frames(&wal_path), tail_start, "the new WAL stops right before the tail");
    (tail_start, commits)
}

/// Regression (crash matrix, a replica's B-tree broken): while the tail
/// was read, the app was writing the new WAL's frame at the tail's first
/// frame; read torn, it ended the tail there, and the tail's commits
/// were lost. SQLite writes a frame's header before its page, so the
/// file then holds the new WAL's salts in that frame's header and a page
/// half written.
#[test]
fn a_tail_whose_first_frame_the_new_wal_is_writing_is_caught_up_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start_past_ten_commits(dir.path());
    let (tail_start, _) = new_wal_up_to_the_tail(&app, &mut replicator);
    let wal_path = wal::wal_path(replicator.db_path());
    let header = wal::read_header(&wal_path).unwrap().unwrap();
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(&wal_path).unwrap();
    let frame = header.frame_offset(tail_start);
    let salts = [header.salt1.to_be_bytes(), header.salt2.to_be_bytes()].concat();
    file.write_all_at(&salts, frame + 8).unwrap();
    file.write_all_at(&[0xA5; 64], frame + wal::FRAME_HEADER_SIZE).unwrap();
    replicator.source.begin_read().unwrap();
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 1, "a tail whose first frame the new WAL reached is not proven whole");
    assert_capture_is_the_database(&mut replicator);
}

/// A new WAL that holds every frame before the tail's first but not that
/// one has overwritten none of the tail (regression: a replicator slowed
/// by a busy machine found the new WAL that far, took the tail for
/// overwritten and caught up, merging the tail's commits into one TXID).
#[test]
fn a_tail_the_new_wal_reached_but_did_not_enter_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start_past_ten_commits(dir.path());
    let before = replicator.captured()[0];
    let (_, updates) = new_wal_up_to_the_tail(&app, &mut replicator);
    replicator.source.begin_read().unwrap();
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 0);
    // The tail's commit, the restarting commit, then the updates.
    assert_eq!(replicator.captured()[0].0, before.0 + 2 + updates, "one TXID per commit");
    assert_capture_is_the_database(&mut replicator);
}

/// Regression (soak and pipeline tests, a snapshot "malformed"): the
/// app ran `wal_checkpoint(TRUNCATE)` during a window, after a commit
/// into the old WAL's tail. The WAL file was cut to zero bytes, the
/// tail scan met the end of the file at once and took it for the
/// tail's end: the tail's commit was in no TXID.
#[test]
fn a_tail_the_app_truncated_away_during_a_window_is_caught_up_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start_past_ten_commits(dir.path());
    replicator.source.end_read().unwrap();
    commit(&app); // the tail
    app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    commit(&app); // the new WAL, shorter than the cursor
    replicator.source.begin_read().unwrap();
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 1, "a tail cut off with the file is not an empty tail");
    assert_capture_is_the_database(&mut replicator);
}

/// The same with `journal_size_limit`: SQLite cuts the WAL file to the
/// limit at the new WAL's first commit, in the middle of the old tail.
#[test]
fn a_tail_cut_short_by_journal_size_limit_is_caught_up_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start_past_ten_commits(dir.path());
    let wal_path = wal::wal_path(replicator.db_path());
    let cursor_bytes = std::fs::metadata(&wal_path).unwrap().len();
    replicator.source.end_read().unwrap();
    for _ in 0..10 {
        commit(&app); // the tail, past the limit below
    }
    // Past the cursor, inside the tail, not on a frame's boundary.
    app.query_row(&format!("PRAGMA journal_size_limit = {}", cursor_bytes + 5_000), [], |_| Ok(())).unwrap();
    restart_wal(&app);
    assert_eq!(std::fs::metadata(&wal_path).unwrap().len(), cursor_bytes + 5_000, "cut inside the tail");
    replicator.source.begin_read().unwrap();
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 1, "a tail cut short with the file is not proven whole");
    assert_capture_is_the_database(&mut replicator);
}

/// The frames up to the WAL's last commit.
fn committed_frames(wal_path: &Path) -> u64 {
    let header = wal::read_header(wal_path).unwrap().unwrap();
    let scan = wal::scan_transactions(wal_path, &header, header.start(), u64::MAX).unwrap();
    scan.transactions.last().map_or(0, |t| t.end.frame)
}

/// The captured state's checksum is the database's, scanned now.
fn assert_capture_is_the_database(replicator: &mut Replicator) {
    let mut scanned = PageHashes::empty();
    let pages = replicator.source.for_each_page(|pgno, page| {
        scanned.resize(pgno);
        scanned.set(pgno, page_hash(PageNo(pgno), page));
        Ok(())
    });
    assert_eq!(pages.unwrap(), replicator.capture.commit);
    assert_eq!(scanned.checksum(), replicator.capture.checksum);
}

/// Regression: a WAL that came and went during a window (two restarts)
/// was skipped without a word, its commits in no TXID.
#[test]
fn two_restarts_during_a_window_are_caught_up_never_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start(dir.path());
    commit(&app);
    replicator.capture_pass().unwrap();
    window(&app, &mut replicator, 2);
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 1, "the middle WAL's commit is in no frame left to read");
    assert_capture_is_the_database(&mut replicator);
}

/// Regression (the window stress test with the app's TRUNCATE beside it
/// stalled, the store short of the database until the app's next commit):
/// after a window the replicator held read mark 0 on a WAL the app had
/// copied whole, commits past the cursor included; the app's TRUNCATE
/// succeeds beside such a reader and empties the file, and an empty file
/// looked like nothing to capture.
#[test]
fn a_wal_cut_to_nothing_past_the_cursor_is_caught_up_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start_past_ten_commits(dir.path());
    replicator.source.end_read().unwrap();
    commit(&app); // past the cursor
    app.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
    replicator.source.begin_read().unwrap(); // read mark 0: everything is copied
    let (busy, _, _): (i64, i64, i64) =
        app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!(busy, 0, "TRUNCATE completes beside a reader on read mark 0");
    assert_eq!(std::fs::metadata(wal::wal_path(replicator.db_path())).unwrap().len(), 0);
    replicator.capture_pass().unwrap();
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 1, "the commit cut with the file is caught up without waiting for another");
    assert_capture_is_the_database(&mut replicator);
}

/// A replicator of a new database with one store, `store`, started (or
/// resumed) as the metadata folder says.
fn open(db: &Path, store: &Arc<MemoryStore>) -> (Replicator, Arc<Metrics>) {
    let spec = ReplicaSpec {
        url: "memory://a".into(),
        store: store.clone(),
        sync_interval: Duration::from_millis(100),
        key: None,
        compression: Compression::default(),
    };
    let metrics = Arc::new(Metrics::default());
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let opening = open::Opening { shutdown, wait_for_db: false, bound: Some(bound()) };
    let replicator = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(Replicator::open(
            db,
            &[spec],
            CheckpointPolicy::default(),
            metrics.clone(),
            &opening,
        ))
    })
    .unwrap();
    (replicator, metrics)
}

fn bound() -> RetryBound {
    RetryBound { give_up_after: Duration::from_secs(5) }
}

fn app_db(dir: &Path) -> (std::path::PathBuf, Connection) {
    let db = dir.join("app.db");
    let app = Connection::open(&db).unwrap();
    app.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    app.execute_batch("CREATE TABLE t(x);").unwrap();
    (db, app)
}

/// The newest TXID in the store and the database checksum there.
async fn store_chain(store: &MemoryStore) -> (TxId, Checksum) {
    let manifest = distributary_core::manifest::read_manifest(store).await.unwrap().unwrap().value;
    let newest = distributary_core::plan::probe_newest(store, &manifest).await.unwrap();
    (newest.txid, newest.checksum)
}

/// The metadata's record of the store: (captured, shipped).
fn recorded(db: &Path) -> (TxId, TxId) {
    let replicas = StateDir::open(db).unwrap().replicas().unwrap();
    (replicas[0].captured_txid, replicas[0].shipped_txid)
}

fn pending_segments(replicator: &Replicator) -> usize {
    std::fs::read_dir(replicator.stores[0].queue.dir())
        .map_or(0, |entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".seg")).count())
}

/// The WAL is the buffer: a capture stays in memory (no segment file), the
/// metadata records it only once the store acknowledged it, and a
/// replicator dropped before that (a `kill -9`) loses nothing: the next
/// one captures the same transactions again from the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_stay_in_memory_until_the_store_has_them_and_a_drop_before_that_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = app_db(dir.path());
    let store = Arc::new(MemoryStore::new());
    let (mut replicator, _) = open(&db, &store);
    replicator.sync_once(bound()).await.unwrap();
    assert_eq!(store_chain(&store).await.0, TxId(1), "the genesis snapshot");
    for _ in 0..5 {
        commit(&app);
    }
    let before = recorded(&db);
    tokio::task::block_in_place(|| replicator.capture_pass()).unwrap();
    assert_eq!(replicator.stores()[0].captured(), TxId(6));
    assert_eq!(pending_segments(&replicator), 0, "the capture is in memory only");
    assert_eq!(recorded(&db), before, "nothing is recorded before the store has it");
    drop(replicator); // as a kill -9 would: the capture is lost with the process

    let (mut replicator, metrics) = open(&db, &store);
    assert_eq!(replicator.stores()[0].captured(), TxId(6), "captured again from the WAL");
    assert_eq!(metrics.catch_ups(), 0);
    for (_, txid) in replicator.sync_once(bound()).await.unwrap() {
        assert_eq!(txid, TxId(6));
    }
    assert_eq!(recorded(&db), (TxId(6), TxId(6)), "recorded once the store acknowledged it");
    assert_eq!(store_chain(&store).await.1, replicator.capture.checksum);
    assert_eq!(pending_segments(&replicator), 0);
}

/// A store that does not take uploads (here: none is attempted) keeps its
/// segments in memory up to the spill bound, then they go to its pending
/// folder and the metadata records the capture; a restart ships them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_past_the_memory_bound_are_spilled_recorded_and_shipped_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = app_db(dir.path());
    let store = Arc::new(MemoryStore::new());
    let (mut replicator, _) = open(&db, &store);
    replicator.sync_once(bound()).await.unwrap();
    replicator.set_spill_bytes(20_000);
    let mut spilled_at = None;
    for round in 1..=20 {
        commit(&app);
        tokio::task::block_in_place(|| replicator.capture_pass()).unwrap();
        if spilled_at.is_none() && pending_segments(&replicator) > 0 {
            spilled_at = Some(round);
        }
    }
    let spilled_at = spilled_at.expect("3 KB pages pass a 20 KB bound within 20 commits");
    assert!(spilled_at > 1, "the first captures stay in memory");
    let (captured, shipped) = recorded(&db);
    assert!(captured.0 > 1 + spilled_at as u64 - 1 && shipped == TxId(1), "{captured} {shipped}");
    drop(replicator);

    let (mut replicator, metrics) = open(&db, &store);
    replicator.sync_once(bound()).await.unwrap();
    assert_eq!(metrics.catch_ups(), 0);
    assert_eq!(store_chain(&store).await, (TxId(21), replicator.capture.checksum), "one TXID per commit");
    assert_eq!(pending_segments(&replicator), 0, "shipped files are removed");
}

/// A store ahead of the metadata (an upload acknowledged, the process
/// killed before it was recorded) is continued from its newest TXID with
/// a full catch-up: never a second object for the same TXIDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_ahead_of_the_metadata_is_continued_from_its_newest_txid() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = app_db(dir.path());
    let store = Arc::new(MemoryStore::new());
    let (mut replicator, _) = open(&db, &store);
    replicator.sync_once(bound()).await.unwrap();
    commit(&app);
    let metadata = StateDir::path_for(&db);
    let earlier = dir.path().join("earlier");
    copy_dir(&metadata, &earlier);
    replicator.sync_once(bound()).await.unwrap();
    drop(replicator);
    // The folder as it was before the upload's record.
    std::fs::remove_dir_all(&metadata).unwrap();
    copy_dir(&earlier, &metadata);
    commit(&app);
    let (mut replicator, metrics) = open(&db, &store);
    replicator.sync_once(bound()).await.unwrap();
    let (newest, checksum) = store_chain(&store).await;
    assert_eq!(newest, TxId(3), "the store's TXID 2, then the catch-up as 3");
    assert_eq!(checksum, replicator.capture.checksum);
    assert_eq!(metrics.catch_ups(), 1, "the catch-up is counted like any other");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A read transaction begun on a WAL the app had copied whole holds read
/// mark 0, which does not keep the app from restarting the WAL. A batch is
/// read by a scan; then the app restarts the WAL and its new frames grow
/// over the ones just scanned (its commits touch another table only, so
/// nothing later rewrites the batch's pages and hides damage). Returns
/// what `write_batch` shipped of the batch's three commits.
fn write_after_the_scanned_frames_are_overwritten(replicator: &mut Replicator, app: &Connection) -> u64 {
    app.execute_batch("CREATE TABLE u(x); INSERT INTO u VALUES (randomblob(3000));").unwrap();
    replicator.capture_pass().unwrap();
    let tail_start = replicator.capture.wal.unwrap().frame;
    replicator.source.end_read().unwrap();
    for _ in 0..3 {
        commit(app); // the frames to capture
    }
    app.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
    replicator.source.begin_read().unwrap(); // read mark 0: everything is copied
    let read = replicator.read_batch(MAX_FRAMES_PER_CAPTURE).unwrap().expect("three commits to capture");
    let tail_end = read.end.frame;
    let wal_path = wal::wal_path(replicator.db_path());
    app.execute("UPDATE u SET x = randomblob(3000)", []).unwrap();
    while committed_frames(&wal_path) < tail_end {
        app.execute("UPDATE u SET x = randomblob(3000)", []).unwrap();
    }
    assert!(tail_start < tail_end);
    let include = vec![true; replicator.stores.len()];
    replicator.write_batch(read, &include).unwrap()
}

/// Each new frame is read once: the scan keeps the pages it validated, so
/// a batch is whole even when the WAL is overwritten before it is written.
#[test]
fn a_batch_is_written_from_the_frames_its_scan_validated_even_when_the_wal_is_overwritten_after() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start_past_ten_commits(dir.path());
    assert_eq!(write_after_the_scanned_frames_are_overwritten(&mut replicator, &app), 3);
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 0);
    // Compared with the database as it is now, not the held snapshot.
    replicator.source.end_read().unwrap();
    replicator.source.begin_read().unwrap();
    assert_capture_is_the_database(&mut replicator);
}

/// Pages the scan did not keep (past its memory budget, here 0) are read
/// by offset after the scan: if the new WAL grew over their frames in
/// between, the pages read are other pages'. The restart is caught and
/// the batch caught up by page hashes, never shipped.
#[test]
fn frames_overwritten_by_a_restart_between_the_scan_and_the_page_reads_are_caught_up_never_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, metrics) = start_past_ten_commits(dir.path());
    replicator.scan_keep_bytes = 0;
    assert_eq!(write_after_the_scanned_frames_are_overwritten(&mut replicator, &app), 0, "nothing shipped");
    replicator.capture_pass().unwrap();
    assert_eq!(metrics.catch_ups(), 1);
    assert_capture_is_the_database(&mut replicator);
}

/// A start takes none of the app's locks: it resumes, and captures the
/// backlog the app committed while the replicator was stopped, while the
/// app holds its write lock in a transaction (an app with busy timeout 0
/// writing at that moment is never refused). A start used to take the
/// write lock and capture the backlog under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_captures_the_backlog_while_the_app_holds_its_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = app_db(dir.path());
    let store = Arc::new(MemoryStore::new());
    let (mut replicator, _) = open(&db, &store);
    replicator.sync_once(bound()).await.unwrap();
    drop(replicator);
    for _ in 0..20 {
        commit(&app);
    }
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);").unwrap();
    let (mut replicator, metrics) = open(&db, &store);
    assert_eq!(replicator.stores()[0].captured(), TxId(21), "the backlog, one TXID per commit");
    replicator.sync_once(bound()).await.unwrap();
    writer.execute_batch("COMMIT").unwrap();
    assert_eq!(metrics.catch_ups(), 0);
    assert_eq!(store_chain(&store).await.0, TxId(21));
}

/// The descriptors this process holds on files in `dir`.
fn descriptors_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .collect()
}

#[test]
fn a_quiet_database_holds_at_most_six_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut replicator, _) = start(dir.path());
    commit(&app);
    replicator.capture_pass().unwrap();
    // The write lock is taken on a connection that is open anyway.
    replicator.lock_writes().unwrap();
    replicator.unlock_writes().unwrap();
    replicator.release_idle();
    let held = descriptors_in(dir.path());
    // The app's connection, in this process here, holds one of the
    // database and one of the WAL (SQLite keeps one of the index per
    // process). The replicator: its reader's and checkpointer's
    // connections (database and WAL each), the index, and the database
    // file for page reads.
    let replicators = held.len() - 2;
    assert!(replicators <= 6, "{replicators} descriptors besides the app's two: {held:#?}");
    assert!(!held.iter().any(|p| p.to_string_lossy().contains("state.db")), "state.db is closed while idle");
    // Needed again, it opens again.
    commit(&app);
    replicator.capture_pass().unwrap();
    assert!(replicator.state.capture().unwrap().is_some());
}
