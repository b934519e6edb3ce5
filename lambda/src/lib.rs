//! The Distributary compactor as an AWS Lambda function, triggered by S3
//! `ObjectCreated` events on L0 segments: either S3 event notifications
//! (`{"Records": [...]}`) or the EventBridge "Object Created" events that
//! `infra/template.yaml` routes to it (`{"detail-type": "Object Created",
//! "detail": {"bucket": ..., "object": ...}}`).
//!
//! An event is only a hint that a prefix has new L0 segments: the handler
//! derives each object's store (bucket, and the key's part before
//! `/<generation>/l0/`), and runs [`distributary_core::compact::compact_with`]
//! once per distinct store. Compaction finds its work from the manifest and
//! the chain by name, so events that arrive late, twice, out of order or
//! concurrently all produce the same result. Any failure is returned, so
//! Lambda retries the event and, past its retries, sends it to the failure
//! destination.
//!
//! # Configuration (environment variables)
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DISTRIBUTARY_L1_WINDOW` | `1m` | width of the windows of L0 segments merged into one L1 segment |
//! | `DISTRIBUTARY_SNAPSHOT_INTERVAL` | `1h` | minimum time between snapshots |
//! | `DISTRIBUTARY_SNAPSHOT_RETENTION` | `7d` | how long snapshots are kept (the newest always) |
//! | `DISTRIBUTARY_L0_RETENTION` | `5m` | how long merged L0 segments stay for polling readers |
//! | `DISTRIBUTARY_MAX_FAN_IN` | `256` | most merge inputs open at once |
//! | `DISTRIBUTARY_TEMP_DIR` | `/tmp` | staging folder (size the Lambda's ephemeral storage for two snapshots) |
//! | `DISTRIBUTARY_S3_ENDPOINT` | AWS | S3-compatible endpoint (`AWS_ENDPOINT_URL` works too) |
//! | `DISTRIBUTARY_S3_PATH_STYLE` | on with a custom endpoint | `true`/`false`: path-style addressing |
//! | `AWS_REGION` | set by Lambda | region of the bucket |
//! | `DISTRIBUTARY_LOG` | `info` | log filter (`tracing` env-filter syntax) |
//! | `DISTRIBUTARY_METRICS_NAMESPACE` | `Distributary` | CloudWatch namespace of the metrics below; `off` disables them |
//!
//! # Metrics
//!
//! After each store it compacts, the function prints one line of CloudWatch
//! Embedded Metric Format to stdout (CloudWatch Logs turns it into metrics:
//! no SDK call, no extra permission), dimension `Store` = `s3://bucket/prefix`:
//!
//! | metric | unit | meaning |
//! |---|---|---|
//! | `NewestCommitAgeSeconds` | Seconds | now minus the commit time of the newest transaction in the store: how late the store (and so every reader) is behind the primary's clock, as seen at this compaction |
//! | `UncompactedTransactions` | Count | transactions after the L1 chain (readers fetch them as L0 segments) |
//! | `SegmentsWritten` | Count | L1 segments and snapshots this run wrote |
//! | `ObjectsDeleted` | Count | objects retention deleted |
//!
//! The function runs only when an L0 segment arrives, so an idle primary (or
//! a stopped one) publishes nothing: alarms on these metrics must decide
//! what missing data means (see `docs/DEPLOY.md`).
//!
//! Durations are a number and a unit: `ms`, `s`, `m`, `h`, `d`.
//!
//! # Building and trying it
//!
//! `pip install cargo-lambda ziglang` (or `scripts/setup.sh`), then from
//! `lambda/`: `cargo lambda build --release --arm64 --output-format zip`
//! gives `target/lambda/distributary-lambda/bootstrap.zip` for the
//! `provided.al2023` runtime on arm64. Locally, `cargo lambda watch` serves
//! the Lambda runtime API and `cargo lambda invoke distributary-lambda
//! --data-file event.json` sends it an event. `infra/template.yaml` wires
//! the bucket's EventBridge events, filtered to L0 keys, to the function and
//! grants it `s3:GetObject`, `s3:PutObject` and `s3:DeleteObject` on the
//! prefix (and `s3:ListBucket`, so that missing objects answer 404).

