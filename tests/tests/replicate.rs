//! `distributary replicate` as a process, against a real S3-compatible
//! server (moto on loopback) and a local folder: every committed
//! transaction reaches the store as one contiguous, verified chain whose
//! last checksum equals the database's, through concurrent writers, kill -9,
//! lost WAL continuity, and idleness.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distributary_core::TxId;
use distributary_core::format::EncryptionKey;
use distributary_core::store::{FileStore, Store};
use distributary_tests::bins::binary;
use distributary_tests::chain::{database_checksum, replay_each, walk};
use distributary_tests::moto::MotoServer;
use distributary_tests::process::Process;
use distributary_tests::programs::{replicate_once, spawn_replicator};

fn distributary() -> PathBuf {
    binary("distributary", "distributary")
}

/// A temporary folder holding the app's database and a local-folder store.
struct Local {
    dir: tempfile::TempDir,
    db: PathBuf,
    url: String,
    store: FileStore,
}

fn local() -> Local {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("store").display());
    let store = FileStore::new(dir.path().join("store"));
    Local { dir, db, url, store }
}

/// An app database (the `events` table) in a temporary folder, and the URL
/// of a fresh bucket on its own moto server.
struct OnMoto {
    moto: MotoServer,
    bucket: String,
    url: String,
    dir: tempfile::TempDir,
    db: PathBuf,
}

fn on_moto() -> OnMoto {
    let moto = MotoServer::start();
    let bucket = moto.create_bucket();
    let url = moto.url(&bucket, "app");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(create_app_db(&db));
    OnMoto { moto, bucket, url, dir, db }
}

fn create_app_db(path: &Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    connection
        .execute_batch("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, writer INTEGER, body TEXT);")
        .unwrap();
    connection
}

/// One writer thread's work: `count` transactions of one insert each.
fn write_rows(path: &Path, writer: i64, count: usize) {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.busy_timeout(Duration::from_secs(30)).unwrap();
    for i in 0..count {
        connection
            .execute(
                "INSERT INTO events (writer, body) VALUES (?1, ?2)",
                rusqlite::params![writer, format!("row {i} of writer {writer} {}", "x".repeat(i % 300))],
            )
            .unwrap();
    }
}

/// SIGTERM; asserts a clean exit and returns the log.
fn terminate(mut replicator: Process) -> String {
    let status = replicator.terminate();
    let log = replicator.log();
    assert!(status.success(), "replicator exited with {status}: {log}");
    log
}

async fn wait_for_manifest(store: &dyn Store) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while distributary_core::manifest::read_manifest(store).await.ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the replicator did not start a generation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the store's chain ends at the database's current checksum.
async fn wait_until_shipped(store: &dyn Store, db: &Path, limit: Duration) {
    if let Err(chain) = shipped_within(store, db, limit).await {
        panic!("the replicator did not ship the writes within {limit:?}: {chain}");
    }
}

