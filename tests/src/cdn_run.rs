//! One run of issue #18's "CDN scale" scenario, shared by the test
//! (`tests/tests/cdn.rs`, 200 readers) and the benchmark
//! (`src/bin/cdn_bench.rs`, 1,000 and 10,000):
//!
//! ```text
//! writer (10 commits/s, SQLite WAL) -> app.db -> distributary replicate --sync-interval 1s
//!     -> moto (S3) <- origin counter (TCP, one connection per request) <- nginx, the CDN block
//!     of docs/DEPLOY.md <- N simulated readers (crate::fleet), one HTTP client
//! ```
//!
//! Every component is real: the replicator binary, moto, nginx, SQLite,
//! core's in-memory apply with full verification. The run measures the
//! origin's requests per second (at the origin counter), the CDN's hit
//! ratio (its access log), the readers' requests per second and their lag
//! (commit on the primary to the reader holding the TXID), and checks that
//! every reader ends with the primary's database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distributary_core::apply::database_checksum;
use distributary_core::clock::now_ms;
use distributary_core::store::{HttpStore, Store};
use distributary_core::{Checksum, TxId};

use crate::cdn::{Cdn, stats_between};
use crate::chain::walk;
use crate::fleet::{CommitLog, Fleet, FleetConfig};
use crate::moto::MotoServer;
use crate::process::{Process, tail};
use crate::proxy::CountingProxy;

/// Rows the writer updates in turn: the database stays a few pages, so
/// 10,000 in-memory replicas fit in memory.
const ROWS: u32 = 64;

/// What to run.
#[derive(Clone, Debug)]
pub struct CdnRun {
    /// Simulated readers.
    pub readers: usize,
    /// How long the writer writes.
    pub write_seconds: u64,
    /// Commits per second.
    pub rate: u32,
    /// The `distributary` binary (the primary).
    pub distributary: PathBuf,
    /// The start of the write window left out of the "after warm-up" rate.
    pub warmup: Duration,
    /// How long readers may take to reach the final TXID once it is in
    /// the store.
    pub converge_limit: Duration,
    /// Also run `distributary compact --watch` on the store (see
    /// [`COMPACT_ARGS`]): readers then also meet manifests that change
    /// under them, L1 segments and new snapshots.
    pub compact: bool,
}

/// The compactor's settings when [`CdnRun::compact`] is set: its defaults
/// (10 s runs, 1 min L1 windows, hourly snapshots) would show nothing in a
/// minute, so windows of 10 s and a snapshot every 30 s. Retention stays at
/// its defaults: the genesis snapshot and every L0 segment remain, which the
/// run's check of the store (a walk of the L0 chain) needs.
pub const COMPACT_ARGS: [&str; 6] = ["--interval", "5s", "--l1-window", "10s", "--snapshot-interval", "30s"];

/// What a run measured and found.
#[derive(Clone, Debug, Default)]
pub struct CdnReport {
    /// Simulated readers.
    pub readers: usize,
    /// The write window, seconds (the measures' denominator).
    pub seconds: f64,
    /// Transactions the writer committed.
    pub commits: u64,
    /// Requests the CDN sent to the origin during the window (counted at the origin).
    pub origin_requests: u64,
    /// The same per second.
    pub origin_requests_per_s: f64,
    /// Per second, leaving out the warm-up (every reader's first sync).
    pub origin_requests_per_s_after_warmup: f64,
    /// Requests the readers sent during the window, per second (counted at the client).
    pub reader_requests_per_s: f64,
    /// Requests the CDN logged during the window.
    pub cdn_requests: u64,
    /// Requests the CDN sent to the origin, as its log says (cross-check).
    pub cdn_origin_requests: u64,
    /// Share of the CDN's answers that did not ask the origin.
    pub hit_ratio: f64,
    /// Lag (commit on the primary -> the reader holds it), median, seconds.
    pub lag_p50_s: f64,
    /// 99th percentile of the same.
    pub lag_p99_s: f64,
    /// Samples behind the lag figures (one per reader per transaction).
    pub lag_samples: u64,
    /// CPU of this process (the readers, the writer, the origin counter)
    /// over the window, in cores.
    pub reader_cpu_cores: f64,
    /// CPU of nginx over the window, in cores.
    pub cdn_cpu_cores: f64,
    /// The TXID the store reached after the writes.
    pub final_txid: u64,
    /// Readers holding that TXID within the limit.
    pub converged: usize,
    /// Seconds from the final TXID being in the store to every reader holding it.
    pub converge_seconds: Option<f64>,
    /// Readers whose state is not the primary's (empty when all is well).
    pub mismatches: Vec<String>,
    /// Polls that failed (the readers retried them).
    pub failed_polls: u64,
    /// The last of those failures.
    pub last_failure: Option<String>,
}

