//! The soak: the whole pipeline as processes for a bounded time
//! (`DISTRIBUTARY_SOAK_SECS`, 120 s by default; set it for hours). An app
//! writes steadily under `distributary replicate --exec`, with a TRUNCATE
//! checkpoint every 7 s and a VACUUM every 20 s; the store is on moto; the
//! compactor is the Lambda function under the real runtime API (`cargo
//! lambda watch`), invoked with S3 event notifications for every new L0
//! segment, as S3 does. Replicas come and go: two `edge-reader serve` (one
//! from the start, one joining a quarter in) and two `edge-reader sync`
//! loops (one from the start, one joining late); from a third to two thirds
//! of the way the first serve loses its network and the first sync loop is
//! switched off — longer than L0 retention, so they come back through L1
//! segments and snapshots.
//!
//! Proves: resident memory and open file descriptors of every long-running
//! process stay flat (sampled every 2 s and printed); every replica ends
//! equal to the primary with `integrity_check` ok, one TXID per committed
//! transaction; every invocation of the function succeeded; every kept
//! snapshot restores.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use distributary_core::apply::replica_checksum;
use distributary_core::store::Store;
use distributary_tests::bins::binary;
use distributary_tests::chain::database_checksum;
use distributary_tests::e2e::{
    SyncLoopHandle, app_command, assert_every_snapshot_restores, assert_integrity, create_primary, serve_txid,
    soak_duration, start_serve,
};
use distributary_tests::faults::{Fault, FaultProxy};
use distributary_tests::lambda::{LambdaWatch, s3_event};
use distributary_tests::moto::MotoServer;
use distributary_tests::process::{Process, Usage, descendant_named, tail, usage_of};

const CONVERGE_LIMIT: Duration = Duration::from_secs(180);
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// The function's environment: small windows so a short soak makes many
/// L1 segments and snapshots, and an L0 retention shorter than the offline
/// period.
fn function_env() -> Vec<(&'static str, String)> {
    vec![
        ("DISTRIBUTARY_L1_WINDOW", "5s".into()),
        ("DISTRIBUTARY_SNAPSHOT_INTERVAL", "20s".into()),
        ("DISTRIBUTARY_L0_RETENTION", "20s".into()),
        ("DISTRIBUTARY_METRICS_NAMESPACE", "off".into()),
    ]
}

/// Delivers S3 event notifications for new L0 segments to the function,
/// about once a second (what S3 does on its own in AWS): lists the store,
/// and invokes the function with one record per segment not seen before.
async fn forward_events(
    store: Arc<dyn Store>,
    bucket: String,
    prefix: &'static str,
    lambda: Arc<LambdaWatch>,
    stop: Arc<AtomicBool>,
    invocations: Arc<AtomicU64>,
) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut errors = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(objects) = store.list("").await else { continue };
        let new: Vec<(&str, &str, String)> = objects
            .iter()
            .filter(|o| o.key.contains("/l0/") && o.key.ends_with(".seg") && seen.insert(o.key.clone()))
            .map(|o| ("ObjectCreated:Put", bucket.as_str(), format!("{prefix}/{}", o.key)))
            .collect();
        if new.is_empty() {
            continue;
        }
        match lambda.invoke(&s3_event(&new)).await {
            // A function error comes back as a 200 naming it, as in AWS.
            Ok(response) if response.get("errorMessage").is_none() => {}
            Ok(response) => errors.push(format!("{response}")),
            Err(error) => errors.push(format!("{error:#}")),
        }
        invocations.fetch_add(1, Ordering::SeqCst);
    }
    errors
}

/// Samples of one process's memory and descriptors.
struct Track {
    name: String,
    samples: Vec<(Duration, Usage)>,
}

impl Track {
    fn new(name: &str) -> Track {
        Track { name: name.to_string(), samples: Vec::new() }
    }

    fn record(&mut self, at: Duration, pid: Option<u32>) {
        if let Some(usage) = pid.and_then(usage_of) {
            self.samples.push((at, usage));
        }
    }

    /// The largest RSS and descriptor count within `[from, to)` of the
    /// samples (fractions of their number).
    fn peak(&self, from: f64, to: f64) -> Usage {
        let window = self.window(from, to);
        Usage {
            rss_kib: window.iter().map(|(_, u)| u.rss_kib).max().unwrap(),
            fds: window.iter().map(|(_, u)| u.fds).max().unwrap(),
        }
    }

    /// The median descriptor count within `[from, to)` of the samples: the
    /// level the process returns to between bursts of work.
    fn median_fds(&self, from: f64, to: f64) -> u64 {
        let mut fds: Vec<u64> = self.window(from, to).iter().map(|(_, u)| u.fds).collect();
        fds.sort_unstable();
        fds[fds.len() / 2]
    }