/// Whether the store's chain ends at the database's current checksum
/// within `limit`; otherwise, where the chain ended.
async fn shipped_within(store: &dyn Store, db: &Path, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let chain = walk(store, None).await;
        if let Ok(chain) = &chain
            && chain.checksum == database_checksum(db).unwrap()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(match chain {
                Ok(chain) => format!("the chain ends at TXID {} with checksum {}", chain.last_txid, chain.checksum),
                Err(e) => format!("the chain does not walk: {e:#}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn assert_store_matches_database(store: &dyn Store, db: &Path, key: Option<&EncryptionKey>) -> TxId {
    let chain = walk(store, key).await.unwrap();
    assert_eq!(chain.checksum, database_checksum(db).unwrap(), "the chain's last checksum is the database's");
    chain.last_txid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_transactions_from_four_writers_reach_s3_as_one_chain() {
    let OnMoto { moto, bucket, url, dir: _dir, db } = on_moto();
    let replicator = spawn_replicator(&db, &url, &[], &moto.env());
    let store = moto.store_at(&bucket, "app").await;
    wait_for_manifest(store.as_ref()).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || write_rows(&db, w, 2_500))
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let log = terminate(replicator);
    let last = assert_store_matches_database(store.as_ref(), &db, None).await;
    // The genesis snapshot, then one TXID per insert (a catch-up by page
    // hashes would merge commits: its reason is in the log).
    assert_eq!(last.0, 10_001, "the chain merged commits; the replicator's log:\n{log}");
    let count: i64 =
        rusqlite::Connection::open(&db).unwrap().query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_ships_what_is_committed_and_nothing_when_idle() {
    let Local { dir: _dir, db, url, store } = local();
    // The app keeps a connection open, so the WAL persists between runs.
    let _app = create_app_db(&db);
    write_rows(&db, 0, 50);
    replicate_once(&db, &url, &[], &[]);
    let first = assert_store_matches_database(&store, &db, None).await;
    let objects = store.list("").await.unwrap().len();
    replicate_once(&db, &url, &[], &[]);
    assert_eq!(store.list("").await.unwrap().len(), objects, "nothing changed, nothing uploaded");
    write_rows(&db, 1, 20);
    replicate_once(&db, &url, &[], &[]);
    let second = assert_store_matches_database(&store, &db, None).await;
    assert_eq!(second.0, first.0 + 20, "one TXID per transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_at_random_moments_loses_nothing_and_uploads_nothing_twice() {
    let OnMoto { moto, bucket, url, dir: _dir, db } = on_moto();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let connection = rusqlite::Connection::open(&db).unwrap();
            connection.busy_timeout(Duration::from_secs(30)).unwrap();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                connection
                    .execute(
                        "INSERT INTO events (writer, body) VALUES (0, ?1)",
                        [format!("{i} {}", "y".repeat(i % 500))],
                    )
                    .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut random = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..20 {
        let mut child = spawn_replicator(&db, &url, &[], &moto.env());
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        std::thread::sleep(Duration::from_millis(200 + random % 800));
        child.kill_nine();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    replicate_once(&db, &url, &[], &moto.env());
    let store = moto.store_at(&bucket, "app").await;
    let chain = walk(store.as_ref(), None).await.unwrap();
    assert_eq!(chain.checksum, database_checksum(&db).unwrap());
    // Every L0 object is part of the chain: no TXID range was uploaded twice
    // under different keys.
    let generation = chain.generation;
    let l0_objects = store.list(&format!("{generation}/l0/")).await.unwrap();
    assert_eq!(l0_objects.len(), chain.segments.len(), "stray L0 objects: {l0_objects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_and_vacuum_while_stopped_are_caught_up() {
    let Local { dir, db, url, store } = local();
    drop(create_app_db(&db));
    write_rows(&db, 0, 200);
    replicate_once(&db, &url, &[], &[]);
    let before = assert_store_matches_database(&store, &db, None).await;

    // While the replicator is stopped: more writes, a TRUNCATE checkpoint
    // (the WAL's frames are gone) and a VACUUM (most pages move).
    let connection = create_app_db(&db);
    connection.execute("DELETE FROM events WHERE id % 3 = 0", []).unwrap();
    write_rows(&db, 1, 50);
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    connection.execute_batch("VACUUM").unwrap();
    drop(connection);
    let output = replicate_once(&db, &url, &[], &[]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("catching up"));
    let after = assert_store_matches_database(&store, &db, None).await;
    assert_eq!(after.0, before.0 + 1, "one catch-up segment");

    // With the metadata folder deleted, a full-page catch-up continues the
    // same generation.
    std::fs::remove_dir_all(dir.path().join("app.db-distributary")).unwrap();
    write_rows(&db, 2, 10);
    replicate_once(&db, &url, &[], &[]);
    let chain = walk(&store, None).await.unwrap();
    assert_eq!(chain.checksum, database_checksum(&db).unwrap());
    assert_eq!(chain.last_txid.0, after.0 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_database_makes_no_store_requests() {
    let moto = MotoServer::start();
    let bucket = moto.create_bucket();
    let proxy = distributary_tests::proxy::CountingProxy::start(([127, 0, 0, 1], moto.port()).into()).await;
    let url = format!("s3://{bucket}/app?endpoint={}&region=us-east-1", proxy.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(create_app_db(&db));
    write_rows(&db, 0, 10);
    let replicator = spawn_replicator(&db, &url, &[], &moto.env());
    let store = moto.store_at(&bucket, "app").await;
    wait_until_shipped(store.as_ref(), &db, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = proxy.bytes_up();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(proxy.bytes_up(), before, "an idle database must cost zero requests");
    terminate(replicator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_replication_needs_the_key_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "aa".repeat(32)).unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let store = FileStore::new(dir.path().join("store"));
    let _app = create_app_db(&db);
    write_rows(&db, 0, 30);
    replicate_once(&db, &url, &["--encryption-key-file", key_file.to_str().unwrap()], &[]);
    write_rows(&db, 0, 5);
    replicate_once(&db, &url, &["--encryption-key-file", key_file.to_str().unwrap()], &[]);
    let key = EncryptionKey::parse("aa".repeat(32).as_bytes()).unwrap();
    assert_store_matches_database(&store, &db, Some(&key)).await;
    let wrong = EncryptionKey::from_bytes([0xbb; 32]);
    let err = walk(&store, Some(&wrong)).await.unwrap_err();
    assert!(format!("{err:#}").contains("wrong encryption key"), "{err:#}");
}

#[test]
fn refuses_bad_databases_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let run = |db: &Path| {
        let output = Command::new(distributary()).args(["replicate", "--once"]).arg(db).arg(&url).output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let missing = run(&dir.path().join("missing.db"));
    assert!(missing.contains("does not exist"), "{missing}");

    let rollback = dir.path().join("rollback.db");
    rusqlite::Connection::open(&rollback).unwrap().execute_batch("CREATE TABLE t(x);").unwrap();
    let message = run(&rollback);
    assert!(message.contains("not WAL") && message.contains("PRAGMA journal_mode=WAL"), "{message}");

    // The metadata folder cannot be created (a file is in the way).
    let blocked = dir.path().join("blocked.db");
    drop(create_app_db(&blocked));
    std::fs::write(dir.path().join("blocked.db-distributary"), b"not a folder").unwrap();
    let message = run(&blocked);
    assert!(message.contains("metadata folder"), "{message}");

    let output = Command::new(distributary())
        .args(["replicate", "--once"])
        .arg(&blocked)
        .arg("s3://Not_A_Bucket/x")
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("bucket name") && message.contains("for example"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_size_change_starts_a_new_generation() {
    let Local { dir: _dir, db, url, store } = local();
    drop(create_app_db(&db));
    write_rows(&db, 0, 20);
    replicate_once(&db, &url, &[], &[]);
    let first = walk(&store, None).await.unwrap().generation;
    // Changing the page size needs a rollback journal and a VACUUM.
    let connection = rusqlite::Connection::open(&db).unwrap();
    connection.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(())).unwrap();
    connection.execute_batch("PRAGMA page_size=8192; VACUUM;").unwrap();
    connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    drop(connection);
    replicate_once(&db, &url, &[], &[]);
    let chain = walk(&store, None).await.unwrap();
    assert_ne!(chain.generation, first, "a new generation");
    assert_eq!(chain.checksum, database_checksum(&db).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_app_and_fans_out_to_several_stores_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let config = dir.path().join("distributary.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: file://{}/a\n        sync-interval: 100ms\n      - type: file\n        path: {}/b\n        sync-interval: 2s\n",
            db.display(),
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    // The app creates the database, writes, and exits with status 3.
    let app = format!(
        "python3 -c \"import sqlite3; c = sqlite3.connect('{}', isolation_level=None); c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE t(x)'); [c.execute('INSERT INTO t VALUES (?)', (i,)) for i in range(100)]\"; exit 3",
        db.display()
    );
    let status = Command::new(distributary())
        .args(["replicate", "--config"])
        .arg(&config)
        .args(["--exec", &app])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "the app's exit status");
    for store in ["a", "b"] {
        let store = FileStore::new(dir.path().join(store));
        assert_store_matches_database(&store, &db, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_retried_and_gets_everything_when_it_is_back() {
    let port = distributary_tests::moto::free_port();
    let url = format!("s3://late/app?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let _app = create_app_db(&db);
    write_rows(&db, 0, 100);
    let env = vec![
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let replicator = spawn_replicator(&db, &url, &[], &env);
    std::thread::sleep(Duration::from_secs(3));
    write_rows(&db, 1, 100);
    // The store comes up (with its bucket) only now. Its bucket exists
    // before the endpoint answers: a missing bucket is a permanent failure,
    // which stops the replicator (tests/tests/bad_inputs.rs).
    let moto = MotoServer::start();
    moto.create_named_bucket("late");
    let moto_addr: std::net::SocketAddr = format!("127.0.0.1:{}", moto.port()).parse().unwrap();
    let _endpoint = distributary_tests::proxy::CountingProxy::start_on(port, moto_addr).await;
    let store = moto.store_at("late", "app").await;
    wait_until_shipped(store.as_ref(), &db, Duration::from_secs(90)).await;
    let stderr = terminate(replicator);
    assert!(stderr.contains("retrying"), "the outage is reported: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_keep_the_wal_bounded_and_lose_nothing() {
    let Local { dir: _dir, db, url, store } = local();
    let _app = create_app_db(&db);
    let replicator = spawn_replicator(&db, &url, &["--checkpoint-frames", "100", "--truncate-size", "256KiB"], &[]);
    wait_for_manifest(&store).await;
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    for burst in 0..5 {
        write_rows(&db, burst, 400);
        // Quiet ticks: a PASSIVE checkpoint, then a TRUNCATE gives the space
        // back (polled: a loaded machine may need more than a few ticks).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
            if size <= 256 * 1024 {
                break;
            }
            assert!(Instant::now() < deadline, "WAL of {size} bytes after 20 s of quiet:\n{}", replicator.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_until_shipped(&store, &db, Duration::from_secs(30)).await;
    let stderr = terminate(replicator);
    assert!(stderr.contains("checkpoint (truncate)"), "{stderr}");
    let chain = walk(&store, None).await.unwrap();
    assert_eq!(chain.checksum, database_checksum(&db).unwrap());
}

/// Regression (CI, 2026-11-22: "WAL of 325512 bytes after 20 s of quiet"):
/// the checkpoint policy looked at the frames in use before the file size,
/// so a WAL past `--truncate-size` holding fewer than `--checkpoint-frames`
/// frames (one large transaction, or a WAL the app restarted from its first
/// frame) was never checkpointed nor truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_past_the_size_limit_is_truncated_however_few_frames_it_holds() {
    let Local { dir: _dir, db, url, store } = local();
    let app = create_app_db(&db);
    let replicator = spawn_replicator(&db, &url, &["--checkpoint-frames", "1000", "--truncate-size", "256KiB"], &[]);
    wait_for_manifest(&store).await;
    // One transaction of ~80 pages (4 KiB rows on 4 KiB pages): ~330 KiB of
    // WAL, well under 1,000 frames.
    app.execute_batch(
        "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 80)
         INSERT INTO events (writer, body) SELECT 0, hex(randomblob(1900)) FROM n; COMMIT;",
    )
    .unwrap();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let written = std::fs::metadata(&wal).unwrap().len();
    assert!(written > 256 * 1024, "the test needs a WAL past the limit, not {written} bytes");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&wal).map_or(0, |m| m.len()) > 256 * 1024 {
        assert!(Instant::now() < deadline, "WAL still {written} bytes after 30 s of quiet:\n{}", replicator.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until_shipped(&store, &db, Duration::from_secs(30)).await;
    terminate(replicator);
    assert_eq!(walk(&store, None).await.unwrap().checksum, database_checksum(&db).unwrap());
}

/// `GET /bookmark` on the metrics address, as JSON.
fn get_bookmark(addr: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /bookmark HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmark_covers_every_write_committed_before_it() {
    let Local { dir: _dir, db, url, store } = local();
    let app = create_app_db(&db);
    let addr = format!("127.0.0.1:{}", distributary_tests::moto::free_port());
    let replicator = spawn_replicator(&db, &url, &["--metrics-addr", &addr], &[]);
    wait_for_manifest(&store).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "no metrics listener on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut previous = get_bookmark(&addr)["txid"].as_u64().unwrap();
    for i in 0..10 {
        app.execute("INSERT INTO events (writer, body) VALUES (0, ?1)", [format!("bookmark {i}")]).unwrap();
        // No sleep: the answer must already include the commit just made.
        let bookmark = get_bookmark(&addr);
        assert_eq!(bookmark["txid"].as_u64().unwrap(), previous + 1, "{bookmark}");
        assert_eq!(bookmark["generation"], bookmark["replicas"][0]["generation"]);
        previous += 1;
    }
    wait_until_shipped(&store, &db, Duration::from_secs(30)).await;
    terminate(replicator);
    assert_eq!(walk(&store, None).await.unwrap().last_txid, TxId(previous));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_replaced_under_the_replicator_is_caught_up_in_the_same_chain() {
    let Local { dir, db, url, store } = local();
    let app = create_app_db(&db);
    for i in 0..20 {
        app.execute("INSERT INTO events (writer, body) VALUES (0, ?1)", [format!("old row {i}")]).unwrap();
    }
    let replicator = spawn_replicator(&db, &url, &[], &[]);
    wait_for_manifest(&store).await;
    wait_until_shipped(&store, &db, Duration::from_secs(30)).await;
    let before = walk(&store, None).await.unwrap();

    // The app puts another database at the same path, as some programs do
    // at start (here: a restored copy whose rows are all in the database
    // file, none in a WAL, renamed over the old one); the replicator still
    // has the old file open.
    let copy = dir.path().join("restored-copy.db");
    {
        let other = create_app_db(&copy);
        for i in 0..50 {
            other.execute("INSERT INTO events (writer, body) VALUES (1, ?1)", [format!("restored row {i}")]).unwrap();
        }
    } // closing the last connection checkpoints and deletes its WAL
    assert!(!PathBuf::from(format!("{}-wal", copy.display())).exists());
    drop(app);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::rename(&copy, &db).unwrap();
    let app = create_app_db(&db);
    app.execute("INSERT INTO events (writer, body) VALUES (1, 'the new file')", []).unwrap();

    // The store follows the new file: its chain ends at the new content,
    // in the same generation, after the old file's TXIDs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while walk(&store, None).await.map(|c| c.checksum).ok() != database_checksum(&db).ok() {
        assert!(Instant::now() < deadline, "the store did not follow the new file:\n{}", replicator.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = walk(&store, None).await.unwrap();
    assert_eq!(after.generation, before.generation);
    assert!(after.last_txid > before.last_txid, "{:?} after {:?}", after.last_txid, before.last_txid);
    let rows: i64 = app.query_row("SELECT count(*) FROM events", [], |row| row.get(0)).unwrap();
    assert_eq!(rows, 51, "the new file is the app's database now");
    // Writes after the switch keep flowing.
    app.execute("INSERT INTO events (writer, body) VALUES (1, 'and one more')", []).unwrap();
    wait_until_shipped(&store, &db, Duration::from_secs(30)).await;
    let log = terminate(replicator);
    assert!(log.contains("the database file was replaced"), "{log}");
}

/// What an app with SQLite's default busy timeout of 0 got in a run.
#[derive(Debug, Default)]
struct Busy0Run {
    committed: u64,
    refused: u64,
}

/// The app of issue #14's "done means": busy timeout 0 (the default of C
/// programs and many bindings), batches of inserts and updates with schema
/// changes between them (ALTER TABLE, CREATE/DROP INDEX, CREATE/DROP TABLE,
/// and a DELETE and a VACUUM every tenth batch), for `seconds`. Counts the
/// statements refused with SQLITE_BUSY.
fn busy0_app(db: &Path, seconds: u64) -> Busy0Run {
    let connection = rusqlite::Connection::open(db).unwrap();
    connection.busy_timeout(Duration::ZERO).unwrap();
    let mut run = Busy0Run::default();
    let mut attempt = |sql: &str, params: &[&dyn rusqlite::ToSql]| match connection.execute(sql, params) {
        Ok(_) => run.committed += 1,
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            run.refused += 1
        }
        Err(e) => panic!("{sql}: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut step = 0;
    while Instant::now() < deadline {
        for i in 0..50i64 {
            let body = format!("event {i} {}", "x".repeat((i * 7 % 300) as usize));
            attempt("INSERT INTO events (writer, body) VALUES (?1, ?2)", &[&i, &body]);
            if i % 10 == 0 {
                attempt("UPDATE events SET writer = writer + 1 WHERE id % 13 = ?1", &[&(i % 13)]);
            }
        }
        for sql in [
            format!("ALTER TABLE events ADD COLUMN extra{step} TEXT"),
            "CREATE INDEX IF NOT EXISTS events_writer ON events (writer)".to_string(),
            format!("CREATE TABLE IF NOT EXISTS scratch{step} (id INTEGER PRIMARY KEY, v TEXT)"),
            "DROP INDEX IF EXISTS events_writer".to_string(),
            format!("DROP TABLE IF EXISTS scratch{step}"),
        ] {
            attempt(&sql, &[]);
        }
        if step % 10 == 9 {
            attempt("DELETE FROM events WHERE id % 3 = 0", &[]);
            attempt("VACUUM", &[]);
        }
        step += 1;
    }
    run
}

/// Issue #14: the replicator never takes the app's write lock while it
/// writes, so an app with busy timeout 0 committing continuously for 60 s,
/// schema changes and VACUUM included, is never refused; and the store
/// restores to a database equal to the primary, page for page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_busy_timeout_zero_is_never_refused_and_the_store_restores_equal() {
    let Local { dir, db, url, store } = local();
    drop(create_app_db(&db));
    let replicator = spawn_replicator(&db, &url, &[], &[]);
    // The start is the one moment the replicator takes the write lock.
    wait_for_manifest(&store).await;
    let app_db = db.clone();
    let run = tokio::task::spawn_blocking(move || busy0_app(&app_db, 60)).await.unwrap();
    assert!(run.committed > 1_000, "the app committed only {} statements", run.committed);
    if let Err(chain) = shipped_within(&store, &db, Duration::from_secs(60)).await {
        panic!("the replicator did not ship the writes within 60 s: {chain}; its log:\n{}", replicator.log());
    }
    let log = terminate(replicator);
    assert_eq!(run.refused, 0, "the app was refused {} statements ({run:?}); replicator log:\n{log}", run.refused);
    let restored = dir.path().join("restored.db");
    let output = Command::new(distributary())
        .args(["restore", &url, "-o"])
        .arg(&restored)
        .args(["--integrity-check", "full"])
        .output()
        .unwrap();
    assert!(output.status.success(), "restore: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(database_checksum(&restored).unwrap(), database_checksum(&db).unwrap(), "restored page for page");
}

/// Regression (branch issue-14-windows, 2026-12-01: the pipeline test ended
/// 7 TXIDs short with no catch-up logged): a WAL that came and went during a
/// checkpoint window (restarted twice) was skipped. Checksum tests hid it,
/// because later commits rewrote the lost pages; here every transaction
/// writes a row that fills a leaf page of its own, never rewritten, so a
/// skipped transaction shows in the TXID count. The app restarts its WAL
/// every 100 frames and the replicator opens a window every 100, to make
/// restarts during a window as frequent as they can be. (The deterministic
/// form is the unit test `two_restarts_during_a_window_are_caught_up_never_skipped`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_is_captured_through_checkpoint_windows_even_when_its_pages_are_never_rewritten() {
    capture_through_windows(10_000, "", None).await;
}

/// The same with an app that cuts its WAL file during windows: a second
/// connection runs TRUNCATE checkpoints back to back (each gives up after
/// a few milliseconds while the replicator's read mark is in the way, so
/// one completes in nearly every window, after the writer's last commits
/// into the old WAL), and the writer's `journal_size_limit` shortens the
/// file at each new WAL's first commit. Regression: a previous WAL's tail
/// cut off with the file was taken as empty, its commits in no TXID (the
/// soak test's snapshot came out malformed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_is_captured_through_checkpoint_windows_when_the_app_cuts_its_wal_file() {
    capture_through_windows(5_000, "PRAGMA journal_size_limit = 250000;", Some("PRAGMA wal_checkpoint(TRUNCATE)"))
        .await;
}

/// One writer inserts `transactions` rows of new leaf pages, running
/// `setup` first, while another connection runs `beside` (if any) over and
/// over; then the chain must end at the database's state, with one TXID
/// per transaction unless the log says a catch-up ran, and every state of
/// the chain must be one the database had.
async fn capture_through_windows(transactions: usize, setup: &'static str, beside: Option<&'static str>) {
    let Local { dir, db, url, store } = local();
    let dir = dir.path();
    drop(create_app_db(&db));
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE leaves (id INTEGER PRIMARY KEY, b BLOB)")
        .unwrap();
    let replicator = spawn_replicator(&db, &url, &["--checkpoint-frames", "100"], &[]);
    wait_for_manifest(&store).await;
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let side = beside.map(|statement| {
        let (db, writing) = (db.clone(), writing.clone());
        std::thread::spawn(move || {
            let connection = rusqlite::Connection::open(&db).unwrap();
            connection.busy_timeout(Duration::from_millis(5)).unwrap();
            let mut completed = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                // (busy, log frames, checkpointed frames); a busy answer
                // or error (the lock was in use) is fine.
                if let Ok(0) = connection.query_row(statement, [], |r| r.get::<_, i64>(0)) {
                    completed += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            completed
        })
    });
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let connection = rusqlite::Connection::open(&db).unwrap();
            connection.busy_timeout(Duration::from_secs(30)).unwrap();
            connection.pragma_update(None, "wal_autocheckpoint", 100).unwrap();
            connection.execute_batch(setup).unwrap();
            for _ in 0..transactions {
                // The app's own TRUNCATE checkpoints can make SQLite answer
                // busy at once, without waiting: nothing was written, retry.
                while let Err(e) = connection.execute("INSERT INTO leaves (b) VALUES (randomblob(3000))", []) {
                    assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy), "{e}");
                }
            }
        })
    };
    writer.join().unwrap();
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some(side) = side {
        let completed = side.join().unwrap();
        eprintln!("{completed} checkpoints of the app's completed beside the writer");
    }
    if let Err(chain) = shipped_within(&store, &db, Duration::from_secs(60)).await {
        panic!("the replicator did not ship the writes within 60 s: {chain}; its log:\n{}", replicator.log());
    }
    let log = terminate(replicator);
    let chain = walk(&store, None).await.unwrap();
    assert_eq!(chain.checksum, database_checksum(&db).unwrap(), "the chain ends at the database's state:\n{log}");
    let committed = 1 + transactions as u64; // the genesis snapshot, then one per insert
    let catch_ups = log.lines().filter(|l| l.contains("catching up")).count();
    if catch_ups == 0 {
        assert_eq!(chain.last_txid.0, committed, "one TXID per transaction without a catch-up:\n{log}");
    } else {
        // A catch-up ships what it finds as one TXID.
        assert!(chain.last_txid.0 < committed, "{} TXIDs for {committed} transactions", chain.last_txid.0);
    }
    // Every state of the chain is one the database had: its rows are the
    // first n inserted, and SQLite reads them whole. (A lost tail shows
    // here even when a later catch-up healed the final state.)
    let replica = dir.join("replay.db");
    let states = replay_each(&store, &replica, |path, _| {
        let connection = rusqlite::Connection::open(path)?;
        let (rows, last): (i64, i64) =
            connection
                .query_row("SELECT count(*), coalesce(max(id), 0) FROM leaves", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        anyhow::ensure!(rows == last, "{rows} rows with ids up to {last}: transactions are missing");
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(states as u64, chain.segments.len() as u64 + 1);
    eprintln!("{} TXIDs for {committed} transactions, {catch_ups} catch-ups", chain.last_txid.0);
}

fn metadata_dir(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-distributary", db.display()))
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// The replicator fsyncs nothing on its hot path (issue #14): a killed
/// process loses nothing the kernel holds, but a machine restart can lose
/// the metadata folder's last writes while their uploads reached the store.
/// Simulated here: the folder is put back to an earlier copy, recorded as
/// written in an earlier boot. The start asks the store, finds it ahead,
/// and continues the chain from the store's newest TXID, with no fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_machine_restart_a_metadata_folder_behind_the_store_continues_from_the_store() {
    let Local { dir, db, url, store } = local();
    drop(create_app_db(&db));
    let replicator = spawn_replicator(&db, &url, &[], &[]);
    wait_for_manifest(&store).await;
    write_rows(&db, 1, 100);
    wait_until_shipped(&store, &db, Duration::from_secs(60)).await;
    terminate(replicator);
    let earlier = dir.path().join("earlier-metadata");
    copy_dir(&metadata_dir(&db), &earlier);

    let mut replicator = spawn_replicator(&db, &url, &[], &[]);
    write_rows(&db, 2, 100);
    wait_until_shipped(&store, &db, Duration::from_secs(60)).await;
    replicator.kill_nine();
    let ahead = walk(&store, None).await.unwrap().last_txid;

    std::fs::remove_dir_all(metadata_dir(&db)).unwrap();
    std::fs::rename(&earlier, metadata_dir(&db)).unwrap();
    let state = rusqlite::Connection::open(metadata_dir(&db).join("state.db")).unwrap();
    assert_eq!(state.execute("UPDATE host SET boot_id = 'an earlier boot'", []).unwrap(), 1);
    drop(state);

    let replicator = spawn_replicator(&db, &url, &[], &[]);
    write_rows(&db, 3, 100);
    wait_until_shipped(&store, &db, Duration::from_secs(60)).await;
    let log = terminate(replicator);
    assert!(log.contains("does not continue the store's chain"), "{log}");
    assert!(log.contains("recorded as captured"), "the store is ahead of the folder: {log}");
    let chain = walk(&store, None).await.unwrap();
    assert!(chain.last_txid > ahead, "the chain continued after TXID {ahead}: {chain:?}");
    assert_eq!(chain.checksum, database_checksum(&db).unwrap());
}

/// Pending segments missing from the metadata folder (lost in a machine
/// restart, or deleted by hand) would leave a gap in the chain if capture
/// resumed after them; the store continues from its newest TXID instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_segments_missing_from_the_metadata_folder_make_the_store_continue_without_a_gap() {
    let Local { dir, db, url, store } = local();
    drop(create_app_db(&db));
    // An hour between uploads, and no memory for them: what is captured
    // after the first is spilled to the pending folder. With uploads an
    // hour apart captures wait for the WAL to reach the checkpoint
    // threshold (a checkpoint window captures what it holds), set low here.
    let mut replicator = Process::spawn(
        "replicate-hourly",
        dir.path(),
        Command::new(distributary())
            .args(["replicate", "--sync-interval", "1h", "--spill-size", "0", "--checkpoint-frames", "20"])
            .arg(&db)
            .arg(&url),
    );
    wait_for_manifest(&store).await;
    write_rows(&db, 1, 50);
    let segments = || -> Vec<PathBuf> {
        let mut found = Vec::new();
        for folder in std::fs::read_dir(metadata_dir(&db)).unwrap().flatten() {
            if folder.file_name().to_string_lossy().starts_with("pending-") {
                for file in std::fs::read_dir(folder.path()).unwrap().flatten() {
                    if file.file_name().to_string_lossy().ends_with(".seg") {
                        found.push(file.path());
                    }
                }
            }
        }
        found
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments().is_empty() {
        assert!(Instant::now() < deadline, "nothing was captured:\n{}", replicator.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replicator.kill_nine();
    for segment in segments() {
        std::fs::remove_file(segment).unwrap();
    }

    let replicator = spawn_replicator(&db, &url, &[], &[]);
    write_rows(&db, 2, 50);
    wait_until_shipped(&store, &db, Duration::from_secs(60)).await;
    let log = terminate(replicator);
    assert!(log.contains("is missing"), "{log}");
    let chain = walk(&store, None).await.unwrap();
    assert_eq!(chain.checksum, database_checksum(&db).unwrap());
}
