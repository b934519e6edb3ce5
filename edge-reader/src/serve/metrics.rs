//! Counters, a latency histogram and the follower's gauges, rendered in
//! Prometheus' text format on `/metrics`; and [`MeteredStore`], which counts
//! every request the replica makes to its store (so "one 404 and one 304 per
//! idle poll, never a LIST" can be watched in production, and tested).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distributary_core::store::{GetOptions, GetResult, ObjectMeta, Payload, PutMode, Store, StoreError};

use super::follower::Status;

/// Upper bounds of the query latency histogram, in seconds.
const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0];

/// A cumulative histogram of durations.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", count.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Process-wide metrics of `serve`.
#[derive(Default)]
pub struct Metrics {
    /// `(route, status code)` → responses.
    responses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    query_seconds: Histogram,
    /// `(operation, result)` → store requests.
    store_requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    syncs_ok: AtomicU64,
    syncs_failed: AtomicU64,
    objects_applied: AtomicU64,
    bytes_applied: AtomicU64,
    sync_seconds: Histogram,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain counters: a panic elsewhere cannot leave them torn.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Counts one response.
    pub fn record_response(&self, route: &'static str, status: u16) {
        *lock(&self.responses).entry((route, status)).or_default() += 1;
    }

    /// Records the time one query took on its connection.
    pub fn record_query(&self, elapsed: Duration) {
        self.query_seconds.observe(elapsed);
    }

    /// Records one poll that ran a sync or failed.
    pub fn record_sync(&self, ok: bool, objects: u64, bytes: u64, elapsed: Duration) {
        let counter = if ok { &self.syncs_ok } else { &self.syncs_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.objects_applied.fetch_add(objects, Ordering::Relaxed);
        self.bytes_applied.fetch_add(bytes, Ordering::Relaxed);
        self.sync_seconds.observe(elapsed);
    }

    fn record_store(&self, op: &'static str, result: &'static str) {
        *lock(&self.store_requests).entry((op, result)).or_default() += 1;
    }

    /// The Prometheus text exposition, with the follower's `status`.
    pub fn render(&self, status: &Status) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP distributary_serve_responses_total HTTP responses by route and status code.\n# TYPE distributary_serve_responses_total counter"
        );
        for ((route, code), n) in lock(&self.responses).iter() {
            let _ = writeln!(out, "distributary_serve_responses_total{{route=\"{route}\",code=\"{code}\"}} {n}");
        }
        self.query_seconds.render(
            &mut out,
            "distributary_serve_query_seconds",
            "Time a query held a read connection (prepare, bind, step, encode).",
        );
        let _ = writeln!(
            out,
            "# HELP distributary_store_requests_total Requests to the store by operation and result.\n# TYPE distributary_store_requests_total counter"
        );
        for ((op, result), n) in lock(&self.store_requests).iter() {
            let _ = writeln!(out, "distributary_store_requests_total{{op=\"{op}\",result=\"{result}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP distributary_replica_syncs_total Polls that ran a sync, or failed.\n# TYPE distributary_replica_syncs_total counter"
        );
        let _ = writeln!(
            out,
            "distributary_replica_syncs_total{{result=\"ok\"}} {}",
            self.syncs_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "distributary_replica_syncs_total{{result=\"failed\"}} {}",
            self.syncs_failed.load(Ordering::Relaxed)
        );
        let counters = [
            ("distributary_replica_applied_objects_total", "Objects applied to the replica.", &self.objects_applied),
            (
                "distributary_replica_applied_bytes_total",
                "Bytes of objects applied to the replica.",
                &self.bytes_applied,
            ),
        ];
        for (name, help, value) in counters {
            let _ =
                writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
        }
        self.sync_seconds.render(
            &mut out,
            "distributary_replica_sync_seconds",
            "Duration of polls that ran a sync or failed.",
        );
        let gauges: [(&str, &str, Option<f64>); 6] = [
            ("distributary_replica_txid", "The TXID queries read at (at least).", status.txid.map(|t| t as f64)),
            (
                "distributary_replica_lag_transactions",
                "Transactions known to be in the store and not in the replica.",
                status.lag_transactions.map(|t| t as f64),
            ),
            (
                "distributary_replica_lag_seconds",
                "Seconds since the replica was last known to be caught up (0 while it is).",
                status.lag_seconds,
            ),
            (
                "distributary_replica_staleness_seconds",
                "Seconds since the replica was last confirmed up to date with the store.",
                Some(status.staleness_seconds),
            ),
            (
                "distributary_replica_healthy",
                "1 if the replica is ready and within --max-staleness.",
                Some(if status.healthy { 1.0 } else { 0.0 }),
            ),
            (
                "distributary_replica_consecutive_failures",
                "Polls that failed in a row.",
                Some(status.consecutive_failures as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            }
        }
        out
    }
}

/// A [`Store`] that counts each request in [`Metrics`] by operation and
/// result (`ok`, `not_found`, `not_modified`, `error`).
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    fn count<T>(&self, op: &'static str, result: &Result<T, StoreError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(StoreError::NotFound { .. }) => "not_found",
            Err(StoreError::NotModified { .. }) => "not_modified",
            Err(_) => "error",
        };
        self.metrics.record_store(op, outcome);
    }
}

#[async_trait::async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let op = if options.if_none_match.is_some() { "get_conditional" } else { "get" };
        let result = self.inner.get(key, options).await;
        self.count(op, &result);
        result
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let result = self.inner.head(key).await;
        self.count("head", &result);
        result
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        let result = self.inner.put(key, payload, mode).await;
        self.count("put", &result);
        result
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let result = self.inner.delete(keys).await;
        self.count("delete", &result);
        result
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let result = self.inner.list(prefix).await;
        self.count("list", &result);
        result
    }

    fn url(&self) -> &str {
        self.inner.url()
    }
}
