//! `distributary replicate --config` with `compaction: local` (issue #16):
//! the replicator compacts its own store in process, configured by a
//! Litestream 0.5 file's retention and level keys. While an app commits,
//! L1 segments and snapshots appear, snapshots past the retention are
//! deleted, and every kept snapshot restores to its listed checksum.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use distributary_core::store::{FileStore, Store};
use distributary_tests::bins::binary;
use distributary_tests::e2e::{FAST_LOCAL_COMPACTION, assert_every_snapshot_restores, replicate_with_config};
use distributary_tests::process::tail;

/// Objects of the store under one level's folder (`l1`, `snapshots`).
async fn keys_in(store: &FileStore, level: &str) -> BTreeSet<String> {
    let objects = store.list("").await.unwrap();
    objects
        .into_iter()
        .map(|object| object.key)
        .filter(|key| key.contains(&format!("/{level}/")) && key.ends_with(".seg"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_local_compacts_and_applies_litestreams_retention_in_the_replicator() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let store_path = dir.path().join("store");
    let app = rusqlite::Connection::open(&db).unwrap();
    app.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    app.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT);").unwrap();
    // Litestream 0.5's keys, short enough for a test (FAST_LOCAL_COMPACTION:
    // the first level is our L1 window, `l0-retention` how long merged L0
    // segments stay; a snapshot is retired only once the L0 segments before
    // it are), `retention` the snapshots' retention and
    // `retention-check-interval` the time between compaction runs.
    let mut replicator = replicate_with_config(
        dir.path(),
        &format!(
            "{FAST_LOCAL_COMPACTION}\
             dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n      sync-interval: 200ms\n      \
             retention: 4s\n      retention-check-interval: 1s\n      snapshot-interval: 2s\n",
            db.display(),
            store_path.display()
        ),
    );
    let config = dir.path().join("replicate.yml");

    // The app commits a row every 20 ms until the compactor has done each
    // of its jobs at least once.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (db, writing) = (db.clone(), writing.clone());
        std::thread::spawn(move || {
            let connection = rusqlite::Connection::open(&db).unwrap();
            connection.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut i = 0u64;
            while writing.load(Ordering::Relaxed) {
                connection.execute("INSERT INTO events (body) VALUES (?1)", [format!("event {i}")]).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let store = FileStore::new(&store_path);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut snapshots_seen = BTreeSet::new();
    loop {
        let l1 = keys_in(&store, "l1").await;
        let snapshots = keys_in(&store, "snapshots").await;
        snapshots_seen.extend(snapshots.iter().cloned());
        let deleted = snapshots_seen.difference(&snapshots).count();
        if !l1.is_empty() && snapshots_seen.len() >= 3 && deleted >= 1 {
            break;
        }
        if let Some(status) = replicator.exited() {
            panic!("replicate exited with {status}:\n{}", tail(&replicator.log()));
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s: {} L1 segments, snapshots seen {snapshots_seen:?}, present {snapshots:?}:\n{}",
            l1.len(),
            tail(&replicator.log())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    let status = replicator.terminate();
    let log = replicator.log();
    assert!(status.success(), "replicate exited with {status}:\n{}", tail(&log));
    assert!(log.contains("compacting in this process"), "{}", tail(&log));
    assert!(!log.contains("the compactor is the Lambda"), "no Lambda instructions with local compaction");

    // `--once` ships what was committed since, then runs one pass.
    app.execute("INSERT INTO events (body) VALUES ('after')", []).unwrap();
    let once = Command::new(binary("distributary", "distributary"))
        .args(["replicate", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert!(once.status.success(), "replicate --once: {stderr}");
    assert!(stderr.contains("compaction done"), "one compaction pass after shipping: {stderr}");

    // Every snapshot kept restores exactly and passes integrity_check.
    let url = format!("file://{}", store_path.display());
    let restored = assert_every_snapshot_restores(&url, &[], dir.path());
    assert!(restored >= 1, "{restored} snapshots kept");
}

/// With `compaction: local` the replicator hands each L0 segment it uploads
/// to its own compactor, which merges it without reading it back: on S3
/// (moto, recording every request), the GETs of L0 objects are a small
/// fraction of their uploads (a compactor in another process makes one per
/// upload), while L1 segments are still written from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_compactor_reads_no_segment_its_replicator_uploaded() {
    use distributary_tests::moto::MotoServer;
    use distributary_tests::process::Process;

    let moto = MotoServer::start();
    let bucket = moto.create_bucket();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let app = rusqlite::Connection::open(&db).unwrap();
    app.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    app.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT);").unwrap();
    let config = dir.path().join("replicate.yml");
    std::fs::write(
        &config,
        format!(
            "{FAST_LOCAL_COMPACTION}dbs:\n  - path: {}\n    replica:\n      url: {}\n      sync-interval: 200ms\n      \
             retention-check-interval: 1s\n",
            db.display(),
            moto.url(&bucket, "app")
        ),
    )
    .unwrap();
    moto.start_recording();
    let mut replicate = Command::new(binary("distributary", "distributary"));
    replicate.args(["replicate", "--config"]).arg(&config).envs(moto.env());
    let mut replicator = Process::spawn("replicate", dir.path(), &mut replicate);

    // The app commits every 50 ms until the compactor has written L1
    // segments over at least 40 uploads.
    let is_l0 = |target: &str| target.contains("/l0/");
    let is_l1 = |target: &str| target.contains("/l1/");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0;
    loop {
        app.execute("INSERT INTO events (body) VALUES (?1)", [format!("event {i}")]).unwrap();
        i += 1;
        let recorded = moto.recorded();
        let uploads = recorded.iter().filter(|r| r.method == "PUT" && is_l0(&r.target)).count();
        let l1_writes = recorded.iter().filter(|r| r.method == "PUT" && is_l1(&r.target)).count();
        if uploads >= 40 && l1_writes >= 3 {
            break;
        }
        if let Some(status) = replicator.exited() {
            panic!("replicate exited with {status}:\n{}", tail(&replicator.log()));
        }
        assert!(Instant::now() < deadline, "after 120 s: {uploads} uploads, {l1_writes} L1 writes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = replicator.terminate();
    assert!(status.success(), "replicate exited with {status}:\n{}", tail(&replicator.log()));
    let recorded = moto.recorded();
    let uploads = recorded.iter().filter(|r| r.method == "PUT" && is_l0(&r.target)).count();
    // Probes for the next segment while idle (404s) are the only L0 reads.
    let l0_reads = recorded.iter().filter(|r| (r.method == "GET" || r.method == "HEAD") && is_l0(&r.target)).count();
    println!("{uploads} L0 uploads, {l0_reads} L0 reads by the local compactor");
    assert!(l0_reads * 4 <= uploads, "{l0_reads} reads of L0 objects for {uploads} uploads");
}
