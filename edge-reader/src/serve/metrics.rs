//! `serve`'s metrics, rendered in Prometheus' text format on `/metrics`:
//! responses, query and sync latencies, the follower's gauges; and
//! [`MeteredStore`], which counts every request the replica makes to its
//! store (so "one 404 and one 304 per idle poll, never a LIST" can be
//! watched in production, and tested).
//!
//! The follower records into [`Metrics`] and hands its gauges over as
//! [`ReplicaGauges`] at each scrape: this module knows nothing of the
//! follower, so the two do not import each other.

use std::sync::Arc;
use std::time::Duration;

use distributary_core::http_server::{prometheus_text, registered};
use distributary_core::store::{GetOptions, GetResult, ObjectMeta, Payload, PutMode, Store, StoreError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the query and sync latency histograms, in seconds.
const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0];

/// The labels of `distributary_serve_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    route: &'static str,
    code: u16,
}

/// The labels of `distributary_store_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    op: &'static str,
    result: &'static str,
}

/// The label of `distributary_replica_syncs_total`: `ok` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The follower's state at a scrape, as gauges (`None`: not known yet, and
/// left out rather than reported as zero).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaGauges {
    /// The TXID queries read at (at least).
    pub txid: Option<u64>,
    /// Transactions known to be in the store and not in the replica.
    pub lag_transactions: Option<u64>,
    /// Seconds since the replica was last known to be caught up.
    pub lag_seconds: Option<f64>,
    /// Seconds since the replica was last confirmed up to date.
    pub staleness_seconds: f64,
    /// Ready and within `--max-staleness`.
    pub healthy: bool,
    /// Polls that failed in a row.
    pub consecutive_failures: u64,
}

/// Process-wide metrics of `serve`.
pub struct Metrics {
    registry: Registry,
    responses: Family<ResponseLabels, Counter>,
    query_seconds: Histogram,
    store_requests: Family<StoreLabels, Counter>,
    syncs: Family<ResultLabel, Counter>,
    applied_objects: Counter,
    applied_bytes: Counter,
    sync_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("distributary");
        let r = &mut registry;
        let syncs = registered(r, "replica_syncs", "Polls that ran a sync, or failed", Family::default());
        // Both results from the start: a rate of failures is 0, not absent.
        for result in ["ok", "failed"] {
            let _ = syncs.get_or_create(&ResultLabel { result });
        }
        let responses = "HTTP responses by route and status code";
        let query = "Time a query held a read connection (prepare, bind, step, encode)";
        let store_requests = "Requests to the store by operation and result";
        Metrics {
            responses: registered(r, "serve_responses", responses, Family::default()),
            query_seconds: registered(r, "serve_query_seconds", query, Histogram::new(BUCKETS)),
            store_requests: registered(r, "store_requests", store_requests, Family::default()),
            syncs,
            applied_objects: registered(
                r,
                "replica_applied_objects",
                "Objects applied to the replica",
                Counter::default(),
            ),
            applied_bytes: registered(
                r,
                "replica_applied_bytes",
                "Bytes of objects applied to the replica",
                Counter::default(),
            ),
            sync_seconds: registered(
                r,
                "replica_sync_seconds",
                "Duration of polls that ran a sync or failed",
                Histogram::new(BUCKETS),
            ),
            registry,
        }
    }
}

impl Metrics {
    /// Counts one response.
    pub fn record_response(&self, route: &'static str, status: u16) {
        self.responses.get_or_create(&ResponseLabels { route, code: status }).inc();
    }

    /// Records the time one query took on its connection.
    pub fn record_query(&self, elapsed: Duration) {
        self.query_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records one poll that ran a sync or failed.
    pub fn record_sync(&self, ok: bool, objects: u64, bytes: u64, elapsed: Duration) {
        self.syncs.get_or_create(&ResultLabel { result: if ok { "ok" } else { "failed" } }).inc();
        self.applied_objects.inc_by(objects);
        self.applied_bytes.inc_by(bytes);
        self.sync_seconds.observe(elapsed.as_secs_f64());
    }

    fn record_store(&self, op: &'static str, result: &'static str) {
        self.store_requests.get_or_create(&StoreLabels { op, result }).inc();
    }

    /// The Prometheus text exposition: the counters, and `gauges` (the
    /// follower's state now).
    pub fn render(&self, gauges: &ReplicaGauges) -> String {
        let mut now = Registry::with_prefix("distributary");
        // Counts as integers, durations in seconds as floats.
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let counts = [
            ("replica_txid", "The TXID queries read at (at least)", gauges.txid.map(int)),
            (
                "replication_lag_transactions",
                "Transactions known to be in the store and not in the replica",
                gauges.lag_transactions.map(int),
            ),
            ("replica_healthy", "1 if the replica is ready and within --max-staleness", Some(gauges.healthy.into())),
            ("replica_consecutive_failures", "Polls that failed in a row", Some(int(gauges.consecutive_failures))),
        ];
        for (name, help, value) in counts {
            if let Some(value) = value {
                now.register(name, help, ConstGauge::new(value));
            }
        }
        let seconds = [
            (
                "replication_lag_seconds",
                "Seconds since the replica was last known to hold everything the store held (0 while it does)",
                gauges.lag_seconds,
            ),
            (
                "replica_staleness_seconds",
                "Seconds since the replica was last confirmed up to date with the store",
                Some(gauges.staleness_seconds),
            ),
        ];
        for (name, help, value) in seconds {
            if let Some(value) = value {
                now.register(name, help, ConstGauge::new(value));
            }
        }
        prometheus_text(&[&self.registry, &now])
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