use std::sync::Arc;

use aws_lambda_events::event::s3::S3Event;
use distributary_core::clock::{Clock, SystemClock};
use distributary_core::compact::{CompactConfig, CompactError, CompactMemory, CompactReport, compact_with};
use distributary_core::layout::{Level, SegmentKey};
use distributary_core::store::{S3Store, StoreError};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};

/// The metrics namespace when `DISTRIBUTARY_METRICS_NAMESPACE` is unset.
pub const DEFAULT_METRICS_NAMESPACE: &str = "Distributary";

/// Errors setting the function up or handling an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LambdaError {
    /// An environment variable has a value that cannot be used.
    #[error("read environment variable {name}: {reason}")]
    Config {
        /// The variable.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The S3 client could not be built.
    #[error("connect to S3: {0}")]
    Connect(#[source] StoreError),
    /// Compacting one or more stores failed (each is named).
    #[error("compact {failed} of {total} stores: {}", messages.join("; "))]
    Compact {
        /// How many stores failed.
        failed: usize,
        /// How many stores the event named.
        total: usize,
        /// One message per failure, with its store and cause chain.
        messages: Vec<String>,
    },
}

/// Everything an invocation needs, built once per Lambda instance.
#[derive(Debug)]
pub struct Compactor {
    s3: S3Store,
    config: CompactConfig,
    clock: Arc<dyn Clock>,
    metrics_namespace: Option<String>,
    /// Kept while the execution environment stays warm: the next
    /// invocations skip the headers this one read.
    memory: CompactMemory,
}

impl Compactor {
    /// A compactor using `s3`'s client (any bucket and prefix) with `config`.
    /// It prints no metrics until [`Compactor::with_metrics`] names a namespace.
    pub fn new(s3: S3Store, config: CompactConfig, clock: Arc<dyn Clock>) -> Compactor {
        Compactor { s3, config, clock, metrics_namespace: None, memory: CompactMemory::new() }
    }

    /// Prints one Embedded Metric Format line per compacted store to stdout,
    /// in CloudWatch namespace `namespace` (`None`: no metrics).
    pub fn with_metrics(mut self, namespace: Option<String>) -> Compactor {
        self.metrics_namespace = namespace;
        self
    }

    /// Builds the S3 client and configuration from the environment.
    pub async fn from_env() -> Result<Compactor, LambdaError> {
        let config = config_from_env(|name| std::env::var(name).ok())?;
        let endpoint = std::env::var("DISTRIBUTARY_S3_ENDPOINT").ok().filter(|e| !e.is_empty());
        let path_style = match std::env::var("DISTRIBUTARY_S3_PATH_STYLE").ok().as_deref() {
            None | Some("") => None,
            Some("true" | "1") => Some(true),
            Some("false" | "0") => Some(false),
            Some(other) => {
                return Err(LambdaError::Config {
                    name: "DISTRIBUTARY_S3_PATH_STYLE",
                    reason: format!("{other:?} is not true or false"),
                });
            }
        };
        // The bucket and prefix are placeholders: each record names its own.
        let s3 = S3Store::connect(String::new(), String::new(), endpoint, None, path_style)
            .await
            .map_err(LambdaError::Connect)?;
        let namespace = match std::env::var("DISTRIBUTARY_METRICS_NAMESPACE").ok().as_deref() {
            None | Some("") => Some(DEFAULT_METRICS_NAMESPACE.to_string()),
            Some("off") => None,
            Some(other) => Some(other.to_string()),
        };
        Ok(Compactor::new(s3, config, Arc::new(SystemClock)).with_metrics(namespace))
    }
}

/// Reads the compaction thresholds through `get` (the environment, or a map
/// in tests); unset variables keep their defaults.
pub fn config_from_env(get: impl Fn(&str) -> Option<String>) -> Result<CompactConfig, LambdaError> {
    let mut config = CompactConfig::default();
    let duration = |name: &'static str, slot: &mut std::time::Duration| -> Result<(), LambdaError> {
        if let Some(value) = get(name).filter(|v| !v.is_empty()) {
            *slot = distributary_core::duration::parse_duration(&value)
                .map_err(|reason| LambdaError::Config { name, reason: reason.to_string() })?;
        }
        Ok(())
    };
    duration("DISTRIBUTARY_L1_WINDOW", &mut config.l1_window)?;
    duration("DISTRIBUTARY_SNAPSHOT_INTERVAL", &mut config.snapshot_interval)?;
    duration("DISTRIBUTARY_SNAPSHOT_RETENTION", &mut config.snapshot_retention)?;
    duration("DISTRIBUTARY_L0_RETENTION", &mut config.l0_retention)?;
    if let Some(value) = get("DISTRIBUTARY_MAX_FAN_IN").filter(|v| !v.is_empty()) {
        config.max_fan_in = value.parse().ok().filter(|&n: &usize| n >= 2).ok_or_else(|| LambdaError::Config {
            name: "DISTRIBUTARY_MAX_FAN_IN",
            reason: format!("{value:?} is not a whole number of at least 2"),
        })?;
    }
    if let Some(value) = get("DISTRIBUTARY_TEMP_DIR").filter(|v| !v.is_empty()) {
        config.temp_dir = Some(value.into());
    }
    Ok(config)
}