impl CdnRun {
    /// Runs the scenario in `work` (a fresh folder) and reports; panics if
    /// a component fails to start or the TXIDs do not follow the commits.
    pub async fn run(&self, work: &Path) -> CdnReport {
        let moto = MotoServer::start();
        let bucket = moto.create_bucket();
        // nginx does not sign: a public bucket, as behind a real CDN
        // without origin access control.
        moto.make_public(&bucket);
        let env = moto.env();
        let db = work.join("app.db");
        create_primary(&db);
        let mut replicator = Process::spawn(
            "replicate",
            work,
            Command::new(&self.distributary)
                .args(["replicate", "--sync-interval", "1s"])
                .arg(&db)
                .arg(moto.url(&bucket, "app"))
                .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
        );
        // Straight to moto, like a Lambda's: not through the CDN.
        let mut compactor = self.compact.then(|| {
            Process::spawn(
                "compact",
                work,
                Command::new(&self.distributary)
                    .args(["compact", "--watch"])
                    .args(COMPACT_ARGS)
                    .arg(moto.url(&bucket, "app"))
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
            )
        });
        let store = moto.store_at(&bucket, "app").await;
        let setup_limit = Duration::from_secs(120);
        let base = wait_shipped(store.as_ref(), &db, &mut replicator, setup_limit).await;

        let origin = OriginCounter::start(SocketAddr::from(([127, 0, 0, 1], moto.port()))).await;
        // Room for every reader's connection twice over: the shared client
        // opens a new one when a burst of polls finds none idle, and at its
        // limit nginx closes idle ones that readers are about to reuse
        // ("worker_connections are not enough"), which turns into
        // reconnections and failed requests (seen with 7,000 readers at
        // readers + 512).
        let cdn = Cdn::start(origin.addr, work, self.readers * 2 + 1024);
        let readers_store: Arc<dyn Store> =
            Arc::new(HttpStore::new(format!("{}/{bucket}/app", cdn.url()), None).expect("an HTTP store"));

        let commits = Arc::new(CommitLog::new(base));
        let (writer_commits, rate, seconds) = (Arc::clone(&commits), self.rate, self.write_seconds);
        let writer_db = db.clone();
        let writer = std::thread::spawn(move || write_at_rate(&writer_db, rate, seconds, &writer_commits));
        let fleet = Fleet::start(readers_store, FleetConfig::serve_defaults(self.readers), Arc::clone(&commits));
        let cdn_pid = cdn.pid();
        let started = Instant::now();
        let started_ms = now_ms();
        let at_start = Counters::read(&origin, &fleet, cdn_pid);
        tokio::time::sleep(self.warmup).await;
        let after_warmup = Counters::read(&origin, &fleet, cdn_pid);
        let committed = tokio::task::spawn_blocking(move || writer.join().expect("the writer panicked"))
            .await
            .expect("join the writer");
        let seconds = started.elapsed().as_secs_f64();
        let ended_ms = now_ms();
        let at_end = Counters::read(&origin, &fleet, cdn_pid);

        let final_txid = wait_shipped(store.as_ref(), &db, &mut replicator, setup_limit).await;
        assert_eq!(
            final_txid,
            commits.last_txid(),
            "the store's TXIDs do not follow the writer's {committed} commits from TXID {base}: the lag figures would be wrong"
        );
        let shipped = Instant::now();
        let converged_all = fleet.wait_all_at(final_txid, shipped + self.converge_limit).await;
        let converge_seconds = converged_all.then(|| shipped.elapsed().as_secs_f64());
        let converged = fleet.readers_at(final_txid);
        let (_, failed_polls) = fleet.syncs_and_failures();
        let last_failure = fleet.last_failure();
        let lags = fleet.lags();
        let (lag_p50_s, lag_p99_s, lag_samples) =
            (lags.quantile(0.5).unwrap_or(f64::NAN), lags.quantile(0.99).unwrap_or(f64::NAN), lags.count());
        let (primary, _) = database_checksum(&db).expect("checksum the primary");
        let databases = fleet.stop().await;
        let mismatches = compare(&databases, final_txid, primary);

        let served = cdn.stop();
        let logged = stats_between(&served, started_ms, ended_ms);
        let _ = replicator.terminate();
        if let Some(compactor) = compactor.as_mut() {
            compactor.assert_running();
            let _ = compactor.terminate();
        }
        let warm_seconds = self.warmup.as_secs_f64();
        CdnReport {
            readers: self.readers,
            seconds,
            commits: committed,
            origin_requests: at_end.origin - at_start.origin,
            origin_requests_per_s: (at_end.origin - at_start.origin) as f64 / seconds,
            origin_requests_per_s_after_warmup: (at_end.origin - after_warmup.origin) as f64
                / (seconds - warm_seconds).max(f64::EPSILON),
            reader_requests_per_s: (at_end.requests - at_start.requests) as f64 / seconds,
            cdn_requests: logged.requests,
            cdn_origin_requests: logged.origin_requests,
            hit_ratio: logged.hit_ratio(),
            lag_p50_s,
            lag_p99_s,
            lag_samples,
            reader_cpu_cores: (at_end.own_cpu - at_start.own_cpu) / seconds,
            cdn_cpu_cores: (at_end.cdn_cpu - at_start.cdn_cpu) / seconds,
            final_txid: final_txid.0,
            converged,
            converge_seconds,
            mismatches,
            failed_polls,
            last_failure,
        }
    }
}

