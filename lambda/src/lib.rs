//! The Distributary compactor as an AWS Lambda function, triggered by S3
//! `ObjectCreated` events on L0 segments.
//!
//! An event is only a hint that a prefix has new L0 segments: the handler
//! derives each record's store (bucket, and the key's part before
//! `/<generation>/l0/`), and runs [`distributary_core::compact::compact`]
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
//! --data-file event.json` sends it an S3 event. Wire the bucket's
//! `s3:ObjectCreated:*` notifications, filtered to keys containing `/l0/`,
//! to the function; it needs `s3:GetObject`, `s3:PutObject` and
//! `s3:DeleteObject` on the prefix.

use std::sync::Arc;

use aws_lambda_events::event::s3::S3Event;
use distributary_core::compact::{
    Clock, CompactConfig, CompactError, CompactReport, SystemClock, compact, parse_duration,
};
use distributary_core::layout::{Level, SegmentKey};
use distributary_core::store::{S3Store, StoreError};
use lambda_runtime::LambdaEvent;
use serde::Serialize;

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
}

impl Compactor {
    /// A compactor using `s3`'s client (any bucket and prefix) with `config`.
    pub fn new(s3: S3Store, config: CompactConfig, clock: Arc<dyn Clock>) -> Compactor {
        Compactor { s3, config, clock }
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
        Ok(Compactor::new(s3, config, Arc::new(SystemClock)))
    }
}

/// Reads the compaction thresholds through `get` (the environment, or a map
/// in tests); unset variables keep their defaults.
pub fn config_from_env(get: impl Fn(&str) -> Option<String>) -> Result<CompactConfig, LambdaError> {
    let mut config = CompactConfig::default();
    let duration = |name: &'static str, slot: &mut std::time::Duration| -> Result<(), LambdaError> {
        if let Some(value) = get(name).filter(|v| !v.is_empty()) {
            *slot = parse_duration(&value).map_err(|reason| LambdaError::Config { name, reason })?;
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
pub struct Target {
    /// The bucket.
    pub bucket: String,
    /// The prefix (empty for the bucket's root), without slashes at the ends.
    pub prefix: String,
}

/// The distinct stores named by the event's L0 `ObjectCreated` records, in
/// the order they first appear. Other records (other keys, other event
/// types) are ignored: the compactor's own L1 and snapshot uploads trigger
/// the function too when the notification is not filtered to `l0/`.
pub fn targets(event: &S3Event) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
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
        let target = Target { bucket: bucket.clone(), prefix };
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
    pub target: Target,
    /// Newest TXID in its manifest afterwards (as 16 hex digits).
    pub newest: Option<String>,
    /// L1 segments written.
    pub l1_created: u32,
    /// Snapshots written.
    pub snapshots_created: u32,
    /// Objects deleted by retention.
    pub deleted: u32,
}

/// Handles one S3 event: compacts every store it names (L0 keys only).
/// Returns an error naming every store that failed, after trying them all.
pub async fn handle(compactor: &Compactor, event: LambdaEvent<S3Event>) -> Result<Response, LambdaError> {
    let targets = targets(&event.payload);
    let span = tracing::info_span!("invocation", request_id = %event.context.request_id, stores = targets.len());
    let _entered = span.enter();
    let mut compacted = Vec::new();
    let mut messages = Vec::new();
    for target in &targets {
        let store = compactor.s3.with_location(target.bucket.clone(), target.prefix.clone());
        match compact(&store, &compactor.config, compactor.clock.as_ref()).await {
            Ok(report) => compacted.push(summary(target.clone(), &report)),
            Err(error) => messages.push(format!("s3://{}/{}: {}", target.bucket, target.prefix, chain(&error))),
        }
    }
    if messages.is_empty() {
        Ok(Response { compacted })
    } else {
        Err(LambdaError::Compact { failed: messages.len(), total: targets.len(), messages })
    }
}

fn summary(target: Target, report: &CompactReport) -> Compacted {
    Compacted {
        target,
        newest: report.newest.map(|t| t.to_string()),
        l1_created: report.l1_created,
        snapshots_created: report.snapshots_created,
        deleted: report.l0_deleted + report.l1_deleted + report.snapshots_deleted,
    }
}

/// The error and its causes, `: `-separated (causes a message already
/// includes are not repeated).
fn chain(error: &CompactError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
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

    #[test]
    fn config_reads_durations_and_refuses_nonsense() {
        let config = config_from_env(|name| (name == "DISTRIBUTARY_L1_WINDOW").then(|| "30s".to_string())).unwrap();
        assert_eq!(config.l1_window, std::time::Duration::from_secs(30));
        assert_eq!(config.l0_retention, CompactConfig::default().l0_retention);
        let err = config_from_env(|name| (name == "DISTRIBUTARY_L0_RETENTION").then(|| "soon".to_string()));
        assert!(err.unwrap_err().to_string().contains("DISTRIBUTARY_L0_RETENTION"));
    }
}