/// A store to compact: a bucket and the prefix the replicator writes under.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct BucketPrefix {
    /// The bucket.
    pub bucket: String,
    /// The prefix (empty for the bucket's root), without slashes at the ends.
    pub prefix: String,
}

/// What the function accepts: an S3 event notification, or an EventBridge
/// event from S3. Deserialised by shape: EventBridge events have a `detail`,
/// notifications have `Records`; anything else is refused (and so retried,
/// then sent to the failure destination, rather than silently dropped).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Event {
    /// An EventBridge event whose source is S3 (`infra/template.yaml`).
    EventBridge(EventBridgeS3Event),
    /// An S3 event notification (bucket notification configuration).
    S3(S3Event),
}

impl From<S3Event> for Event {
    fn from(event: S3Event) -> Event {
        Event::S3(event)
    }
}

impl From<EventBridgeS3Event> for Event {
    fn from(event: EventBridgeS3Event) -> Event {
        Event::EventBridge(event)
    }
}

impl Event {
    /// The distinct stores this event names through L0 segment keys.
    pub fn targets(&self) -> Vec<BucketPrefix> {
        match self {
            Event::S3(event) => targets(event),
            Event::EventBridge(event) => event.target().into_iter().collect(),
        }
    }
}

/// The fields the function reads of an S3 event delivered by EventBridge
/// (the envelope's `source` and `detail-type`, the detail's bucket and key);
/// the others are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct EventBridgeS3Event {
    /// `aws.s3` for events from S3.
    pub source: String,
    /// `Object Created`, `Object Deleted`, ...
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// The object and its bucket.
    pub detail: EventBridgeS3Detail,
}

/// `detail` of an EventBridge event from S3.
#[derive(Clone, Debug, Deserialize)]
pub struct EventBridgeS3Detail {
    /// `{"name": bucket}`.
    pub bucket: EventBridgeBucket,
    /// `{"key": key, ...}`.
    pub object: EventBridgeObject,
}

/// `detail.bucket` of an EventBridge event from S3.
#[derive(Clone, Debug, Deserialize)]
pub struct EventBridgeBucket {
    /// The bucket's name.
    pub name: String,
}

/// `detail.object` of an EventBridge event from S3.
#[derive(Clone, Debug, Deserialize)]
pub struct EventBridgeObject {
    /// The object's key.
    pub key: String,
}

impl EventBridgeS3Event {
    /// The store of the created L0 segment this event names, if it does.
    /// The key is used as it is: EventBridge carries the object's key, not
    /// the form-encoded one of S3 notifications (and the keys the template
    /// routes here hold no character that either encoding would change).
    pub fn target(&self) -> Option<BucketPrefix> {
        if self.source != "aws.s3" || self.detail_type != "Object Created" {
            tracing::debug!(source = self.source, detail_type = self.detail_type, "not an S3 object creation; ignored");
            return None;
        }
        let Some(prefix) = l0_prefix(&self.detail.object.key) else {
            tracing::debug!(key = self.detail.object.key, "not an L0 segment; ignored");
            return None;
        };
        Some(BucketPrefix { bucket: self.detail.bucket.name.clone(), prefix })
    }
}

