//! Reading the log: restore and `edge-reader sync` against segments made by
//! the test producer (`distributary_tests::history`). The key cases run on
//! both a local folder (`file://`) and a real S3-compatible server (moto on
//! loopback), from one test body each: `name::file` and `name::moto`. Each
//! test checks the result by rolling checksum against the primary's at the
//! same TXID, and by `integrity_check`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use distributary_core::TxId;
use distributary_core::apply::{
    IntegrityCheck, RestoreOptions, SyncOptions, database_checksum, integrity_check, replica_checksum, restore, sync,
};
use distributary_core::plan::HistoryPoint;
use distributary_core::replica::read_state;
use distributary_tests::accounts::{TOTAL, accounts_setup, transfer};
use distributary_tests::bins::binary;
use distributary_tests::counting::CountingStore;
use distributary_tests::history::{History, time_of};
use distributary_tests::on_every_store;
use distributary_tests::test_store::{Kind, MOTO_PREFIX, TestStore, file_store};

/// A restored file is byte for byte the primary's at `txid`.
fn assert_at(db: &Path, history: &History, txid: u64) {
    let (checksum, _) = database_checksum(db).unwrap();
    assert_eq!(
        checksum,
        history.checksums[txid as usize],
        "{} is not the primary's state at TXID {txid}",
        db.display()
    );
    integrity_check(db, IntegrityCheck::Full).unwrap();
}

/// A replica is the primary's state at `txid` (page 1 compared as the
/// primary wrote it: SQLite restamps its change counter on the replica).
fn assert_replica_at(db: &Path, history: &History, txid: u64) {
    let checksum = replica_checksum(db).unwrap();
    assert_eq!(
        checksum,
        history.checksums[txid as usize],
        "{} is not the primary's state at TXID {txid}",
        db.display()
    );
    assert_eq!(read_state(db).unwrap().unwrap().txid, TxId(txid));
    integrity_check(db, IntegrityCheck::Full).unwrap();
}

fn restore_options(target: HistoryPoint) -> RestoreOptions {
    RestoreOptions {
        sync: SyncOptions { target, keep_state: false, ..SyncOptions::default() },
        force: false,
        integrity: IntegrityCheck::Full,
    }
}

on_every_store!(restore_reaches_newest_a_txid_a_timestamp_and_a_snapshot);

