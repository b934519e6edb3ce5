//! The replicator's metrics, served in Prometheus' text format on
//! `/metrics`, the replication position as JSON on `/status`, and on
//! `/bookmark` the TXID a write became part of (for read-your-writes at the
//! edge): the position after a capture pass that began after the request.
//! [`CompactionMetrics`] are the compactor's (`compact --watch`, and
//! `replicate` with `compaction: local`), served by [`serve_registry`].
//! Both endpoints run on core's HTTP/1 server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use distributary_core::clock;
use distributary_core::http_server::{self, Body, registered};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Progress of one store.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReplicaStatus {
    /// The database's path.
    pub db: String,
    /// The store's URL.
    pub url: String,
    /// Its generation.
    pub generation: String,
    /// Newest TXID captured (recorded locally, not yet uploaded).
    pub captured_txid: u64,
    /// Newest TXID in the store.
    pub shipped_txid: u64,
    /// When the oldest capture not yet in the store was made (ms since the
    /// Unix epoch), if any is waiting.
    pub oldest_unshipped_ms: Option<u64>,
    /// The last upload error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The labels of per-database metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabel {
    db: String,
}

/// The labels of per-store metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    db: String,
    store: String,
}

/// The label of `distributary_checkpoints_total`: `passive` or `truncate`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

/// Every store's progress: read by `/status` and `/bookmark`, and encoded at
/// each scrape as per-store gauges (the lag in seconds is the age of the
/// oldest capture then).
#[derive(Debug, Default)]
struct Progress(Mutex<BTreeMap<(String, String), ReplicaStatus>>);

/// A per-store gauge that counts: name, help text, and its value.
type StoreCount = (&'static str, &'static str, fn(&ReplicaStatus) -> u64);

const STORE_COUNTS: [StoreCount; 3] = [
    ("captured_txid", "Newest TXID captured from the WAL.", |r| r.captured_txid),
    ("shipped_txid", "Newest TXID in the store.", |r| r.shipped_txid),
    ("replication_lag_transactions", "Transactions captured but not yet in the store.", |r| {
        r.captured_txid.saturating_sub(r.shipped_txid)
    }),
];

impl Collector for Progress {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = clock::now_ms();
        let replicas: Vec<ReplicaStatus> = lock(&self.0).values().cloned().collect();
        let labels = |r: &ReplicaStatus| StoreLabels { db: r.db.clone(), store: r.url.clone() };
        for (name, help, value) in STORE_COUNTS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for replica in &replicas {
                let count = i64::try_from(value(replica)).unwrap_or(i64::MAX);
                ConstGauge::new(count).encode(family.encode_family(&labels(replica))?)?;
            }
        }
        let help = "Age of the oldest capture not yet in the store.";
        let mut family = encoder.encode_descriptor("replication_lag_seconds", help, None, MetricType::Gauge)?;
        for replica in &replicas {
            let lag = replica.oldest_unshipped_ms.map_or(0.0, |ms| now.saturating_sub(ms) as f64 / 1000.0);
            ConstGauge::new(lag).encode(family.encode_family(&labels(replica))?)?;
        }
        Ok(())
    }
}

/// Process-wide metrics of the replicator.
pub struct Metrics {
    registry: Registry,
    uploaded_bytes: Counter,
    uploaded_objects: Counter,
    store_errors: Counter,
    checkpoints: Family<ModeLabel, Counter>,
    catch_ups: Counter,
    write_lock_hold: Histogram,
    wal_bytes: Family<DbLabel, Gauge>,
    progress: Arc<Progress>,
    compaction: Arc<CompactionMetrics>,
    /// Capture passes completed per database, and a wake-up for bookmark
    /// requests waiting on them.
    capture_passes: Mutex<BTreeMap<String, u64>>,
    capture_pass_done: tokio::sync::Notify,
    /// Bumped by `/bookmark` requests: a capture thread that sees it move
    /// runs a pass at once instead of at its next interval.
    pass_requests: AtomicU64,
}

/// Upper bounds (seconds) of the write-lock hold-time buckets: 50 µs to 1 s,
/// dense around the 1 ms the design allows.
const HOLD_BUCKETS: [f64; 12] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0];