/// The distinct stores named by the event's L0 `ObjectCreated` records, in
/// the order they first appear. Other records (other keys, other event
/// types) are ignored: the compactor's own L1 and snapshot uploads trigger
/// the function too when the notification is not filtered to `l0/`.
pub fn targets(event: &S3Event) -> Vec<BucketPrefix> {
    let mut targets: Vec<BucketPrefix> = Vec::new();
    for record in &event.records {
        let created = record.event_name.as_deref().is_some_and(|name| name.starts_with("ObjectCreated:"));
        let (Some(bucket), Some(key)) = (&record.s3.bucket.name, &record.s3.object.key) else {
            continue;
        };
        if !created {
            continue;
        }
        let Some(prefix) = decode_key(key).and_then(|key| l0_prefix(&key)) else {
            tracing::debug!(key, "not an L0 segment; ignored");
            continue;
        };
        let target = BucketPrefix { bucket: bucket.clone(), prefix };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    targets
}

/// S3 event keys are URL-encoded the way HTML forms are: `+` for a space,
/// `%XX` for other bytes.
fn decode_key(key: &str) -> Option<String> {
    let plus_decoded = key.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_decoded).decode_utf8().ok().map(|k| k.into_owned())
}

/// The store prefix of an L0 segment's full key (`<prefix>/<gen>/l0/<txid>.seg`),
/// or `None` if the key is not an L0 segment.
fn l0_prefix(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.rsplitn(4, '/').collect();
    let (file, level, generation) = (parts.first()?, parts.get(1)?, parts.get(2)?);
    let segment = SegmentKey::parse(&format!("{generation}/{level}/{file}"))?;
    if segment.level != Level::L0 {
        return None;
    }
    Some(parts.get(3).map_or(String::new(), |prefix| prefix.trim_matches('/').to_string()))
}

/// What an invocation did, returned to the caller (and to Lambda's success
/// destination).
#[derive(Debug, Serialize)]
pub struct Response {
    /// One entry per store compacted.
    pub compacted: Vec<Compacted>,
}

/// The result for one store.
#[derive(Debug, Serialize)]
pub struct Compacted {
    /// The store.
    pub target: BucketPrefix,
    /// Newest TXID in its manifest afterwards (as 16 hex digits).
    pub newest: Option<String>,
    /// L1 segments written.
    pub l1_created: u32,
    /// Snapshots written.
    pub snapshots_created: u32,
    /// Objects deleted by retention.
    pub deleted: u32,
    /// Milliseconds from the newest transaction's commit to the end of this
    /// run (by the function's clock); `None` if the store has no manifest.
    pub newest_commit_age_ms: Option<u64>,
    /// Transactions after the L1 chain, still only in L0 segments.
    pub uncompacted_transactions: Option<u64>,
}

/// Handles one event (S3 notification or EventBridge): compacts every store
/// it names (L0 keys only). Returns an error naming every store that
/// failed, after trying them all.
pub async fn handle<E: Into<Event>>(compactor: &Compactor, event: LambdaEvent<E>) -> Result<Response, LambdaError> {
    let payload: Event = event.payload.into();
    let targets = payload.targets();
    let span = tracing::info_span!("invocation", request_id = %event.context.request_id, stores = targets.len());
    let _entered = span.enter();
    let mut compacted = Vec::new();
    let mut messages = Vec::new();
    for target in &targets {
        let store = compactor.s3.with_location(target.bucket.clone(), target.prefix.clone());
        match compact_with(&store, &compactor.config, compactor.clock.as_ref(), &compactor.memory).await {
            Ok(report) => {
                // The staleness metrics come from the manifest as the run
                // left it: no GET of their own.
                let now_ms = compactor.clock.now_ms();
                let result = summary(target.clone(), &report, now_ms);
                if let Some(namespace) = &compactor.metrics_namespace {
                    // stdout, one line: Lambda ships it to CloudWatch Logs, which
                    // extracts the metrics (logs go to stderr, so lines never mix).
                    println!("{}", metrics_line(namespace, &result, now_ms));
                }
                compacted.push(result);
            }
            Err(error) => messages.push(format!("s3://{}/{}: {}", target.bucket, target.prefix, chain(&error))),
        }
    }
    if messages.is_empty() {
        Ok(Response { compacted })
    } else {
        Err(LambdaError::Compact { failed: messages.len(), total: targets.len(), messages })
    }
}