/// The primary: WAL mode, a table of [`ROWS`] rows.
fn create_primary(db: &Path) {
    let connection = rusqlite::Connection::open(db).unwrap();
    connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    connection
        .execute_batch(&format!(
            "CREATE TABLE ticks (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, body BLOB NOT NULL);\n\
             WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {ROWS})\n\
             INSERT INTO ticks SELECT i, 0, randomblob(200) FROM k;"
        ))
        .unwrap();
}

/// The app: `rate` transactions per second for `seconds`, each updating one
/// row, each commit's time recorded; returns the commits. The pacing
/// sleeps set the workload's rate; nothing waits on them.
fn write_at_rate(db: &Path, rate: u32, seconds: u64, commits: &CommitLog) -> u64 {
    let connection = rusqlite::Connection::open(db).unwrap();
    // The replicator's checkpoints take the write lock for a moment.
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    let interval = Duration::from_secs(1) / rate;
    let started = Instant::now();
    let total = u64::from(rate) * seconds;
    for k in 0..total {
        let due = started + interval * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        connection
            .execute(
                "UPDATE ticks SET n = n + 1, body = randomblob(200) WHERE id = ?1",
                [(k % u64::from(ROWS) + 1) as i64],
            )
            .expect("commit on the primary");
        commits.push(Instant::now());
    }
    total
}

/// Waits until the store's chain reaches the primary's database (the
/// replicator shipped everything) and returns its TXID.
async fn wait_shipped(store: &dyn Store, db: &Path, replicator: &mut Process, limit: Duration) -> TxId {
    let deadline = Instant::now() + limit;
    let (primary, _) = database_checksum(db).expect("checksum the primary");
    loop {
        match walk(store, None).await {
            Ok(chain) if chain.checksum == primary => return chain.last_txid,
            _ => {}
        }
        if let Some(status) = replicator.exited() {
            panic!("replicate exited with {status}:\n{}", tail(&replicator.log()));
        }
        assert!(Instant::now() < deadline, "the store did not reach the primary's state:\n{}", tail(&replicator.log()));
        // Polling the store: the replicator has no event to wait on.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Readers that do not hold the primary's final state: at the wrong TXID,
/// with another recorded checksum, or an image whose pages hash to another.
fn compare(databases: &[distributary_core::apply::MemoryDatabase], txid: TxId, primary: Checksum) -> Vec<String> {
    let mut mismatches = Vec::new();
    for (index, db) in databases.iter().enumerate() {
        let Some(position) = db.position() else {
            mismatches.push(format!("reader {index}: never synced"));
            continue;
        };
        let image = db.export();
        let computed = distributary_core::checksum::database_checksum(&image[..], db.page_size() as usize)
            .map(|(checksum, _)| checksum);
        if position.txid != txid || position.checksum != primary || computed.as_ref().ok() != Some(&primary) {
            mismatches.push(format!(
                "reader {index}: TXID {} checksum {} (image {:?}), primary TXID {txid} checksum {primary}",
                position.txid, position.checksum, computed
            ));
        }
    }
    mismatches
}

/// The origin-side count: a TCP proxy between nginx and moto. nginx opens
/// one connection per origin request (HTTP/1.0 upstream, the CDN block has
/// no keepalive), so connections are requests. It runs on a runtime of its
/// own, so that 10,000 busy readers on the test's runtime do not slow the
/// origin down.
struct OriginCounter {
    addr: SocketAddr,
    proxy: Option<CountingProxy>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OriginCounter {
    async fn start(origin: SocketAddr) -> OriginCounter {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("origin-counter")
            .enable_all()
            .build()
            .expect("a runtime for the origin counter");
        let proxy = runtime.spawn(CountingProxy::start(origin)).await.expect("start the origin counter");
        let addr = proxy.endpoint().trim_start_matches("http://").parse().expect("the counter's address");
        OriginCounter { addr, proxy: Some(proxy), runtime: Some(runtime) }
    }

    fn requests(&self) -> u64 {
        self.proxy.as_ref().map_or(0, |p| p.connections())
    }
}

impl Drop for OriginCounter {
    fn drop(&mut self) {
        drop(self.proxy.take());
        // Dropping a runtime blocks, which an async context forbids.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The counters read at the edges of the window.
struct Counters {
    origin: u64,
    requests: u64,
    own_cpu: f64,
    cdn_cpu: f64,
}

impl Counters {
    fn read(origin: &OriginCounter, fleet: &Fleet, cdn_pid: u32) -> Counters {
        Counters {
            origin: origin.requests(),
            requests: fleet.requests(),
            own_cpu: cpu_seconds(std::process::id()),
            cdn_cpu: cpu_seconds(cdn_pid),
        }
    }
}

/// User + system CPU seconds of process `pid`, all threads (`/proc/PID/stat`,
/// in clock ticks of 1/100 s, Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // "pid (comm) state ppid ...": comm may hold spaces; fields after it.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ticks as f64 / 100.0
}