/// The longest a `/bookmark` request waits for fresh capture passes.
const BOOKMARK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a stopping endpoint waits for requests in flight (a
/// `/bookmark` may wait up to [`BOOKMARK_TIMEOUT`]; the process is exiting).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Metrics are plain values: a panic elsewhere cannot leave them torn.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("distributary");
        let r = &mut registry;
        let checkpoints = registered(r, "checkpoints", "Checkpoints run by the replicator", Family::default());
        // Both modes from the start: a rate of TRUNCATE checkpoints is 0, not absent.
        for mode in ["passive", "truncate"] {
            let _ = checkpoints.get_or_create(&ModeLabel { mode });
        }
        let progress = Arc::new(Progress::default());
        r.register_collector(Box::new(progress.clone()));
        Metrics {
            uploaded_bytes: registered(r, "upload_bytes", "Bytes uploaded to stores", Counter::default()),
            uploaded_objects: registered(r, "upload_objects", "Objects uploaded to stores", Counter::default()),
            store_errors: registered(r, "store_errors", "Failed store operations (after retries)", Counter::default()),
            catch_ups: registered(
                r,
                "catch_ups",
                "Catch-ups by page hashes, each folding the transactions it recovers into one TXID",
                Counter::default(),
            ),
            checkpoints,
            write_lock_hold: registered(
                r,
                "write_lock_hold_seconds",
                "How long the replicator held the app's write lock (its writers wait meanwhile)",
                Histogram::new(HOLD_BUCKETS),
            ),
            wal_bytes: registered(r, "wal_bytes", "Size of the database's WAL file", Family::default()),
            progress,
            compaction: Arc::new(CompactionMetrics::registered(r)),
            registry,
            capture_passes: Mutex::default(),
            capture_pass_done: tokio::sync::Notify::new(),
            pass_requests: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one uploaded object.
    pub fn record_upload(&self, bytes: u64) {
        self.uploaded_bytes.inc_by(bytes);
        self.uploaded_objects.inc();
    }

    /// Counts one failed store operation.
    pub fn record_error(&self) {
        self.store_errors.inc();
    }

    /// Counts a checkpoint run by the replicator.
    pub fn record_checkpoint(&self, truncate: bool) {
        self.checkpoints.get_or_create(&ModeLabel { mode: if truncate { "truncate" } else { "passive" } }).inc();
    }

    /// Counts a catch-up by page hashes.
    pub fn record_catch_up(&self) {
        self.catch_ups.inc();
    }

    /// Catch-ups so far.
    #[cfg(test)]
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups.get()
    }

    /// Records one hold of the app's write lock (a sync point, or a
    /// TRUNCATE checkpoint, which takes it itself).
    pub fn record_write_lock_hold(&self, held: std::time::Duration) {
        self.write_lock_hold.observe(held.as_secs_f64());
    }

    /// Sets the WAL size of a database.
    pub fn set_wal_bytes(&self, db: &str, bytes: u64) {
        self.wal_bytes.get_or_create(&DbLabel { db: db.to_string() }).set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Updates one store's progress with `update`.
    pub fn update_replica(&self, db: &str, url: &str, update: impl FnOnce(&mut ReplicaStatus)) {
        let mut replicas = lock(&self.progress.0);
        let entry = replicas.entry((db.to_string(), url.to_string())).or_insert_with(|| ReplicaStatus {
            db: db.to_string(),
            url: url.to_string(),
            ..ReplicaStatus::default()
        });
        update(entry);
    }

    /// The metrics of this process's local compactors (`compaction: local`).
    pub fn compaction(&self) -> Arc<CompactionMetrics> {
        self.compaction.clone()
    }

    /// Registers a database whose capture passes `/bookmark` waits for.
    pub fn register_database(&self, db: &str) {
        lock(&self.capture_passes).entry(db.to_string()).or_default();
    }

    /// The number of pass requests so far ([`Metrics::bookmark`]).
    pub fn pass_requests(&self) -> u64 {
        self.pass_requests.load(Ordering::SeqCst)
    }

    /// Marks the end of one capture pass over `db` (every commit in the WAL
    /// when the pass began is captured).
    pub fn record_capture_pass(&self, db: &str) {
        *lock(&self.capture_passes).entry(db.to_string()).or_default() += 1;
        self.capture_pass_done.notify_waiters();
    }

    /// Waits until every database has finished a capture pass that began
    /// after this call, then returns every store's progress: each store's
    /// `captured_txid` then covers every transaction committed before the
    /// call. `None` if capture did not keep up within [`BOOKMARK_TIMEOUT`].
    pub async fn bookmark(&self) -> Option<Vec<ReplicaStatus>> {
        // A pass in progress when we start may have begun before the app's
        // commit; the one after it cannot have: wait for two.
        let wanted: BTreeMap<String, u64> =
            lock(&self.capture_passes).iter().map(|(db, n)| (db.clone(), n + 2)).collect();
        let deadline = tokio::time::Instant::now() + BOOKMARK_TIMEOUT;
        loop {
            // Ask for the passes now rather than at the next sync interval.
            self.pass_requests.fetch_add(1, Ordering::SeqCst);
            let notified = self.capture_pass_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let passes = lock(&self.capture_passes).clone();
            if wanted.iter().all(|(db, n)| passes.get(db).is_some_and(|done| done >= n)) {
                return Some(self.replicas());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Every store's progress.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        lock(&self.progress.0).values().cloned().collect()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        http_server::prometheus_text(&[&self.registry])
    }

    /// The answer to one request of the replicator's endpoint.
    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        let text = |status, body: &'static str| http_server::response(status, "text/plain; charset=utf-8", body);
        match request.uri().path() {
            "/metrics" => http_server::metrics_response(&[&self.registry]),
            "/status" => http_server::response(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&self.replicas()).unwrap_or_else(|_| "[]".into()),
            ),
            "/bookmark" => match self.bookmark().await {
                Some(replicas) => http_server::response(StatusCode::OK, "application/json", bookmark_json(&replicas)),
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "capture did not complete a pass in time; see the replicator's log\n",
                ),
            },
            _ => text(StatusCode::NOT_FOUND, "try /metrics, /status or /bookmark\n"),
        }
    }
}

