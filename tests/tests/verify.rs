//! `distributary verify`: a healthy store verifies clean (made by
//! `distributary replicate` and `distributary compact` with retention, by
//! the test producer, and encrypted by the compactor without the key), and
//! each kind of damage is reported by the object's key with exit status 1,
//! in text and in `--json`. The damage cases run on a local folder and on a
//! real S3-compatible server (moto on loopback), where moto's request
//! recorder proves that no LIST is made without `--list`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use distributary_core::clock::ManualClock;
use distributary_core::compact::{CompactConfig, compact};
use distributary_core::format::{Compression, EncryptionKey, PageCodec, SegmentEncoder, SegmentReader};
use distributary_core::layout::{l0_key, l1_key, snapshot_key};
use distributary_core::manifest::update_manifest;
use distributary_core::store::PutMode;
use distributary_core::{Checksum, GenerationId, TxId};
use distributary_tests::accounts::{accounts_setup, transfer};
use distributary_tests::history::History;
use distributary_tests::on_every_store;
use distributary_tests::synthetic::{SyntheticDb, put};
use distributary_tests::test_store::{Kind, TestStore};
use serde_json::Value;

/// `distributary verify URL EXTRA... --json`, parsed, with its exit code.
fn verify_json(store: &TestStore, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["verify", store.url.as_str(), "--json"];
    args.extend_from_slice(extra);
    let output = store.distributary(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify --json printed no JSON ({e}): {stdout}\n{}", stderr(&output)));
    (output.status.code().unwrap_or(-1), json)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `(key, kind)` of each problem of a `--json` report.
fn problems(json: &Value) -> Vec<(String, String)> {
    json["problems"]
        .as_array()
        .expect("problems is an array")
        .iter()
        .map(|p| (p["key"].as_str().unwrap().to_string(), p["kind"].as_str().unwrap().to_string()))
        .collect()
}

/// Asserts a text run is clean: exit 0, no line but the summary.
fn assert_clean(store: &TestStore, extra: &[&str]) -> String {
    let mut args = vec!["verify", store.url.as_str()];
    args.extend_from_slice(extra);
    let output = store.distributary(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "verify {extra:?} is not clean:\n{stdout}{}", stderr(&output));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the summary line: {stdout}");
    assert!(lines[0].starts_with("verified ") && lines[0].ends_with(", 0 problems"), "{stdout}");
    eprintln!("$ distributary verify {extra:?}\n{stdout}");
    stdout
}

/// Asserts a text run reports `key` with `kind` and exits 1; returns stdout.
fn assert_reports(store: &TestStore, extra: &[&str], kind: &str, key: &str) -> String {
    let mut args = vec!["verify", store.url.as_str()];
    args.extend_from_slice(extra);
    let output = store.distributary(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "verify {extra:?} should fail:\n{stdout}{}", stderr(&output));
    let line = format!("{kind}: {key}: ");
    assert!(stdout.lines().any(|l| l.starts_with(&line)), "no line starting {line:?}:\n{stdout}");
    let summary = stdout.lines().last().unwrap();
    assert!(summary.starts_with("verified ") && !summary.ends_with(", 0 problems"), "{stdout}");
    eprintln!("$ distributary verify {extra:?}\n{stdout}");
    stdout
}

// --- a store made by the real programs -------------------------------------

fn write_rows(db: &Path, from: u32, count: u32) {
    let connection = rusqlite::Connection::open(db).unwrap();
    for i in from..from + count {
        connection
            .execute(
                "INSERT INTO events (body) VALUES (?1)",
                [format!("event {i} {}", "x".repeat(200 + (i % 7) as usize * 300))],
            )
            .unwrap();
    }
}

fn replicate_once(store: &TestStore, db: &Path) {
    let output = store.distributary(&["replicate", "--once", db.to_str().unwrap(), &store.url]);
    assert!(output.status.success(), "replicate --once: {}", stderr(&output));
}

/// The L1 window `compact_cli` uses; the newest window closes a whole window
/// past its end.
const L1_WINDOW_MS: u64 = 100;

fn compact_cli(store: &TestStore, snapshot_retention: &str) {
    // Every segment written so far must fall in a closed window, or this
    // compaction leaves the newest ones in L0 (on a fast machine, all of
    // them). The wait is for the clock to reach the window's closing time.
    let closes_at = (distributary_core::clock::now_ms() / L1_WINDOW_MS + 2) * L1_WINDOW_MS;
    loop {
        let left = closes_at.saturating_sub(distributary_core::clock::now_ms());
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(left));
    }
    let l1_window = format!("{L1_WINDOW_MS}ms");
    let output = store.distributary(&[
        "compact",
        &store.url,
        "--l1-window",
        &l1_window,
        "--snapshot-interval",
        "1ms",
        "--l0-retention",
        "0s",
        "--snapshot-retention",
        snapshot_retention,
    ]);
    assert!(output.status.success(), "compact: {}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_made_by_replicate_and_compact_with_retention_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::new(Kind::File, dir.path()).await;
    let db = dir.path().join("app.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    connection.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT);").unwrap();
    drop(connection);
    replicate_once(&store, &db);
    // Rounds of writes, each shipped as L0; compaction with snapshots, L0
    // retention and the retirement of every snapshot but the newest.
    for round in 0..4 {
        write_rows(&db, round * 10, 10);
        replicate_once(&store, &db);
    }
    compact_cli(&store, "0s");
    // More rounds, compacted keeping every snapshot, then an L0 tail.
    for round in 4..8 {
        write_rows(&db, round * 10, 10);
        replicate_once(&store, &db);
    }
    compact_cli(&store, "1h");
    write_rows(&db, 80, 5);
    replicate_once(&store, &db);

    let manifest = distributary_core::manifest::read_manifest(store.store.as_ref()).await.unwrap().unwrap().value;
    let index = distributary_core::manifest::read_snapshot_index(store.store.as_ref(), manifest.generation)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert!(manifest.l1.is_some(), "compaction made L1 segments: {manifest:?}");
    assert!(manifest.l0_kept_min_txid.is_some(), "L0 retention ran: {manifest:?}");
    assert!(index.snapshots.len() >= 2, "several snapshots are kept: {index:?}");
    assert!(index.snapshots[0].txid > TxId(1), "the genesis snapshot was retired: {index:?}");

    assert_clean(&store, &[]);
    assert_clean(&store, &["--deep"]);
    assert_clean(&store, &["--list", "--deep"]);
    let (code, json) = verify_json(&store, &["--list"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["problem_count"], 0);
    assert_eq!(json["generations"], 1);
    assert!(json["objects"].as_u64().unwrap() >= 6, "{json}");
}

// --- damage, on every kind of store ------------------------------------------

on_every_store!(each_kind_of_damage_is_reported_by_key_with_exit_status_1);

async fn each_kind_of_damage_is_reported_by_key_with_exit_status_1(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(kind, dir.path()).await;
    let store = Arc::clone(&test_store.store);
    let mut history = History::of_transfers(&dir.path().join("primary.db"), Arc::clone(&store), 29).await;
    // TXIDs 2..=30 in L0; L1 [2, 10] and [11, 20]; snapshots 1 and 10; L0 to 40.
    history.compact(&[(2, 10), (11, 20)], Some(10)).await;
    for step in 29..39 {
        history.commit(&transfer(step)).await;
    }
    let generation = history.generation;

    // Healthy: clean, and no LIST without --list (moto records what it gets).
    if let Some(moto) = &test_store.moto {
        moto.start_recording();
    }
    assert_clean(&test_store, &[]);
    assert_clean(&test_store, &["--deep"]);
    if let Some(moto) = &test_store.moto {
        let requests = moto.stop_recording();
        assert!(!requests.is_empty());
        assert!(!requests.iter().any(|r| r.is_list()), "a LIST without --list: {requests:?}");
        assert!(requests.iter().all(|r| r.method == "GET"), "reads only: {requests:?}");
        moto.start_recording();
    }
    assert_clean(&test_store, &["--list"]);
    if let Some(moto) = &test_store.moto {
        assert!(moto.stop_recording().iter().any(|r| r.is_list()), "--list lists");
    }

    // 1. A missing L0 in the middle of the chain after L1: TXID 33.
    let missing = l0_key(generation, TxId(33));
    let (saved, _) = store.get_bytes(&missing).await.unwrap();
    store.delete(std::slice::from_ref(&missing)).await.unwrap();
    assert_reports(&test_store, &[], "missing", &missing);
    let (code, json) = verify_json(&test_store, &[]);
    assert_eq!(code, 1);
    assert_eq!(problems(&json), [(missing.clone(), "missing".to_string())], "{json}");
    assert_eq!(json["problem_count"], 1);
    // With --list, the segments stranded after the hole are orphans.
    let (code, json) = verify_json(&test_store, &["--list"]);
    assert_eq!(code, 1);
    let found = problems(&json);
    assert!(found.contains(&(missing.clone(), "missing".into())), "{json}");
    assert!(found.contains(&(l0_key(generation, TxId(34)), "orphan".into())), "{json}");
    store.put(&missing, saved.into(), PutMode::Create).await.unwrap();
    assert_clean(&test_store, &[]);

    // 2. A flipped byte in a segment: caught by the file checksum without
    // --deep, and with it.
    let flipped = l0_key(generation, TxId(25));
    let (saved, _) = store.get_bytes(&flipped).await.unwrap();
    let mut bytes = saved.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    test_store.overwrite(&flipped, bytes).await;
    let text = assert_reports(&test_store, &[], "corrupt", &flipped);
    assert!(text.contains("checksum mismatch"), "{text}");
    assert_reports(&test_store, &["--deep"], "corrupt", &flipped);
    let (code, json) = verify_json(&test_store, &["--deep"]);
    assert_eq!(code, 1);
    assert!(problems(&json).contains(&(flipped.clone(), "corrupt".into())), "{json}");
    test_store.overwrite(&flipped, saved.to_vec()).await;
    assert_clean(&test_store, &[]);

    // 3. A snapshot deleted while the index and the manifest name it.
    let snapshot = snapshot_key(generation, TxId(10));
    let (saved, _) = store.get_bytes(&snapshot).await.unwrap();
    store.delete(std::slice::from_ref(&snapshot)).await.unwrap();
    let text = assert_reports(&test_store, &[], "missing", &snapshot);
    assert!(text.contains("names it"), "{text}");
    let (code, json) = verify_json(&test_store, &[]);
    assert_eq!(code, 1);
    assert_eq!(problems(&json), [(snapshot.clone(), "missing".to_string())], "{json}");
    store.put(&snapshot, saved.into(), PutMode::Create).await.unwrap();

    // 4. A stale manifest: it still names the L1 chain from TXID 2, whose
    // first segment is gone (as if retention ran without updating it).
    let l1 = l1_key(generation, TxId(2));
    store.delete(std::slice::from_ref(&l1)).await.unwrap();
    assert_reports(&test_store, &[], "missing", &l1);
    let (code, json) = verify_json(&test_store, &[]);
    assert_eq!(code, 1);
    let found = problems(&json);
    assert!(found.contains(&(l1.clone(), "missing".into())), "{json}");
    // Snapshot 1's restore chain goes through it.
    assert!(found.contains(&(snapshot_key(generation, TxId(1)), "unreachable".into())), "{json}");
    for problem in json["problems"].as_array().unwrap() {
        assert!(!problem["message"].as_str().unwrap().is_empty());
    }
}

// --- what --deep adds ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deep_recomputes_a_post_apply_checksum_that_nothing_else_contradicts() {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(Kind::File, dir.path()).await;
    let store = Arc::clone(&test_store.store);
    let mut history = History::create(&dir.path().join("primary.db"), Arc::clone(&store), &accounts_setup()).await;
    for step in 0..12 {
        history.commit(&transfer(step)).await;
    }
    history.compact(&[(2, 6)], Some(6)).await;
    // The newest segment re-encoded with a wrong post-apply checksum (file
    // checksum and all else sound), and the manifest agreeing with it: only
    // the pages can tell.
    let key = l0_key(history.generation, history.txid);
    let (bytes, _) = store.get_bytes(&key).await.unwrap();
    let mut reader = SegmentReader::open(key.clone(), &bytes[..]).unwrap();
    let header = reader.header().clone();
    let mut codec = PageCodec::new(history.generation, None, Compression::default()).unwrap();
    let mut page = vec![0u8; header.page_size as usize];
    let mut pages = Vec::new();
    while let Some(pgno) = reader.next_page(&mut codec, &mut page).unwrap() {
        pages.push((pgno, page.clone()));
    }
    let wrong = Checksum(reader.trailer().unwrap().post_apply_checksum.0 ^ 1);
    let mut encoder = SegmentEncoder::new(key.clone(), header, Vec::new()).unwrap();
    for (pgno, page) in &pages {
        encoder.write_page(&mut codec, *pgno, page).unwrap();
    }
    test_store.overwrite(&key, encoder.finish(wrong).unwrap().0).await;
    update_manifest(store.as_ref(), |current| {
        let mut next = current.unwrap().clone();
        next.newest.checksum = wrong;
        Ok(Some(next))
    })
    .await
    .unwrap();

    assert_clean(&test_store, &[]);
    let text = assert_reports(&test_store, &["--deep"], "checksum", &key);
    assert!(text.contains("post-apply checksum mismatch"), "{text}");
}

// --- encrypted, compacted without the key ------------------------------------

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encrypted_store_verifies_without_the_key_and_deep_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let test_store = TestStore::new(Kind::File, dir.path()).await;
    let store = test_store.store.as_ref();
    let key = EncryptionKey::from_bytes([7; 32]);
    let key_file: PathBuf = dir.path().join("key");
    std::fs::write(&key_file, "07".repeat(32)).unwrap();
    let mut bytes = [9u8; 16];
    bytes[..6].copy_from_slice(&T0.to_be_bytes()[2..]);
    let mut db = SyntheticDb::new(GenerationId(bytes), 512, 30, Some(key), 5);
    db.create_generation(store, T0).await.unwrap();
    for i in 0..20u64 {
        put(store, &db.next_l0(1 + i % 3, 5, T0 + (i + 1) * 20_000).unwrap()).await.unwrap();
    }
    // The compactor never has the key: L1 and snapshots merged as sealed bytes.
    let config = CompactConfig {
        l1_window: Duration::from_secs(60),
        snapshot_interval: Duration::from_secs(120),
        snapshot_retention: Duration::from_secs(3_600),
        l0_retention: Duration::from_secs(60),
        max_fan_in: 4,
        temp_dir: None,
    };
    compact(store, &config, &ManualClock::new(T0 + 420_000)).await.unwrap();
    for i in 20..24u64 {
        put(store, &db.next_l0(1, 5, T0 + (i + 1) * 20_000).unwrap()).await.unwrap();
    }

    assert_clean(&test_store, &[]);
    assert_clean(&test_store, &["--list"]);
    // Without the key --deep checks every byte but opens no frame, and says so.
    let output = test_store.distributary(&["verify", &test_store.url, "--deep"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("decoded no frame"), "{}", stderr(&output));
    let key_arg = key_file.to_str().unwrap();
    assert_clean(&test_store, &["--deep", "--encryption-key-file", key_arg]);
    // Another key is refused with a clear message.
    let other = dir.path().join("other-key");
    std::fs::write(&other, "08".repeat(32)).unwrap();
    let output = test_store.distributary(&[
        "verify",
        &test_store.url,
        "--deep",
        "--encryption-key-file",
        other.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("is not the store's"), "{}", stderr(&output));

    // A flipped byte in a sealed L1 segment is caught without the key.
    let manifest = distributary_core::manifest::read_manifest(store).await.unwrap().unwrap().value;
    let chain = manifest.l1.expect("compaction made L1 segments");
    let l1 = l1_key(db.generation, chain.min_txid);
    let (saved, _) = store.get_bytes(&l1).await.unwrap();
    let mut bytes = saved.to_vec();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    test_store.overwrite(&l1, bytes).await;
    assert_reports(&test_store, &[], "corrupt", &l1);
}
