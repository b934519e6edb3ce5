//! The compactor end to end: the Lambda handler fed real S3 event JSON with
//! the store on moto, the real Lambda runtime API (`cargo lambda watch`),
//! duplicate / reordered / concurrent invocations, crashes at every step, and
//! retention over simulated days with an injected clock. "Restores" means:
//! read the snapshot and its chain with core's decoder, rebuild the image
//! page by page, and recompute the rolling checksum.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use distributary_core::clock::{Clock, ManualClock};
use distributary_core::compact::{CompactConfig, CompactMemory, compact, compact_watching, compact_with};
use distributary_core::format::EncryptionKey;
use distributary_core::layout::{Level, SegmentKey, l0_key};
use distributary_core::manifest::{SnapshotRef, read_manifest, read_snapshot_index};
use distributary_core::store::{FileStore, Store};
use distributary_core::{GenerationId, TxId};
use distributary_lambda::{Compactor, handle};
use distributary_tests::counting::CountingStore;
use distributary_tests::lambda::{LambdaWatch, s3_event};
use distributary_tests::moto::MotoServer;
use distributary_tests::synthetic::{
    CrashingStore, SyntheticDb, check_references, header, put, restore_chain, restore_snapshot,
};
use lambda_runtime::{Context, LambdaEvent};

/// 2026-01-01T00:00:00Z, a round number of windows.
const T0: u64 = 1_767_225_600_000;
const PAGE_SIZE: u32 = 512;

fn generation(n: u8) -> GenerationId {
    let mut bytes = [n; 16];
    bytes[..6].copy_from_slice(&T0.to_be_bytes()[2..]);
    GenerationId(bytes)
}

/// Small thresholds so a test's simulated hour holds every kind of event.
fn quick_config() -> CompactConfig {
    CompactConfig {
        l1_window: Duration::from_secs(60),
        snapshot_interval: Duration::from_secs(300),
        snapshot_retention: Duration::from_secs(1_800),
        l0_retention: Duration::from_secs(120),
        max_fan_in: 4,
        temp_dir: None,
    }
}

/// Writes genesis and `count` L0 segments `step_ms` apart from `T0`.
async fn history(store: &dyn Store, db: &mut SyntheticDb, count: u32, step_ms: u64) -> Result<Vec<String>> {
    db.create_generation(store, T0).await?;
    let mut keys = Vec::new();
    for i in 0..count {
        let object = db.next_l0(1 + u64::from(i % 3), 6, T0 + u64::from(i + 1) * step_ms)?;
        put(store, &object).await?;
        keys.push(object.0);
    }
    Ok(keys)
}