/// The `/bookmark` body: the TXID and generation at top level when there is
/// one store (the common case), and every store's progress.
fn bookmark_json(replicas: &[ReplicaStatus]) -> String {
    let single = if let [one] = replicas { Some(one) } else { None };
    let body = serde_json::json!({
        "txid": single.map(|r| r.captured_txid),
        "generation": single.map(|r| r.generation.clone()),
        "replicas": replicas,
    });
    serde_json::to_string_pretty(&body).unwrap_or_default()
}

/// Serves the replicator's `/metrics`, `/status` and `/bookmark` until
/// `shutdown` resolves.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: impl std::future::Future<Output = ()>) {
    let handler = move |request| {
        let metrics = metrics.clone();
        async move { metrics.respond(request).await }
    };
    http_server::run(listener, handler, shutdown, DRAIN).await;
}

/// Serves `registry` on `/metrics` until `shutdown` resolves: the endpoint
/// of `compact --watch`.
pub async fn serve_registry(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let handler = move |request: Request<Incoming>| {
        let registry = registry.clone();
        async move {
            match request.uri().path() {
                "/metrics" => http_server::metrics_response(&[&registry]),
                _ => http_server::response(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "try /metrics\n"),
            }
        }
    };
    http_server::run(listener, handler, shutdown, DRAIN).await;
}

/// The label of per-store compaction metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompactedStore {
    store: String,
}

/// The labels of `distributary_compaction_passes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    store: String,
    result: &'static str,
}

/// The labels of `distributary_compaction_segments_written_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WrittenLabels {
    store: String,
    kind: &'static str,
}

/// What a watching compactor did, per store.
#[derive(Debug, Default)]
pub struct CompactionMetrics {
    passes: Family<PassLabels, Counter>,
    segments_written: Family<WrittenLabels, Counter>,
    objects_deleted: Family<CompactedStore, Counter>,
    last_success: Family<CompactedStore, Gauge<f64, AtomicU64>>,
    newest_commit: Family<CompactedStore, Gauge<f64, AtomicU64>>,
    backlog: Family<CompactedStore, Gauge>,
}

/// What one compaction pass found and did, for [`CompactionMetrics::record_pass`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PassOutcome {
    /// L1 segments and snapshots written.
    pub l1_written: u32,
    /// Snapshots written.
    pub snapshots_written: u32,
    /// Objects deleted by retention.
    pub deleted: u32,
    /// The manifest after the pass, if it was read: the newest commit's
    /// time (ms since the Unix epoch) and the transactions not yet in L1.
    pub manifest: Option<(u64, u64)>,
}