    /// The samples within `[from, to)` (fractions of their number), at least one.
    fn window(&self, from: f64, to: f64) -> &[(Duration, Usage)] {
        let n = self.samples.len() as f64;
        &self.samples[(n * from) as usize..((n * to) as usize).max((n * from) as usize + 1)]
    }

    /// Flat: the last quarter peaks no higher than the second quarter (after
    /// warm-up: caches filled, connections pooled), within noise that a leak
    /// of a buffer per request would exceed over a soak. Descriptors are
    /// compared by their median: a leak raises the level the process returns
    /// to, while a burst does not. The replicator's bursts are real and
    /// bounded: an upload merges every pending segment at once (one file per
    /// 100 ms capture since the last upload, at most 256), so one sample
    /// taken during a slow upload can show 20 more descriptors than the next
    /// (CI, 2026-11-25: "replicate: descriptors grew from 25 to 43"). A peak
    /// past that bound still fails.
    fn assert_flat(&self) {
        assert!(self.samples.len() >= 8, "{}: only {} samples", self.name, self.samples.len());
        let (warm, last) = (self.peak(0.25, 0.5), self.peak(0.75, 1.0));
        assert!(
            last.rss_kib <= warm.rss_kib * 3 / 2 + 24 * 1024,
            "{}: resident memory grew from {} KiB to {} KiB",
            self.name,
            warm.rss_kib,
            last.rss_kib
        );
        let (warm_level, last_level) = (self.median_fds(0.25, 0.5), self.median_fds(0.75, 1.0));
        assert!(
            last_level <= warm_level + 8,
            "{}: descriptors grew from a median of {warm_level} to {last_level}",
            self.name
        );
        assert!(last.fds <= warm.fds + 256, "{}: descriptors peaked at {} (from {})", self.name, last.fds, warm.fds);
    }