/// Every snapshot in the index restores to the primary's checksum at its
/// TXID, and the oldest one's chain reaches the newest state.
async fn assert_restorable(
    store: &dyn Store,
    db: &SyntheticDb,
    key: Option<&EncryptionKey>,
) -> Result<Vec<SnapshotRef>> {
    let manifest = check_references(store).await?;
    let index = read_snapshot_index(store, db.generation).await?.context("index")?.value;
    for snapshot in &index.snapshots {
        let checksum = restore_snapshot(store, db.generation, snapshot.txid, key).await?;
        ensure!(Some(&checksum) == db.history.get(&snapshot.txid), "snapshot {} restores to {checksum}", snapshot.txid);
        ensure!(checksum == snapshot.checksum, "index checksum of {} differs", snapshot.txid);
    }
    let oldest = index.snapshots.first().context("no snapshot")?;
    let (txid, checksum) = restore_chain(store, db.generation, oldest.txid, key).await?;
    ensure!(
        txid >= manifest.newest.txid,
        "chain from {} stops at {txid} before newest {}",
        oldest.txid,
        manifest.newest.txid
    );
    ensure!(Some(&checksum) == db.history.get(&txid), "chain restores {txid} to {checksum}");
    Ok(index.snapshots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handler_compacts_every_store_named_by_an_s3_event() -> Result<()> {
    let moto = MotoServer::start();
    let base = moto.base_store().await;
    let bucket = moto.create_bucket();
    // A prefix that needs URL-encoding in events (space and plus).
    let (prefix_a, prefix_b) = ("apps/my db+1", "other");
    let store_a = base.with_location(bucket.clone(), prefix_a.into());
    let store_b = base.with_location(bucket.clone(), prefix_b.into());
    let mut db_a = SyntheticDb::new(generation(1), PAGE_SIZE, 40, None, 1);
    let mut db_b = SyntheticDb::new(generation(2), PAGE_SIZE, 20, None, 2);
    // 12 minutes of syncs, one every 30 s: 12 windows, snapshots every 5 minutes.
    let keys_a = history(&store_a, &mut db_a, 24, 30_000).await?;
    let keys_b = history(&store_b, &mut db_b, 6, 30_000).await?;

    let clock = Arc::new(ManualClock::new(T0 + 15 * 60_000));
    let compactor = Compactor::new(base.clone(), quick_config(), clock.clone());
    let event = s3_event(&[
        ("ObjectCreated:Put", &bucket, format!("{prefix_a}/{}", keys_a[3])),
        ("ObjectCreated:CompleteMultipartUpload", &bucket, format!("{prefix_a}/{}", keys_a[20])),
        ("ObjectCreated:Put", &bucket, format!("{prefix_b}/{}", keys_b[5])),
        // Not L0 segments: ignored.
        ("ObjectCreated:Put", &bucket, format!("{prefix_a}/manifest.json")),
        ("ObjectCreated:Put", &bucket, format!("{prefix_a}/{}/l1/0000000000000002.seg", db_a.generation)),
    ]);
    let response = handle(&compactor, LambdaEvent::new(event, Context::default())).await?;
    let prefixes: Vec<&str> = response.compacted.iter().map(|c| c.target.prefix.as_str()).collect();
    assert_eq!(prefixes, [prefix_a, prefix_b], "one compaction per store, URL-decoded");

    for (store, db) in [(&store_a, &db_a), (&store_b, &db_b)] {
        let manifest = read_manifest(store).await?.context("manifest")?.value;
        assert_eq!(manifest.newest.txid, db.txid(), "newest follows the L0 chain");
        assert_eq!(manifest.newest.checksum, db.checksum());
        let l1 = manifest.l1.context("L1 chain")?;
        assert_eq!(l1.max_txid, db.txid(), "every window is closed 3 minutes later");
        let snapshots = assert_restorable(store, db, None).await?;
        // 12 minutes of history for A: snapshots at 5 and 10 minutes; B's 3 minutes hold none.
        let expected = if db.generation == db_a.generation { 3 } else { 1 };
        assert_eq!(snapshots.len(), expected, "a snapshot every 5 minutes: {snapshots:?}");
    }

    // An event naming no L0 segment compacts nothing.
    let event = s3_event(&[("ObjectCreated:Put", &bucket, format!("{prefix_a}/manifest.json"))]);
    let response = handle(&compactor, LambdaEvent::new(event, Context::default())).await?;
    assert!(response.compacted.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handler_returns_failures_naming_the_store_and_object() -> Result<()> {
    let moto = MotoServer::start();
    let base = moto.base_store().await;
    let bucket = moto.create_bucket();
    let store = base.with_location(bucket.clone(), "db".into());
    let mut db = SyntheticDb::new(generation(3), PAGE_SIZE, 16, None, 3);
    db.create_generation(&store, T0).await?;
    let (key, mut bytes) = db.next_l0(1, 4, T0 + 1_000)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    put(&store, &(key.clone(), bytes)).await?;
    put(&store, &db.next_l0(1, 4, T0 + 90_000)?).await?;

    let compactor = Compactor::new(base, quick_config(), Arc::new(ManualClock::new(T0 + 600_000)));
    let event = s3_event(&[("ObjectCreated:Put", &bucket, format!("db/{key}"))]);
    let error = handle(&compactor, LambdaEvent::new(event, Context::default())).await.unwrap_err().to_string();
    assert!(error.contains(&format!("s3://{bucket}/db")) && error.contains(&key), "{error}");
    assert!(error.contains("checksum mismatch"), "{error}");
    // Nothing was published from the corrupt input.
    let manifest = read_manifest(&store).await?.context("manifest")?.value;
    assert_eq!(manifest.l1, None);
    Ok(())
}

/// Feeds `store` the same L0 history round by round, compacting after each
/// round with `invoke`; returns the snapshots kept at the end.
async fn run_rounds<F, Fut>(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    reorder: bool,
    invoke: F,
) -> Result<Vec<SnapshotRef>>
where
    F: Fn(Arc<dyn Store>, u32) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut db = SyntheticDb::new(generation(4), PAGE_SIZE, 48, None, 4);
    db.create_generation(store.as_ref(), T0).await?;
    let mut now = T0;
    for round in 0..24u32 {
        let mut objects = Vec::new();
        for _ in 0..3 {
            now += 25_000;
            objects.push(db.next_l0(1 + u64::from(round % 2), 5, now)?);
        }
        if reorder {
            // Uploads land out of order: the compactor may see a gap first.
            objects.reverse();
            put(store.as_ref(), &objects[0]).await?;
            invoke(store.clone(), round).await?;
            for object in &objects[1..] {
                put(store.as_ref(), object).await?;
            }
        } else {
            for object in &objects {
                put(store.as_ref(), object).await?;
            }
        }
        clock.set(now + 5_000);
        invoke(store.clone(), round).await?;
        if reorder {
            // A late duplicate of an old event.
            invoke(store.clone(), round).await?;
        }
        check_references(store.as_ref()).await.with_context(|| format!("after round {round}"))?;
    }
    // Let every window close and retention catch up.
    clock.set(now + 10 * 60_000);
    invoke(store.clone(), 999).await?;
    assert_restorable(store.as_ref(), &db, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_reordered_and_concurrent_invocations_match_one_sequential_run() -> Result<()> {
    let config = quick_config();
    let sequential_dir = tempfile::tempdir()?;
    let sequential: Arc<dyn Store> = Arc::new(FileStore::new(sequential_dir.path()));
    let clock = Arc::new(ManualClock::new(T0));
    let expected = run_rounds(sequential.clone(), clock.clone(), false, |store, _| {
        let (config, clock) = (config.clone(), clock.clone());
        async move {
            compact(store.as_ref(), &config, clock.as_ref()).await?;
            Ok(())
        }
    })
    .await?;
    assert!(expected.len() >= 3, "the history spans several snapshots: {expected:?}");

    let concurrent_dir = tempfile::tempdir()?;
    let concurrent: Arc<dyn Store> = Arc::new(FileStore::new(concurrent_dir.path()));
    let clock = Arc::new(ManualClock::new(T0));
    let snapshots = run_rounds(concurrent.clone(), clock.clone(), true, |store, _| {
        let (config, clock) = (config.clone(), clock.clone());
        async move {
            // Eight invocations at once, while a checker watches the references.
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (store, config, clock) = (store.clone(), config.clone(), clock.clone());
                tasks.spawn(async move { compact(store.as_ref(), &config, clock.as_ref()).await });
            }
            while !tasks.is_empty() {
                check_references(store.as_ref()).await.context("during concurrent runs")?;
                if let Some(result) = tasks.try_join_next() {
                    result??;
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Ok(())
        }
    })
    .await?;
    let checksums = |s: &[SnapshotRef]| s.iter().map(|s| (s.txid, s.checksum)).collect::<Vec<_>>();
    assert_eq!(checksums(&snapshots), checksums(&expected));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_handler_invocations_on_s3_agree() -> Result<()> {
    let moto = MotoServer::start();
    let base = moto.base_store().await;
    let bucket = moto.create_bucket();
    let store = base.with_location(bucket.clone(), "db".into());
    let mut db = SyntheticDb::new(generation(5), PAGE_SIZE, 32, None, 5);
    db.create_generation(&store, T0).await?;
    let clock = Arc::new(ManualClock::new(T0));
    let compactor = Arc::new(Compactor::new(base, quick_config(), clock.clone()));
    let mut now = T0;
    for round in 0..3 {
        let mut keys = Vec::new();
        for _ in 0..6 {
            now += 40_000;
            let object = db.next_l0(1, 5, now)?;
            put(&store, &object).await?;
            keys.push(format!("db/{}", object.0));
        }
        clock.set(now + 3 * 60_000);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8usize {
            // Each invocation names the keys in another order, some twice.
            let mut records: Vec<(&str, &str, String)> =
                keys.iter().map(|k| ("ObjectCreated:Put", bucket.as_str(), k.clone())).collect();
            records.rotate_left(i % keys.len());
            records.push(records[0].clone());
            let event = s3_event(&records);
            let compactor = compactor.clone();
            tasks.spawn(async move { handle(&compactor, LambdaEvent::new(event, Context::default())).await });
        }
        while let Some(result) = tasks.join_next().await {
            result?.with_context(|| format!("round {round}"))?;
        }
        check_references(&store).await?;
    }
    let manifest = read_manifest(&store).await?.context("manifest")?.value;
    assert_eq!(manifest.l0_min_txid, db.txid().next(), "every window compacted");
    assert_restorable(&store, &db, None).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_at_any_step_leaves_a_restorable_store_and_the_next_run_finishes() -> Result<()> {
    let config = quick_config();
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path()));
    let reference_dir = tempfile::tempdir()?;
    let reference: Arc<dyn Store> = Arc::new(FileStore::new(reference_dir.path()));
    let mut db = SyntheticDb::new(generation(6), PAGE_SIZE, 24, None, 6);
    let mut twin = SyntheticDb::new(generation(6), PAGE_SIZE, 24, None, 6);
    db.create_generation(store.as_ref(), T0).await?;
    twin.create_generation(reference.as_ref(), T0).await?;
    let clock = ManualClock::new(T0);
    let mut now = T0;
    let mut crashes = 0;
    for round in 0..10 {
        for _ in 0..4 {
            now += 30_000;
            put(store.as_ref(), &db.next_l0(1, 4, now)?).await?;
            put(reference.as_ref(), &twin.next_l0(1, 4, now)?).await?;
        }
        clock.set(now + 3 * 60_000);
        compact(reference.as_ref(), &config, &clock).await?;
        // Crash after 0, 1, 2, ... writes until a run gets through.
        for budget in 0.. {
            let crashing = CrashingStore::new(store.clone(), budget);
            let result = compact(&crashing, &config, &clock).await;
            check_references(store.as_ref()).await.with_context(|| format!("round {round}, crash at {budget}"))?;
            let manifest = read_manifest(store.as_ref()).await?.context("manifest")?.value;
            let from = manifest.snapshot.context("snapshot")?.txid;
            let (txid, checksum) = restore_chain(store.as_ref(), db.generation, from, None).await?;
            assert!(txid >= manifest.newest.txid);
            assert_eq!(Some(&checksum), db.history.get(&txid));
            if !crashing.crashed() {
                result?;
                break;
            }
            crashes += 1;
            assert!(result.is_err(), "a crashed run reports it");
        }
    }
    assert!(crashes >= 40, "crashes were injected at many steps ({crashes})");
    let ours = assert_restorable(store.as_ref(), &db, None).await?;
    let theirs = assert_restorable(reference.as_ref(), &twin, None).await?;
    assert_eq!(ours, theirs, "crashes change nothing in the result");
    assert_eq!(listing(store.as_ref()).await?, listing(reference.as_ref()).await?, "and leave no stray object");
    Ok(())
}

async fn listing(store: &dyn Store) -> Result<Vec<(String, u64)>> {
    Ok(store.list("").await?.into_iter().filter(|m| m.key.ends_with(".seg")).map(|m| (m.key, m.size)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_over_simulated_days_keeps_exactly_the_policy() -> Result<()> {
    let config = CompactConfig { temp_dir: None, max_fan_in: 64, ..CompactConfig::default() };
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path()));
    let mut db = SyntheticDb::new(generation(7), PAGE_SIZE, 24, None, 7);
    db.create_generation(store.as_ref(), T0).await?;
    let clock = ManualClock::new(T0);
    let step = 20 * 60_000; // A sync every 20 minutes, for 9 days.
    let mut now = T0;
    let mut max_snapshots = 0;
    let mut deleted_snapshots = 0;
    for i in 1..=(9 * 24 * 3) {
        now += step;
        put(store.as_ref(), &db.next_l0(1, 3, now)?).await?;
        clock.set(now + 2 * 60_000);
        let report = compact(store.as_ref(), &config, &clock).await?;
        deleted_snapshots += report.snapshots_deleted;
        let kept = assert_within_policy(store.as_ref(), &config, clock.now_ms()).await?;
        max_snapshots = max_snapshots.max(kept);
        if i % 72 == 0 {
            // Once a simulated day: every kept snapshot restores.
            assert_restorable(store.as_ref(), &db, None).await?;
        }
    }
    // 7 days of hourly snapshots (plus the one at the boundary).
    assert!((7 * 24..=7 * 24 + 2).contains(&max_snapshots), "{max_snapshots} snapshots kept");
    assert!(deleted_snapshots >= 40, "two days of snapshots were retired ({deleted_snapshots})");
    assert_restorable(store.as_ref(), &db, None).await?;
    Ok(())
}

/// Lists the generation and checks every object against the policy at
/// `now_ms`; returns how many snapshots are kept.
async fn assert_within_policy(store: &dyn Store, config: &CompactConfig, now_ms: u64) -> Result<usize> {
    let manifest = check_references(store).await?;
    let index = read_snapshot_index(store, manifest.generation).await?.context("index")?.value;
    let newest = manifest.snapshot.context("snapshot")?;
    let floor = index.snapshots.first().context("no snapshot")?.txid;
    let retention = config.snapshot_retention.as_millis() as u64;
    let l0_retention = (config.l0_retention + config.l1_window).as_millis() as u64;
    for snapshot in &index.snapshots {
        ensure!(
            snapshot.timestamp_ms + retention >= now_ms || snapshot.txid == newest.txid,
            "snapshot {} is past retention",
            snapshot.txid
        );
    }
    let mut snapshots = 0;
    for object in store.list(&format!("{}/", manifest.generation)).await? {
        let Some(key) = SegmentKey::parse(&object.key) else { continue };
        match key.level {
            Level::Snapshot => {
                snapshots += 1;
                ensure!(index.snapshots.iter().any(|s| s.txid == key.txid), "{} is not in the index", object.key);
            }
            Level::L1 => ensure!(key.txid > floor, "{} is before the oldest kept snapshot {floor}", object.key),
            Level::L0 => {
                if key.txid < manifest.l0_min_txid {
                    let header = header(store, &object.key).await?;
                    ensure!(header.timestamp_ms + l0_retention > now_ms, "{} is past L0 retention", object.key);
                }
            }
        }
    }
    ensure!(
        snapshots == index.snapshots.len(),
        "{snapshots} snapshot objects for {} in the index",
        index.snapshots.len()
    );
    Ok(snapshots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_segments_are_compacted_without_the_key() -> Result<()> {
    let key = EncryptionKey::from_bytes([7; 32]);
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path()));
    let mut db = SyntheticDb::new(generation(8), PAGE_SIZE, 24, Some(key.clone()), 8);
    history(store.as_ref(), &mut db, 20, 30_000).await?;
    // The compactor is never given a key: it copies sealed frames as bytes.
    let report = compact(store.as_ref(), &quick_config(), &ManualClock::new(T0 + 20 * 60_000)).await?;
    assert!(report.l1_created >= 9 && report.snapshots_created >= 1, "{report:?}");
    assert_restorable(store.as_ref(), &db, Some(&key)).await?;
    let manifest = read_manifest(store.as_ref()).await?.context("manifest")?.value;
    let snapshot = manifest.snapshot.context("snapshot")?.txid;
    let error = restore_snapshot(store.as_ref(), db.generation, snapshot, None).await.unwrap_err();
    assert!(format!("{error:#}").contains("key"), "{error:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_window_closes_one_window_after_its_end() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path()));
    let mut db = SyntheticDb::new(generation(9), PAGE_SIZE, 8, None, 9);
    db.create_generation(store.as_ref(), T0).await?;
    put(store.as_ref(), &db.next_l0(1, 2, T0 + 10_000)?).await?;
    let config = quick_config();
    let clock = ManualClock::new(T0 + 100_000);
    let report = compact(store.as_ref(), &config, &clock).await?;
    assert_eq!((report.l1_created, report.newest), (0, Some(TxId(2))), "window still open");
    clock.set(T0 + 120_000);
    let report = compact(store.as_ref(), &config, &clock).await?;
    assert_eq!(report.l1_created, 1, "closed a window after its end");
    assert!(store.head(&l0_key(db.generation, TxId(2))).await.is_ok(), "L0 kept for polling readers");
    clock.set(T0 + 60_000 + 10_000 + 300_000);
    let report = compact(store.as_ref(), &config, &clock).await?;
    assert_eq!(report.l0_deleted, 1, "then deleted after L0 retention");
    Ok(())
}

/// The real Lambda runtime API: `cargo lambda watch` serves it on a loopback
/// port and runs the function binary; `cargo lambda invoke --data-file`
/// sends an S3 event through it; the function compacts a store on moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_runs_under_the_lambda_runtime_api() -> Result<()> {
    let moto = MotoServer::start();
    let base = moto.base_store().await;
    let bucket = moto.create_bucket();
    let store = base.with_location(bucket.clone(), "db".into());
    let mut db = SyntheticDb::new(generation(10), PAGE_SIZE, 16, None, 10);
    // Timestamps from the real clock: the binary uses the system clock.
    let now = distributary_core::clock::now_ms();
    db.create_generation(&store, now - 3_600_000).await?;
    let mut keys = Vec::new();
    for i in 0..4u64 {
        let object = db.next_l0(1, 3, now - 3_600_000 + (i + 1) * 70_000)?;
        put(&store, &object).await?;
        keys.push(format!("db/{}", object.0));
    }
    let event_dir = tempfile::tempdir()?;
    let event_file = event_dir.path().join("event.json");
    let records: Vec<(&str, &str, String)> =
        keys.iter().map(|k| ("ObjectCreated:Put", bucket.as_str(), k.clone())).collect();
    let event = serde_json::to_string(&s3_event(&records))?;
    std::fs::write(&event_file, event)?;

    let watch = LambdaWatch::start(&moto, &[], event_dir.path())?;
    // The first invocation builds the function: allow for a cold cache.
    let output = tokio::process::Command::new("cargo")
        .args(["lambda", "invoke", "distributary-lambda"])
        .args(watch.invoke_args())
        .arg("--data-file")
        .arg(&event_file)
        .current_dir(watch.dir())
        .output()
        .await
        .context("run cargo lambda invoke")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "invoke failed: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    let response: serde_json::Value =
        serde_json::from_str(stdout.trim()).with_context(|| format!("response {stdout}"))?;
    assert_eq!(response["compacted"][0]["target"]["prefix"], "db", "{response}");
    assert_eq!(response["compacted"][0]["l1_created"], 4, "{response}");
    let manifest = read_manifest(&store).await?.context("manifest")?.value;
    assert_eq!(manifest.l0_min_txid, db.txid().next());
    assert_restorable(&store, &db, None).await?;
    Ok(())
}

/// Store requests of a compactor that runs every 10 s (as `compact --watch`
/// does) while a replicator uploads one L0 segment a second, for
/// `minutes` simulated minutes. `remember` runs the watching pass with one
/// memory across the runs; otherwise each run is a full pass that starts
/// with an empty memory.
async fn requests_of_a_watching_compactor(minutes: u64, remember: bool) -> Result<Requests> {
    let dir = tempfile::tempdir()?;
    let store = CountingStore::new(Arc::new(FileStore::new(dir.path())));
    let mut db = SyntheticDb::new(generation(10), PAGE_SIZE, 16, None, 10);
    db.create_generation(&store, T0).await?;
    let config = CompactConfig { snapshot_interval: Duration::from_secs(3_600), ..quick_config() };
    let clock = ManualClock::new(T0);
    let shared = CompactMemory::new();
    store.reset();
    let (mut uploads, mut runs, mut full) = (0, 0, 0);
    for second in 1..=minutes * 60 {
        let now = T0 + second * 1_000;
        put(&store, &db.next_l0(1, 2, now)?).await?;
        uploads += 1;
        if second % 10 == 0 {
            clock.set(now);
            if remember {
                full += u64::from(compact_watching(&store, &config, &clock, &shared).await?.is_some());
            } else {
                compact_with(&store, &config, &clock, &CompactMemory::new()).await?;
                full += 1;
            }
            runs += 1;
        }
    }
    let count = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::SeqCst);
    let requests = Requests {
        reads: count(&store.gets) + count(&store.heads),
        // Minus the replicator's uploads.
        writes: count(&store.puts) - uploads,
        deletes: count(&store.deletes),
        uploads,
        runs,
        full,
    };
    check_references(&store).await?;
    Ok(requests)
}

/// What [`requests_of_a_watching_compactor`] counted.
#[derive(Debug)]
struct Requests {
    reads: u64,
    writes: u64,
    deletes: u64,
    uploads: u64,
    runs: u64,
    full: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_compactor_reads_each_segment_once_and_writes_once_a_window() -> Result<()> {
    let minutes = 8;
    let watching = requests_of_a_watching_compactor(minutes, true).await?;
    let forgetful = requests_of_a_watching_compactor(minutes, false).await?;
    println!("watching: {watching:?}\nfull passes with a fresh memory: {forgetful:?}");
    // Per L0 segment: one GET of the whole object (a probe or the walk,
    // which keeps the body for the L1 merge and the header for retention).
    // Per window of a minute: a full pass (the manifest, the probe past the
    // chain's end, the snapshot index, the new L1 header for retention).
    let budget = watching.uploads + 6 * minutes;
    ensure!(watching.reads <= budget, "{watching:?}: more than {budget} reads");
    ensure!(watching.reads * 2 < forgetful.reads, "the memory saves at least half: {watching:?} vs {forgetful:?}");
    // A full pass once a window (plus the first), not every run.
    ensure!(
        watching.full <= minutes + 2 && watching.runs == minutes * 6,
        "{watching:?}: a full pass more often than once a window"
    );
    // Per full pass: the L1 segment and one manifest update, which also
    // carries L0 retention's cursor.
    ensure!(watching.writes <= 2 * watching.full, "{watching:?}: more than two writes a full pass");
    // L0 retention (2 minutes) deletes the 60 L0 segments of each closed
    // 1-minute window in one request, not one request each (what made an
    // idle store's compactor cost more than its replicator).
    ensure!(watching.deletes >= 1, "{watching:?}: retention deleted nothing in {minutes} minutes");
    ensure!(watching.deletes <= minutes, "{watching:?}: more than one delete request a window");
    Ok(())
}

/// A watching compactor over a database gone idle: once its last window is
/// closed and retention is done, each pass makes at most one request (the
/// probe for the next L0 segment, or once a minute the manifest's
/// conditional GET); a new segment, a new generation and a retention
/// deadline are each still acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watching_compactor_makes_at_most_one_request_a_pass() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = CountingStore::new(Arc::new(FileStore::new(dir.path())));
    let mut db = SyntheticDb::new(generation(11), PAGE_SIZE, 16, None, 11);
    db.create_generation(&store, T0).await?;
    let config = CompactConfig {
        snapshot_interval: Duration::from_secs(120),
        snapshot_retention: Duration::from_secs(3_600),
        ..quick_config()
    };
    let mut watcher =
        Watcher { store: &store, config, clock: ManualClock::new(T0), memory: CompactMemory::new(), now: T0 };
    // Three busy minutes, then long enough for the last window to close,
    // its snapshot to be written and L0 retention (2 min) to finish.
    watcher.run(&mut db, 180, true).await?;
    watcher.run(&mut db, 600, false).await?;
    let settled = read_manifest(&store).await?.context("manifest")?.value;
    ensure!(settled.l0_min_txid == db.txid().next(), "every L0 segment is in L1: {settled:?}");
    ensure!(settled.l0_kept_min_txid == Some(db.txid().next()), "L0 retention is done: {settled:?}");

    // An idle half hour, before snapshot retention (1 h) is due.
    store.reset();
    let (most, full) = watcher.run(&mut db, 1_200, false).await?;
    let passes = 120;
    println!("idle: {} requests in {passes} passes, at most {most} in one, {full} full passes", store.total());
    ensure!(most <= 1 && full == 0, "an idle pass made {most} requests ({full} full passes)");
    // The probe twice a minute and the manifest check once: three requests
    // a minute, half the passes.
    ensure!(store.total() <= passes / 2, "{} requests for {passes} idle passes", store.total());
    ensure!(store.puts.load(std::sync::atomic::Ordering::SeqCst) == 0, "an idle pass wrote");

    // A new L0 segment is compacted once its window closes.
    watcher.run(&mut db, 1, true).await?;
    watcher.run(&mut db, 180, false).await?;
    let manifest = read_manifest(&store).await?.context("manifest")?.value;
    ensure!(manifest.l0_min_txid == db.txid().next(), "the new segment went into L1: {manifest:?}");

    // Snapshot retention's deadline (an hour after the oldest) is acted on.
    let index = read_snapshot_index(&store, db.generation).await?.context("index")?.value;
    let oldest = index.snapshots[0];
    let until_expired = (oldest.timestamp_ms + 3_600_000 + 20_000).saturating_sub(watcher.now) / 1_000;
    watcher.run(&mut db, until_expired, false).await?;
    let index = read_snapshot_index(&store, db.generation).await?.context("index")?.value;
    ensure!(index.snapshots[0].txid > oldest.txid, "the expired snapshot {} was retired: {index:?}", oldest.txid);

    // A new generation is seen by the manifest check within a minute.
    let mut next = SyntheticDb::new(generation(12), PAGE_SIZE, 16, None, 12);
    next.create_generation(&store, watcher.now).await?;
    put(&store, &next.next_l0(1, 2, watcher.now + 1_000)?).await?;
    watcher.run(&mut db, 240, false).await?;
    let manifest = read_manifest(&store).await?.context("manifest")?.value;
    ensure!(
        manifest.generation == next.generation && manifest.l0_min_txid == next.txid().next(),
        "the new generation's segment went into L1: {manifest:?}"
    );
    check_references(&store).await?;
    Ok(())
}

/// A pass reads the manifest once and hands it on: its updates are
/// compare-and-swaps from the version it holds, retention starts from the
/// last of them, the report carries it (the Lambda's metrics read no
/// manifest of their own), and a watching pass whose check found the
/// manifest changed starts from the copy the check read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_reads_the_manifest_once_and_hands_it_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = CountingStore::new(Arc::new(FileStore::new(dir.path())));
    let mut db = SyntheticDb::new(generation(13), PAGE_SIZE, 16, None, 13);
    // 12 minutes of syncs: a pass with many windows to close, snapshots
    // and L0 retention, so many manifest updates.
    history(&store, &mut db, 24, 30_000).await?;
    let manifest_gets = || store.manifest_gets.load(std::sync::atomic::Ordering::SeqCst);
    let clock = ManualClock::new(T0 + 15 * 60_000);
    let memory = CompactMemory::new();
    store.reset();
    let report = compact_with(&store, &quick_config(), &clock, &memory).await?;
    ensure!(report.manifest_updates > 1 && report.l1_created > 1, "the pass had work: {report:?}");
    ensure!(manifest_gets() == 1, "a full pass read the manifest {} times", manifest_gets());
    let stored = read_manifest(&store).await?.context("manifest")?.value;
    ensure!(report.manifest.as_ref() == Some(&stored), "the report carries the manifest as stored: {report:?}");

    // Another writer moves the manifest on (a new generation starts): the
    // watching pass's conditional GET sees it, and its full pass starts
    // from what that GET read.
    let mut next = SyntheticDb::new(generation(14), PAGE_SIZE, 16, None, 14);
    next.create_generation(&store, T0 + 15 * 60_000).await?;
    put(&store, &next.next_l0(1, 2, T0 + 15 * 60_000 + 1_000)?).await?;
    clock.advance(Duration::from_secs(5 * 60));
    store.reset();
    let report = compact_watching(&store, &quick_config(), &clock, &memory).await?.context("a full pass is due")?;
    ensure!(report.generation == Some(next.generation), "the pass compacted the new generation: {report:?}");
    ensure!(manifest_gets() == 1, "the check and its full pass read the manifest {} times", manifest_gets());
    let stored = read_manifest(&store).await?.context("manifest")?.value;
    ensure!(stored.l0_min_txid == next.txid().next(), "the new generation's segment went into L1: {stored:?}");
    ensure!(report.manifest.as_ref() == Some(&stored), "the report carries the manifest as stored: {report:?}");
    check_references(&store).await?;
    Ok(())
}

/// A compactor watching `store` every 10 s of a simulated clock.
struct Watcher<'a> {
    store: &'a CountingStore,
    config: CompactConfig,
    clock: ManualClock,
    memory: CompactMemory,
    now: u64,
}

impl Watcher<'_> {
    /// Runs for `seconds`, uploading an L0 segment of `db` each second if
    /// `uploading`; returns the most requests one pass made and how many
    /// passes were full ones.
    async fn run(&mut self, db: &mut SyntheticDb, seconds: u64, uploading: bool) -> Result<(u64, u64)> {
        let (mut most, mut full) = (0, 0);
        for _ in 0..seconds {
            self.now += 1_000;
            if uploading {
                put(self.store, &db.next_l0(1, 2, self.now)?).await?;
            }
            if (self.now - T0).is_multiple_of(10_000) {
                self.clock.set(self.now);
                let before = self.store.total();
                full +=
                    u64::from(compact_watching(self.store, &self.config, &self.clock, &self.memory).await?.is_some());
                most = most.max(self.store.total() - before);
            }
        }
        Ok((most, full))
    }
}
