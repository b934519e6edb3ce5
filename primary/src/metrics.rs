//! Counters and gauges of the replicator, served in Prometheus' text format
//! on `/metrics`, the replication position as JSON on `/status`, and on
//! `/bookmark` the TXID a write became part of (for read-your-writes at the
//! edge): the position after a capture pass that began after the request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use distributary_core::clock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Process-wide metrics.
#[derive(Default)]
pub struct Metrics {
    bytes_uploaded: AtomicU64,
    objects_uploaded: AtomicU64,
    errors: AtomicU64,
    checkpoints_passive: AtomicU64,
    checkpoints_truncate: AtomicU64,
    catch_ups: AtomicU64,
    wal_bytes: Mutex<BTreeMap<String, u64>>,
    replicas: Mutex<BTreeMap<(String, String), ReplicaStatus>>,
    /// Capture passes completed per database, and a wake-up for bookmark
    /// requests waiting on them.
    capture_passes: Mutex<BTreeMap<String, u64>>,
    capture_pass_done: tokio::sync::Notify,
    /// Bumped by `/bookmark` requests: a capture thread that sees it move
    /// runs a pass at once instead of at its next interval.
    pass_requests: AtomicU64,
    write_lock_hold: Mutex<Histogram>,
}

/// Upper bounds (seconds) of the write-lock hold-time buckets: 50 µs to 1 s,
/// dense around the 1 ms the design allows.
const HOLD_BUCKETS: [f64; 12] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0];

/// A Prometheus histogram with [`HOLD_BUCKETS`].
#[derive(Default)]
struct Histogram {
    /// Observations at or below each bucket's bound (not cumulative).
    buckets: [u64; HOLD_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(bucket) = HOLD_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket] += 1;
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in HOLD_BUCKETS.iter().zip(self.buckets) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum_seconds, self.count);
    }
}

/// The longest a `/bookmark` request waits for fresh capture passes.
const BOOKMARK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Metrics are plain values: a panic elsewhere cannot leave them torn.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    /// Counts one uploaded object.
    pub fn record_upload(&self, bytes: u64) {
        self.bytes_uploaded.fetch_add(bytes, Ordering::Relaxed);
        self.objects_uploaded.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed store operation.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a checkpoint run by the replicator.
    pub fn record_checkpoint(&self, truncate: bool) {
        let counter = if truncate { &self.checkpoints_truncate } else { &self.checkpoints_passive };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a catch-up after lost WAL continuity.
    pub fn record_catch_up(&self) {
        self.catch_ups.fetch_add(1, Ordering::Relaxed);
    }

    /// Catch-ups so far.
    #[cfg(test)]
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups.load(Ordering::Relaxed)
    }

    /// Records one hold of the app's write lock (a sync point, or a
    /// TRUNCATE checkpoint, which takes it itself).
    pub fn record_write_lock_hold(&self, held: std::time::Duration) {
        lock(&self.write_lock_hold).observe(held.as_secs_f64());
    }

    /// Sets the WAL size of a database.
    pub fn set_wal_bytes(&self, db: &str, bytes: u64) {
        lock(&self.wal_bytes).insert(db.to_string(), bytes);
    }

    /// Updates one store's progress with `update`.
    pub fn update_replica(&self, db: &str, url: &str, update: impl FnOnce(&mut ReplicaStatus)) {
        let mut replicas = lock(&self.replicas);
        let entry = replicas.entry((db.to_string(), url.to_string())).or_insert_with(|| ReplicaStatus {
            db: db.to_string(),
            url: url.to_string(),
            ..ReplicaStatus::default()
        });
        update(entry);
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
        lock(&self.replicas).values().cloned().collect()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            &mut out,
            "distributary_upload_bytes_total",
            "Bytes uploaded to stores.",
            self.bytes_uploaded.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "distributary_upload_objects_total",
            "Objects uploaded to stores.",
            self.objects_uploaded.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "distributary_store_errors_total",
            "Failed store operations (after retries).",
            self.errors.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "distributary_catch_ups_total",
            "Catch-up segments after lost WAL continuity.",
            self.catch_ups.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP distributary_checkpoints_total Checkpoints run by the replicator.\n# TYPE distributary_checkpoints_total counter"
        );
        let _ = writeln!(
            out,
            "distributary_checkpoints_total{{mode=\"passive\"}} {}",
            self.checkpoints_passive.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "distributary_checkpoints_total{{mode=\"truncate\"}} {}",
            self.checkpoints_truncate.load(Ordering::Relaxed)
        );
        lock(&self.write_lock_hold).render(
            &mut out,
            "distributary_write_lock_hold_seconds",
            "How long the replicator held the app's write lock (its writers wait meanwhile).",
        );
        let _ = writeln!(
            out,
            "# HELP distributary_wal_bytes Size of the database's WAL file.\n# TYPE distributary_wal_bytes gauge"
        );
        for (db, bytes) in lock(&self.wal_bytes).iter() {
            let _ = writeln!(out, "distributary_wal_bytes{{db=\"{}\"}} {bytes}", escape(db));
        }
        let now = clock::now_ms();
        let replicas = self.replicas();
        let gauges: [Gauge; 4] = [
            ("distributary_captured_txid", "Newest TXID captured from the WAL.", |r, _| r.captured_txid as f64),
            ("distributary_shipped_txid", "Newest TXID in the store.", |r, _| r.shipped_txid as f64),
            ("distributary_replication_lag_transactions", "Transactions captured but not yet in the store.", |r, _| {
                r.captured_txid.saturating_sub(r.shipped_txid) as f64
            }),
            ("distributary_replication_lag_seconds", "Age of the oldest capture not yet in the store.", |r, now| {
                r.oldest_unshipped_ms.map_or(0.0, |ms| now.saturating_sub(ms) as f64 / 1000.0)
            }),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for replica in &replicas {
                let _ = writeln!(
                    out,
                    "{name}{{db=\"{}\",store=\"{}\"}} {}",
                    escape(&replica.db),
                    escape(&replica.url),
                    value(replica, now)
                );
            }
        }
        out
    }
}

/// A per-store gauge: name, help text, and its value at a time (ms).
type Gauge = (&'static str, &'static str, fn(&ReplicaStatus, u64) -> f64);

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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

/// Serves `/metrics`, `/status` and `/bookmark` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (mut stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept a metrics connection");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let read = match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let line = String::from_utf8_lossy(&request[..read]);
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/status" => (
                    "200 OK",
                    "application/json",
                    serde_json::to_string_pretty(&metrics.replicas()).unwrap_or_else(|_| "[]".into()),
                ),
                "/bookmark" => match metrics.bookmark().await {
                    Some(replicas) => ("200 OK", "application/json", bookmark_json(&replicas)),
                    None => (
                        "503 Service Unavailable",
                        "text/plain",
                        "capture did not complete a pass in time; see the replicator's log\n".to_string(),
                    ),
                },
                _ => ("404 Not Found", "text/plain", "try /metrics, /status or /bookmark\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
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
        assert_eq!(line("0.00005"), "1");
        assert_eq!(line("0.001"), "2");
        assert_eq!(line("0.0025"), "3");
        assert_eq!(line("1"), "3", "2 s is past the last bound");
        assert_eq!(line("+Inf"), "4");
        assert!(text.contains("distributary_write_lock_hold_seconds_count 4"), "{text}");
    }
}