fn summary(target: BucketPrefix, report: &CompactReport, now_ms: u64) -> Compacted {
    let manifest = report.manifest.as_ref();
    Compacted {
        target,
        newest: report.newest.map(|t| t.to_string()),
        l1_created: report.l1_created,
        snapshots_created: report.snapshots_created,
        deleted: report.l0_deleted + report.l1_deleted + report.snapshots_deleted,
        newest_commit_age_ms: manifest.map(|m| now_ms.saturating_sub(m.newest.timestamp_ms)),
        // `l0_min_txid` is the first TXID not in L1: newest - (l0_min - 1).
        uncompacted_transactions: manifest.map(|m| (m.newest.txid.0 + 1).saturating_sub(m.l0_min_txid.0)),
    }
}

/// One CloudWatch Embedded Metric Format document (a single JSON line) for
/// `compacted`, dimension `Store` = `s3://bucket/prefix`. Metrics whose value
/// is unknown are left out rather than reported as zero.
pub fn metrics_line(namespace: &str, compacted: &Compacted, now_ms: u64) -> String {
    let mut definitions = Vec::new();
    let mut document = serde_json::Map::new();
    let store = format!("s3://{}/{}", compacted.target.bucket, compacted.target.prefix);
    document.insert("Store".into(), store.into());
    let mut metric = |name: &str, unit: &str, value: serde_json::Value| {
        definitions.push(serde_json::json!({ "Name": name, "Unit": unit }));
        document.insert(name.into(), value);
    };
    if let Some(age_ms) = compacted.newest_commit_age_ms {
        metric("NewestCommitAgeSeconds", "Seconds", (age_ms as f64 / 1000.0).into());
    }
    if let Some(count) = compacted.uncompacted_transactions {
        metric("UncompactedTransactions", "Count", count.into());
    }
    metric("SegmentsWritten", "Count", (compacted.l1_created + compacted.snapshots_created).into());
    metric("ObjectsDeleted", "Count", compacted.deleted.into());
    document.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{ "Namespace": namespace, "Dimensions": [["Store"]], "Metrics": definitions }],
        }),
    );
    serde_json::Value::Object(document).to_string()
}