impl CompactionMetrics {
    /// New metrics, registered in `registry`.
    pub fn registered(registry: &mut Registry) -> CompactionMetrics {
        let r = registry.sub_registry_with_prefix("compaction");
        CompactionMetrics {
            passes: registered(r, "passes", "Compaction passes, by result", Family::default()),
            segments_written: registered(
                r,
                "segments_written",
                "Segments written by compaction (kind: l1 or snapshot)",
                Family::default(),
            ),
            objects_deleted: registered(r, "objects_deleted", "Objects deleted by retention", Family::default()),
            last_success: registered(
                r,
                "last_success_timestamp_seconds",
                "When a compaction pass last succeeded (Unix time)",
                Family::default(),
            ),
            newest_commit: registered(
                r,
                "newest_commit_timestamp_seconds",
                "Commit time of the store's newest transaction, as the last pass found it (Unix time)",
                Family::default(),
            ),
            backlog: registered(
                r,
                "backlog_transactions",
                "Transactions in L0 segments not yet merged into L1, as the last pass found them",
                Family::default(),
            ),
        }
    }

    /// Records a pass over `store` that succeeded (`outcome`) or failed (`None`).
    pub fn record_pass(&self, store: &str, outcome: Option<PassOutcome>) {
        let result = if outcome.is_some() { "ok" } else { "failed" };
        self.passes.get_or_create(&PassLabels { store: store.to_string(), result }).inc();
        let Some(outcome) = outcome else {
            return;
        };
        let label = CompactedStore { store: store.to_string() };
        for (kind, n) in [("l1", outcome.l1_written), ("snapshot", outcome.snapshots_written)] {
            self.segments_written.get_or_create(&WrittenLabels { store: store.to_string(), kind }).inc_by(n.into());
        }
        self.objects_deleted.get_or_create(&label).inc_by(outcome.deleted.into());
        self.last_success.get_or_create(&label).set(clock::now_ms() as f64 / 1000.0);
        if let Some((newest_commit_ms, backlog)) = outcome.manifest {
            self.newest_commit.get_or_create(&label).set(newest_commit_ms as f64 / 1000.0);
            self.backlog.get_or_create(&label).set(i64::try_from(backlog).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_lock_holds_render_as_a_cumulative_histogram() {
        let metrics = Metrics::default();
        for micros in [30, 300, 2_000, 2_000_000] {
            metrics.record_write_lock_hold(std::time::Duration::from_micros(micros));
        }
        let text = metrics.render();
        let line = |le: &str| {
            let prefix = format!("distributary_write_lock_hold_seconds_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no bucket {le}: {text}"))
                .to_string()
        };
        assert_eq!(line("5e-05"), "1");
        assert_eq!(line("0.001"), "2");
        assert_eq!(line("0.0025"), "3");
        assert_eq!(line("1"), "3", "2 s is past the last bound");
        assert_eq!(line("+Inf"), "4");
        assert!(text.contains("distributary_write_lock_hold_seconds_count 4"), "{text}");
    }

    #[test]
    fn per_store_gauges_are_labelled_and_escaped() {
        let metrics = Metrics::default();
        metrics.update_replica("/data/a \"b\".db", "file:///s", |s| {
            s.captured_txid = 7;
            s.shipped_txid = 5;
        });
        metrics.record_checkpoint(true);
        let outcome = PassOutcome { l1_written: 2, manifest: Some((1_500, 3)), ..PassOutcome::default() };
        metrics.compaction().record_pass("file:///s", Some(outcome));
        metrics.compaction().record_pass("file:///s", None);
        let text = metrics.render();
        let labels = r#"{db="/data/a \"b\".db",store="file:///s"}"#;
        for expected in [
            format!("distributary_captured_txid{labels} 7"),
            format!("distributary_replication_lag_transactions{labels} 2"),
            format!("distributary_replication_lag_seconds{labels} 0.0"),
            "distributary_checkpoints_total{mode=\"truncate\"} 1".to_string(),
            "distributary_checkpoints_total{mode=\"passive\"} 0".to_string(),
            r#"distributary_compaction_passes_total{store="file:///s",result="ok"} 1"#.to_string(),
            r#"distributary_compaction_passes_total{store="file:///s",result="failed"} 1"#.to_string(),
            r#"distributary_compaction_segments_written_total{store="file:///s",kind="l1"} 2"#.to_string(),
            r#"distributary_compaction_newest_commit_timestamp_seconds{store="file:///s"} 1.5"#.to_string(),
            r#"distributary_compaction_backlog_transactions{store="file:///s"} 3"#.to_string(),
        ] {
            assert!(text.lines().any(|l| l == expected), "no {expected:?} in\n{text}");
        }
    }
}