    fn summary(&self) -> String {
        let (first, warm, last) = (self.peak(0.0, 0.25), self.peak(0.25, 0.5), self.peak(0.75, 1.0));
        format!(
            "{:<10} {:>4} samples  RSS MiB peak per quarter 1/2/4: {:>6.1} {:>6.1} {:>6.1}   fds peak: {:>3} {:>3} {:>3}   fds median: {:>3} {:>3} {:>3}",
            self.name,
            self.samples.len(),
            first.rss_kib as f64 / 1024.0,
            warm.rss_kib as f64 / 1024.0,
            last.rss_kib as f64 / 1024.0,
            first.fds,
            warm.fds,
            last.fds,
            self.median_fds(0.0, 0.25),
            self.median_fds(0.25, 0.5),
            self.median_fds(0.75, 1.0)
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_and_descriptors_stay_flat_while_replicas_come_and_go() {
    // At least 40 s: shorter, the phases below (a late reader at 1/4, the
    // network off from 1/3 to 2/3) and the samples taken every
    // SAMPLE_EVERY would be too short and too few to judge.
    let soak = soak_duration(Duration::from_secs(120), Duration::from_secs(40));
    let moto = MotoServer::start();
    let bucket = moto.create_bucket();
    let url = moto.url(&bucket, "app");
    let env = moto.env();
    let store = moto.store_at(&bucket, "app").await;
    // The first serve's network: a proxy that can drop every request.
    let network = FaultProxy::start(moto.port(), 0x50a6);
    network.set_kinds(&[Fault::ResetBeforeResponse]);
    let offline_url = network.url(&bucket, "app");

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let app = create_primary(&db);
    let count_file = dir.path().join("committed");
    let replica = |name: &str| dir.path().join(name);

    // Built before the clock starts, the function too: its first
    // invocation (an event with no records) builds and starts it.
    binary("distributary", "distributary");
    binary("edge-reader", "edge-reader");
    let lambda = Arc::new(LambdaWatch::start(&moto, &function_env(), dir.path()).unwrap());
    lambda.invoke(&s3_event(&[])).await.unwrap();

    let started = Instant::now();
    let mut replicator = Process::spawn(
        "replicate",
        dir.path(),
        Command::new(binary("distributary", "distributary"))
            .args(["replicate", "--exec"])
            .arg(app_command(&app, &db, soak.as_secs(), &count_file, true))
            .arg(&db)
            .arg(&url)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    );
    let stop_events = Arc::new(AtomicBool::new(false));
    let invocations = Arc::new(AtomicU64::new(0));
    let forwarder = tokio::spawn(forward_events(
        store.clone(),
        bucket.clone(),
        "app",
        lambda.clone(),
        stop_events.clone(),
        invocations.clone(),
    ));
    let (mut serve_a, base_a) = start_serve("serve-a", dir.path(), &offline_url, &replica("serve-a.db"), &env);
    let sync_a = SyncLoopHandle::start(&url, &replica("sync-a.db"), &env);
    let mut late: Option<((Process, String), SyncLoopHandle)> = None;

    let mut tracks: Vec<Track> = ["replicate", "function", "serve-a", "serve-b"].map(Track::new).into();
    let (mut went_offline, mut came_back) = (false, false);
    while started.elapsed() < soak {
        let at = started.elapsed();
        if late.is_none() && at >= soak / 4 {
            let serve_b = start_serve("serve-b", dir.path(), &url, &replica("serve-b.db"), &env);
            late = Some((serve_b, SyncLoopHandle::start(&url, &replica("sync-b.db"), &env)));
        }
        if !went_offline && at >= soak / 3 {
            network.set_rate(1.0);
            sync_a.set_offline(true);
            went_offline = true;
        }
        if !came_back && at >= soak * 2 / 3 {
            network.set_rate(0.0);
            sync_a.set_offline(false);
            came_back = true;
        }
        serve_a.assert_running();
        if let Some(((serve_b, _), _)) = late.as_mut() {
            serve_b.assert_running();
        }
        assert!(replicator.exited().is_none(), "replicate exited early:\n{}", tail(&replicator.log()));
        let pids = [
            Some(replicator.pid()),
            descendant_named(std::process::id(), "distributary-la"),
            Some(serve_a.pid()),
            late.as_ref().map(|((serve_b, _), _)| serve_b.pid()),
        ];
        for (track, pid) in tracks.iter_mut().zip(pids) {
            track.record(at, pid);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }

    // The app stops at the end of the soak; the replicator flushes and exits.
    let status = replicator.wait(CONVERGE_LIMIT);
    assert!(status.success(), "replicate --exec exited with {status}:\n{}", tail(&replicator.log()));
    let committed: u64 = std::fs::read_to_string(&count_file).unwrap().trim().parse().unwrap();
    let primary = database_checksum(&db).unwrap();
    // One TXID per transaction, except that a catch-up by page hashes folds
    // the transactions it recovers into one (each says so in the log): then
    // the replicas' state, not their TXID, tells that they converged.
    let folded = replicator.log().contains("catching up");
    let one_txid_each = |txid: Option<u64>| folded || txid == Some(1 + committed);
    let ((mut serve_b, base_b), sync_b) = late.expect("the late replicas joined");

    let client = reqwest::Client::new();
    let deadline = Instant::now() + CONVERGE_LIMIT;
    let converged_from = Instant::now();
    for (name, base, file) in [("serve-a", &base_a, "serve-a.db"), ("serve-b", &base_b, "serve-b.db")] {
        while !one_txid_each(serve_txid(&client, base).await) || replica_checksum(&replica(file)).ok() != Some(primary)
        {
            assert!(Instant::now() < deadline, "{name} did not converge:\n{}", tail(&serve_a.log()));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for (name, file) in [("sync-a", "sync-a.db"), ("sync-b", "sync-b.db")] {
        while replica_checksum(&replica(file)).ok() != Some(primary) {
            assert!(Instant::now() < deadline, "{name} did not converge");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let converged = converged_from.elapsed();
    for (name, sync) in [("sync-a", sync_a), ("sync-b", sync_b)] {
        let seen = sync.finish();
        assert!(seen.anomalies.is_empty(), "{name} misbehaved: {:#?}", seen.anomalies);
        assert!(
            one_txid_each(seen.last.as_ref().map(|(txid, _)| *txid)),
            "{name}: one TXID per transaction ({seen:?})"
        );
        eprintln!("{name}: {} syncs, {} failed while offline or racing retention", seen.successes, seen.failures);
    }
    for file in ["serve-a.db", "serve-b.db", "sync-a.db", "sync-b.db"] {
        assert_integrity(&replica(file));
    }

    stop_events.store(true, Ordering::SeqCst);
    let errors = forwarder.await.unwrap();
    assert!(errors.is_empty(), "function invocations failed: {errors:#?}\n{}", tail(&lambda.log()));
    let snapshots = assert_every_snapshot_restores(&url, &env, dir.path());
    assert!(snapshots >= 2, "the function took {snapshots} snapshots");

    for serve in [&mut serve_a, &mut serve_b] {
        let status = serve.terminate();
        assert!(status.success(), "{} exited with {status}:\n{}", serve.name, tail(&serve.log()));
    }
    eprintln!(
        "soak of {soak:?}: {committed} transactions (with checkpoints and VACUUMs), {} function invocations, \
         {snapshots} snapshots; replicas converged {converged:?} after the app stopped",
        invocations.load(Ordering::SeqCst)
    );
    for track in &tracks {
        eprintln!("{}", track.summary());
    }
    for track in &tracks {
        track.assert_flat();
    }
}