/// The error and its causes, `: `-separated (causes a message already
/// includes are not repeated).
fn chain(error: &CompactError) -> String {
    distributary_core::errors::error_chain(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_come_from_l0_keys_only() {
        let generation = "0123456789abcdef0123456789abcdef";
        assert_eq!(l0_prefix(&format!("a/b/{generation}/l0/0000000000000002.seg")).as_deref(), Some("a/b"));
        assert_eq!(l0_prefix(&format!("{generation}/l0/0000000000000002.seg")).as_deref(), Some(""));
        assert_eq!(l0_prefix(&format!("db/{generation}/l1/0000000000000002.seg")), None);
        assert_eq!(l0_prefix("db/manifest.json"), None);
        assert_eq!(decode_key("my+db/x%2By").as_deref(), Some("my db/x+y"));
    }

    /// The event S3 sends to EventBridge for a PutObject (the shape of the
    /// example in the S3 user guide), for `key` in `bucket`.
    fn eventbridge_json(detail_type: &str, bucket: &str, key: &str) -> String {
        format!(
            r#"{{"version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": "{detail_type}",
              "source": "aws.s3", "account": "111122223333", "time": "2026-01-01T00:00:00Z",
              "region": "us-east-1", "resources": ["arn:aws:s3:::{bucket}"],
              "detail": {{"version": "0", "bucket": {{"name": "{bucket}"}},
                "object": {{"key": "{key}", "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184",
                  "sequencer": "617f08299329d189"}},
                "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012",
                "source-ip-address": "1.2.3.4", "reason": "PutObject"}}}}"#
        )
    }

    #[test]
    fn eventbridge_events_name_the_store_of_l0_keys_only() {
        let generation = "0123456789abcdef0123456789abcdef";
        let l0 = format!("apps/db/{generation}/l0/0000000000000002.seg");
        let event: Event = serde_json::from_str(&eventbridge_json("Object Created", "b", &l0)).unwrap();
        assert!(matches!(event, Event::EventBridge(_)), "{event:?}");
        assert_eq!(event.targets(), [BucketPrefix { bucket: "b".into(), prefix: "apps/db".into() }]);
        for (detail_type, key) in [
            ("Object Created", format!("apps/db/{generation}/l1/0000000000000002.seg")),
            ("Object Created", format!("apps/db/{generation}/snapshots/0000000000000009.seg")),
            ("Object Created", "apps/db/manifest.json".to_string()),
            ("Object Deleted", l0.clone()),
        ] {
            let event: Event = serde_json::from_str(&eventbridge_json(detail_type, "b", &key)).unwrap();
            assert_eq!(event.targets(), [], "{detail_type} {key}");
        }
        // S3 notifications still parse as such; other shapes are refused.
        let records = r#"{"Records": []}"#;
        assert!(matches!(serde_json::from_str::<Event>(records).unwrap(), Event::S3(_)));
        assert!(serde_json::from_str::<Event>(r#"{"detail": {}}"#).is_err());
    }

    #[test]
    fn metrics_are_one_embedded_metric_format_line() {
        let compacted = Compacted {
            target: BucketPrefix { bucket: "b".into(), prefix: "apps/db".into() },
            newest: Some("0000000000000009".into()),
            l1_created: 2,
            snapshots_created: 1,
            deleted: 4,
            newest_commit_age_ms: Some(1_500),
            uncompacted_transactions: Some(3),
        };
        let line = metrics_line("Distributary", &compacted, 1_767_225_600_000);
        assert!(!line.contains('\n'), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["Store"], "s3://b/apps/db");
        assert_eq!(value["NewestCommitAgeSeconds"], 1.5);
        assert_eq!(value["UncompactedTransactions"], 3);
        assert_eq!(value["SegmentsWritten"], 3);
        assert_eq!(value["ObjectsDeleted"], 4);
        let directive = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(value["_aws"]["Timestamp"], 1_767_225_600_000u64);
        assert_eq!(directive["Namespace"], "Distributary");
        assert_eq!(directive["Dimensions"], serde_json::json!([["Store"]]));
        // Every declared metric has a value at the top level, as EMF requires.
        let names: Vec<&str> =
            directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(names, ["NewestCommitAgeSeconds", "UncompactedTransactions", "SegmentsWritten", "ObjectsDeleted"]);
        // Unknown values are left out, not reported as zero.
        let unknown = Compacted { newest_commit_age_ms: None, uncompacted_transactions: None, ..compacted };
        let value: serde_json::Value = serde_json::from_str(&metrics_line("N", &unknown, 0)).unwrap();
        assert!(value.get("NewestCommitAgeSeconds").is_none(), "{value}");
        assert_eq!(value["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn config_reads_durations_and_refuses_nonsense() {
        let config = config_from_env(|name| (name == "DISTRIBUTARY_L1_WINDOW").then(|| "30s".to_string())).unwrap();
        assert_eq!(config.l1_window, std::time::Duration::from_secs(30));
        assert_eq!(config.l0_retention, CompactConfig::default().l0_retention);
        let err = config_from_env(|name| (name == "DISTRIBUTARY_L0_RETENTION").then(|| "soon".to_string()));
        assert!(err.unwrap_err().to_string().contains("DISTRIBUTARY_L0_RETENTION"));
    }
}