async fn restore_reaches_newest_a_txid_a_timestamp_and_a_snapshot(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(kind, dir.path()).await;
    let (store, url) = (Arc::clone(&test_store.store), test_store.url.clone());
    let mut history = History::create(&dir.path().join("primary.db"), Arc::clone(&store), &accounts_setup()).await;
    for step in 0..29 {
        history.commit(&transfer(step)).await;
    }
    // TXIDs 2..=30 in L0; compact 2..=10 and 11..=20 into L1, snapshot at 10.
    history.compact(&[(2, 10), (11, 20)], Some(10)).await;
    for step in 29..39 {
        history.commit(&transfer(step)).await;
    }
    let newest = history.txid.0;
    assert_eq!(newest, 40);

    // Newest, through the CLI: snapshot 10, l1/11, then L0 from 21.
    let out = dir.path().join("newest.db");
    let cli = binary("distributary", "distributary");
    let output = test_store
        .command(&cli)
        .args(["restore", &url, "-o", out.to_str().unwrap(), "--json", "--integrity-check", "full"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["txid"], newest);
    assert_at(&out, &history, newest);
    // An existing output is refused without --force, and kept.
    let again = test_store.command(&cli).args(["restore", &url, "-o", out.to_str().unwrap()]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_at(&out, &history, newest);

    // A TXID inside the L1 object [11, 20]: back to L0 from 11.
    let out = dir.path().join("txid15.db");
    let summary = restore(Arc::clone(&store), &out, &restore_options(HistoryPoint::TxId(TxId(15)))).await.unwrap();
    assert_eq!(summary.to_txid, TxId(15));
    assert_at(&out, &history, 15);

    // A TXID in the middle of the L0 run after L1.
    let out = dir.path().join("txid33.db");
    restore(Arc::clone(&store), &out, &restore_options(HistoryPoint::TxId(TxId(33)))).await.unwrap();
    assert_at(&out, &history, 33);

    // A time between TXIDs 25 and 26 reaches 25.
    let out = dir.path().join("time.db");
    let summary =
        restore(Arc::clone(&store), &out, &restore_options(HistoryPoint::Timestamp(time_of(25) + 500))).await.unwrap();
    assert_eq!(summary.to_txid, TxId(25));
    assert_at(&out, &history, 25);

    // Exactly the snapshot at 10, through the CLI.
    let out = dir.path().join("snapshot.db");
    let output = test_store
        .command(&cli)
        .args(["restore", &url, "-o", out.to_str().unwrap(), "--snapshot", "10"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_at(&out, &history, 10);

    // A TXID whose L0 segments retention dropped is reported with its keys.
    history.drop_l0_through(20).await;
    let out = dir.path().join("dropped.db");
    let err = restore(Arc::clone(&store), &out, &restore_options(HistoryPoint::TxId(TxId(15)))).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("/l0/000000000000000b.seg") && message.contains("not found"), "{message}");
    assert!(!out.exists());

    // The listing commands.
    let output = test_store.command(&cli).args(["snapshots", &url, "--json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let snapshots: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let txids: Vec<u64> = snapshots.as_array().unwrap().iter().map(|s| s["txid"].as_u64().unwrap()).collect();
    assert_eq!(txids, [1, 10]);
    let output = test_store.command(&cli).args(["generations", &url, "--json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let generations: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(generations[0]["generation"], history.generation.to_string());
    assert_eq!(generations[0]["newest_txid"], newest);
}

on_every_store!(a_corrupted_object_fails_the_sync_by_name_and_keeps_the_replica);

async fn a_corrupted_object_fails_the_sync_by_name_and_keeps_the_replica(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(kind, dir.path()).await;
    let store = Arc::clone(&test_store.store);
    let mut history = History::of_transfers(&dir.path().join("primary.db"), Arc::clone(&store), 5).await;
    let replica = dir.path().join("replica.db");
    let summary = sync(Arc::clone(&store), &replica, &SyncOptions::default()).await.unwrap();
    assert_eq!(summary.to_txid, TxId(6));
    assert_replica_at(&replica, &history, 6);
    for step in 5..10 {
        history.commit(&transfer(step)).await;
    }
    let key = distributary_core::layout::l0_key(history.generation, TxId(7));
    test_store.corrupt(&key).await;

    let err = sync(Arc::clone(&store), &replica, &SyncOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains(&key), "the error names the object: {err}");
    assert_eq!(read_state(&replica).unwrap().unwrap().txid, TxId(6));
    assert_replica_at(&replica, &history, 6);
}

on_every_store!(a_replica_10000_transactions_behind_makes_one_request_per_object_and_no_list);

async fn a_replica_10000_transactions_behind_makes_one_request_per_object_and_no_list(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(kind, dir.path()).await;
    // Requests through the `Store` trait; on moto, also on the wire below.
    let counting = Arc::new(CountingStore::new(Arc::clone(&test_store.store)));
    let mut history = History::create(
        &dir.path().join("primary.db"),
        Arc::clone(&test_store.store),
        "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL);",
    )
    .await;
    let replica = dir.path().join("replica.db");
    sync(counting.clone(), &replica, &SyncOptions::default()).await.unwrap();
    for i in 0..10_000u64 {
        history.commit_many(&[format!("INSERT OR REPLACE INTO kv VALUES ({}, {i})", i % 500)]).await;
    }
    history.publish().await;
    counting.reset();
    if let Some(moto) = &test_store.moto {
        moto.start_recording();
    }
    let summary = sync(counting.clone(), &replica, &SyncOptions::default()).await.unwrap();
    let recorded = test_store.moto.as_ref().map(|moto| moto.stop_recording());
    assert_eq!(summary.to_txid, TxId(10_001));
    assert_eq!(summary.objects, 10_000);
    let gets = counting.gets.load(Ordering::SeqCst);
    // The manifest, one GET per segment, one probe that finds nothing.
    assert!(gets <= summary.objects + 3, "{gets} GETs for {} objects", summary.objects);
    assert_eq!(counting.lists.load(Ordering::SeqCst), 0, "no LIST");
    assert_eq!(counting.total(), gets, "reads only");
    if let Some(requests) = recorded {
        // What the server received, SDK retries and all: the same bound,
        // counted per object, GETs only, no LIST.
        assert!(
            requests.len() as u64 <= summary.objects + 3,
            "{} requests on the wire for {} objects",
            requests.len(),
            summary.objects
        );
        assert!(requests.iter().all(|r| r.method == "GET"), "reads only: {:?}", other_than_get(&requests));
        assert!(!requests.iter().any(|r| r.is_list()), "no LIST: {:?}", requests.iter().find(|r| r.is_list()));
        let mut per_key: HashMap<&str, u32> = HashMap::new();
        for request in &requests {
            *per_key.entry(request.key().unwrap_or_default()).or_default() += 1;
        }
        // Each segment (TXIDs 2..=10001) and the probe past the last one
        // (not found), exactly once each.
        for txid in 2..=10_002u64 {
            let key = format!("{MOTO_PREFIX}/{}", distributary_core::layout::l0_key(history.generation, TxId(txid)));
            assert_eq!(per_key.get(key.as_str()).copied(), Some(1), "GETs of {key}");
        }
        eprintln!("moto received {} requests for {} objects", requests.len(), summary.objects);
    }
    assert_replica_at(&replica, &history, 10_001);
    eprintln!("{kind:?}: 10000 transactions behind: {gets} GETs, {:.2} s", summary.seconds);
}

/// The requests that are not GETs (for a failure message).
fn other_than_get(requests: &[distributary_tests::moto::RecordedRequest]) -> Vec<String> {
    requests.iter().filter(|r| r.method != "GET").map(|r| format!("{} {}", r.method, r.target)).collect()
}

const READER_PY: &str = r#"
import os, sqlite3, sys, time
db, stop, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
reads = bad = 0
while not os.path.exists(stop):
    try:
        conn = sqlite3.connect("file:" + db + "?mode=ro", uri=True, timeout=10)
        count, total = conn.execute("SELECT count(*), sum(balance) FROM accounts").fetchone()
        conn.close()
    except sqlite3.OperationalError as e:
        print("error", e, file=sys.stderr)
        continue
    reads += 1
    if total != expected:
        bad += 1
        print("torn read:", count, total, file=sys.stderr)
print(reads, bad)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_of_the_replica_never_see_a_torn_state_while_sync_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let mut history = History::create(&dir.path().join("primary.db"), Arc::clone(&store), &accounts_setup()).await;
    let replica = dir.path().join("replica.db");
    let edge = binary("edge-reader", "edge-reader");
    let run_sync = || {
        let output =
            Command::new(&edge).args(["sync", "--source", &url, "--db", replica.to_str().unwrap()]).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    run_sync();
    let stop = dir.path().join("stop");
    let reader = Command::new("python3")
        .args(["-c", READER_PY, replica.to_str().unwrap(), stop.to_str().unwrap(), &TOTAL.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut step = 0;
    for _ in 0..12 {
        for _ in 0..15 {
            history.commit(&transfer(step)).await;
            step += 1;
        }
        run_sync();
    }
    std::fs::write(&stop, b"").unwrap();
    let output = reader.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let counts: Vec<u64> = stdout.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert!(counts[0] > 0, "the reader read: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(counts[1], 0, "torn reads: {}", String::from_utf8_lossy(&output.stderr));
    assert_replica_at(&replica, &history, history.txid.0);
    // status and query on the result.
    let output = Command::new(&edge).args(["status", "--db", replica.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["txid"], history.txid.0);
    assert_eq!(status["lag_txids"], 0);
    let output = Command::new(&edge)
        .args(["query", "--db", replica.to_str().unwrap(), "--json", "SELECT sum(balance) AS total FROM accounts"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows[0]["total"], TOTAL);
    let output = Command::new(&edge)
        .args(["query", "--db", replica.to_str().unwrap(), "DELETE FROM accounts"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "writes are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_sync_leaves_a_consistent_replica_and_the_next_sync_converges() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let mut history = History::create(&dir.path().join("primary.db"), Arc::clone(&store), &accounts_setup()).await;
    let replica = dir.path().join("replica.db");
    let edge = binary("edge-reader", "edge-reader");
    let mut step = 0;
    let mut killed_mid_run = 0;
    for round in 0..20u64 {
        for _ in 0..40 {
            history.commit(&transfer(step)).await;
            step += 1;
        }
        let mut child = Command::new(&edge)
            .args(["sync", "--source", &url, "--db", replica.to_str().unwrap(), "--concurrency", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + round * 4));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if replica.exists() {
            // Whatever the moment of the kill, the file is a committed state
            // of the primary, and SQLite finds it sound.
            let (_, pages) = database_checksum(&replica).unwrap();
            if pages > 1 {
                integrity_check(&replica, IntegrityCheck::Full).unwrap();
                let total: i64 = rusqlite::Connection::open(&replica)
                    .unwrap()
                    .query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(total, TOTAL, "round {round}: a committed state of the primary");
            }
        }
    }
    assert!(killed_mid_run > 0, "no sync was killed while running");
    let output =
        Command::new(&edge).args(["sync", "--source", &url, "--db", replica.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_replica_at(&replica, &history, history.txid.0);
    assert_eq!(read_state(&replica).unwrap().unwrap().txid, history.txid);
}

/// `edge-reader` with `args` against `test_store`; exit code, stdout, stderr.
fn edge_reader(test_store: &TestStore, args: &[&str]) -> (Option<i32>, String, String) {
    let output = test_store.command(&binary("edge-reader", "edge-reader")).args(args).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `edge-reader status --json` of `db`, asserted successful.
fn status_json(test_store: &TestStore, db: &Path, extra: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) =
        edge_reader(test_store, &[&["status", "--json", "--db", db.to_str().unwrap()][..], extra].concat());
    assert_eq!(code, Some(0), "status: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Rows of `table`, by plain SQLite.
fn rows_of(db: &Path, table: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut statement = conn.prepare(&format!("SELECT body FROM {table} ORDER BY rowid")).unwrap();
    statement.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// Issue 15 (3): `sync --db` on an ordinary SQLite file reported "synced
/// from nothing" and the file's own rows were gone. Now `sync` and `serve`
/// refuse a file that is not this store's replica, and `--force` replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_and_serve_refuse_a_database_that_is_not_the_stores_replica_and_force_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(Kind::File, &dir.path().join("a")).await;
    let mut history =
        History::create(&dir.path().join("primary.db"), Arc::clone(&test_store.store), &accounts_setup()).await;
    for step in 0..3 {
        history.commit(&transfer(step)).await;
    }
    let url = test_store.url.clone();

    // An ordinary database: refused by sync, and by serve before it listens.
    let mine = dir.path().join("mine.db");
    rusqlite::Connection::open(&mine)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me'), ('me too');")
        .unwrap();
    let (code, stdout, stderr) = edge_reader(&test_store, &["sync", "--source", &url, "--db", mine.to_str().unwrap()]);
    assert_eq!(code, Some(1), "refused: {stdout} {stderr}");
    assert!(stderr.contains("not a replica") && stderr.contains("--force") && stderr.contains("1 table"), "{stderr}");
    assert_eq!(rows_of(&mine, "notes"), ["keep me", "me too"], "the file is untouched");
    assert!(read_state(&mine).unwrap().is_none(), "no sidecar was written");
    let mut serve = distributary_tests::process::Process::spawn(
        "serve-mine",
        dir.path(),
        test_store.command(&binary("edge-reader", "edge-reader")).args([
            "serve",
            "--source",
            &url,
            "--db",
            mine.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]),
    );
    let status = serve.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "serve refuses it: {}", serve.log());
    assert!(serve.log().contains("not a replica") && !serve.log().contains(" on http://"), "{}", serve.log());
    assert_eq!(rows_of(&mine, "notes"), ["keep me", "me too"]);

    // --force replaces it with the store's database.
    let (code, stdout, stderr) =
        edge_reader(&test_store, &["sync", "--source", &url, "--db", mine.to_str().unwrap(), "--force"]);
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert_replica_at(&mine, &history, 4);

    // An empty file is bootstrapped as before.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let (code, _, stderr) = edge_reader(&test_store, &["sync", "--source", &url, "--db", empty.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_replica_at(&empty, &history, 4);

    // Another store's replica: refused, and left at its state.
    let other = TestStore::new(Kind::File, &dir.path().join("b")).await;
    let other_history =
        History::create(&dir.path().join("other.db"), Arc::clone(&other.store), &accounts_setup()).await;
    let theirs = dir.path().join("theirs.db");
    let (code, _, stderr) = edge_reader(&other, &["sync", "--source", &other.url, "--db", theirs.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = edge_reader(&test_store, &["sync", "--source", &url, "--db", theirs.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is a replica of") && stderr.contains(&other.url), "{stderr}");
    assert_replica_at(&theirs, &other_history, 1);
    assert_eq!(read_state(&theirs).unwrap().unwrap().generation, other_history.generation);

    // The same store starting a new generation is followed, not refused.
    let later = distributary_core::GenerationId::new(distributary_tests::history::BASE_MS + 1).unwrap();
    let path = dir.path().join("primary2.db");
    let mut next = History::create_generation(&path, Arc::clone(&test_store.store), &accounts_setup(), later).await;
    next.commit(&transfer(0)).await;
    let (code, stdout, stderr) = edge_reader(&test_store, &["sync", "--source", &url, "--db", mine.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert!(stdout.contains("bootstrapped"), "{stdout}");
    assert_replica_at(&mine, &next, 2);
}

/// Issue 15 (6): after a sync that failed on a corrupt object, the
/// sidecar's `synced_ms` had moved and `status` showed the failed attempt
/// as the last sync, with "lag 0" while the store was ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_sync_is_recorded_apart_from_the_last_success_and_status_shows_both() {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(Kind::File, dir.path()).await;
    let mut history =
        History::create(&dir.path().join("primary.db"), Arc::clone(&test_store.store), &accounts_setup()).await;
    for step in 0..5 {
        history.commit(&transfer(step)).await;
    }
    let replica = dir.path().join("replica.db");
    let db = replica.to_str().unwrap();
    let (code, _, stderr) = edge_reader(&test_store, &["sync", "--source", &test_store.url, "--db", db]);
    assert_eq!(code, Some(0), "{stderr}");
    let succeeded = read_state(&replica).unwrap().unwrap();
    assert!(succeeded.synced_ms > 0 && succeeded.last_failure.is_none(), "{succeeded:?}");
    // Two good objects, then a corrupt one: the sync keeps the good ones.
    for step in 5..10 {
        history.commit(&transfer(step)).await;
    }
    let key = distributary_core::layout::l0_key(history.generation, TxId(9));
    test_store.corrupt(&key).await;
    let (code, _, stderr) = edge_reader(&test_store, &["sync", "--source", &test_store.url, "--db", db]);
    assert_eq!(code, Some(1), "{stderr}");
    let failed = read_state(&replica).unwrap().unwrap();
    assert_eq!(failed.txid, TxId(8), "the objects before the bad one are kept");
    assert_eq!(failed.synced_ms, succeeded.synced_ms, "a failed sync is not a success");
    let failure = failed.last_failure.clone().expect("the failure is recorded");
    assert!(failure.at_ms >= succeeded.synced_ms && failure.error.contains(&key), "{failure:?}");

    let status = status_json(&test_store, &replica, &[]);
    assert_eq!(status["last_success_ms"], succeeded.synced_ms);
    assert_eq!(status["last_failure_ms"], failure.at_ms);
    assert!(status["last_failure"].as_str().unwrap().contains(&key), "{status}");
    assert_eq!((status["txid"].clone(), status["store_newest_txid"].clone()), (8.into(), 11.into()), "{status}");
    assert_eq!(status["lag_txids"], 3, "{status}");
    let (code, stdout, stderr) = edge_reader(&test_store, &["status", "--db", db]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("last failure") && stdout.contains(&key) && stdout.contains("lag           3 transactions"),
        "{stdout}"
    );
    // The help documents the exit codes.
    let (_, help, _) = edge_reader(&test_store, &["--help"]);
    assert!(help.contains("Exit status") && help.contains("--force replaces it"), "{help}");
}

/// Issue 15 (7): `distributary generations` showed NEWEST TXID 1 while the
/// store held far more, and `edge-reader status` put the store's newest
/// below the replica's own TXID: both read the manifest's `newest`, which
/// moves only when the compactor runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_and_generations_find_the_newest_txid_past_a_stale_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(Kind::File, dir.path()).await;
    let mut history =
        History::create(&dir.path().join("primary.db"), Arc::clone(&test_store.store), &accounts_setup()).await;
    // L0 segments only: the manifest stays at TXID 1.
    for step in 0..20 {
        history.commit_many(&[transfer(step)]).await;
    }
    let replica = dir.path().join("replica.db");
    let (code, _, stderr) =
        edge_reader(&test_store, &["sync", "--source", &test_store.url, "--db", replica.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_replica_at(&replica, &history, 21);
    let status = status_json(&test_store, &replica, &[]);
    assert_eq!((status["store_newest_txid"].clone(), status["lag_txids"].clone()), (21.into(), 0.into()), "{status}");
    for step in 20..25 {
        history.commit_many(&[transfer(step)]).await;
    }
    let status = status_json(&test_store, &replica, &[]);
    assert_eq!((status["store_newest_txid"].clone(), status["lag_txids"].clone()), (26.into(), 5.into()), "{status}");
    let output = test_store
        .command(&binary("distributary", "distributary"))
        .args(["generations", &test_store.url, "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let generations: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(generations[0]["newest_txid"], 26, "{generations}");
}

/// Issue 15 (11): after `sync --source "s3://bucket/app?endpoint=..."`,
/// `status` could not reach the store: the sidecar kept the display form
/// `s3://bucket/app (endpoint ...)`, which is no URL. Sidecars written that
/// way still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_reaches_an_s3_store_with_an_endpoint_through_the_url_its_sidecar_records() {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(Kind::Moto, dir.path()).await;
    let mut history =
        History::create(&dir.path().join("primary.db"), Arc::clone(&test_store.store), &accounts_setup()).await;
    history.commit(&transfer(0)).await;
    let replica = dir.path().join("replica.db");
    let (code, _, stderr) =
        edge_reader(&test_store, &["sync", "--source", &test_store.url, "--db", replica.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(read_state(&replica).unwrap().unwrap().source, test_store.url, "the URL as given");
    let status = status_json(&test_store, &replica, &[]);
    assert_eq!(
        (status["lag_txids"].clone(), status["lag_error"].clone()),
        (0.into(), serde_json::Value::Null),
        "{status}"
    );
    // A sidecar of an earlier version, with the display form.
    let mut state = read_state(&replica).unwrap().unwrap();
    let endpoint = test_store.moto.as_ref().unwrap().endpoint();
    state.source = format!("{} (endpoint {endpoint})", test_store.url.split('?').next().unwrap());
    distributary_core::replica::write_state(&replica, &state).unwrap();
    let status = status_json(&test_store, &replica, &[]);
    assert_eq!(
        (status["lag_txids"].clone(), status["lag_error"].clone()),
        (0.into(), serde_json::Value::Null),
        "{status}"
    );
    // And the next sync, from the URL, is not refused as another store's.
    let (code, _, stderr) =
        edge_reader(&test_store, &["sync", "--source", &test_store.url, "--db", replica.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(read_state(&replica).unwrap().unwrap().source, test_store.url);
}

/// Issue 15 (10): the local `edge-reader query` allowed `ATTACH` of an
/// existing file and `PRAGMA writable_schema = ON`, and refused the
/// `PRAGMA journal_mode` read: it now has serve's authorizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_query_has_serves_authorizer() {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(Kind::File, dir.path()).await;
    let _history =
        History::create(&dir.path().join("primary.db"), Arc::clone(&test_store.store), &accounts_setup()).await;
    let replica = dir.path().join("replica.db");
    let db = replica.to_str().unwrap();
    let (code, _, stderr) = edge_reader(&test_store, &["sync", "--source", &test_store.url, "--db", db]);
    assert_eq!(code, Some(0), "{stderr}");
    let other = dir.path().join("primary.db");
    for sql in [
        format!("ATTACH '{}' AS other", other.display()),
        "PRAGMA writable_schema = ON".to_string(),
        "PRAGMA journal_mode = DELETE".into(),
        "DELETE FROM accounts".into(),
    ] {
        let (code, stdout, stderr) = edge_reader(&test_store, &["query", "--db", db, &sql]);
        assert_eq!(code, Some(1), "{sql}: {stdout}");
        assert!(stderr.contains("refuse") && stderr.contains("not allowed"), "{sql}: {stderr}");
    }
    let (code, stdout, stderr) = edge_reader(&test_store, &["query", "--db", db, "--json", "PRAGMA journal_mode"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        serde_json::json!([{"journal_mode": "wal"}])
    );
}
