//! `distributary compact STORE_URL`: the compactor for machines without
//! Lambda (MinIO, R2, a local folder, ...). One run by default (for cron);
//! `--watch` repeats it every `--interval` until interrupted. The logic is
//! `distributary_core::compact`, shared with the Lambda.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use distributary_core::clock::SystemClock;
use distributary_core::compact::{
    CompactConfig, CompactError, CompactMemory, CompactReport, compact, compact_watching,
};
use distributary_core::duration::parse_duration;
use distributary_core::retry::{ErrorClass, RetryBound, WrapsStoreError, retry_bounded};
use distributary_core::store;

use crate::metrics::{CompactionMetrics, PassOutcome};

/// Merge L0 segments into L1 and snapshots, advance the manifest, apply retention.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store holding the database (file:///path, s3://bucket/prefix?...).
    store_url: String,
    /// Run once and exit (the default; kept for cron lines that say so).
    #[arg(long, conflicts_with = "watch")]
    once: bool,
    /// Keep running: compact every --interval until interrupted.
    #[arg(long)]
    watch: bool,
    /// Time between runs with --watch (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "DISTRIBUTARY_COMPACT_INTERVAL")]
    interval: Duration,
    /// Width of the windows of L0 segments merged into one L1 segment.
    #[arg(long, default_value = "1m", value_parser = parse_duration, env = "DISTRIBUTARY_L1_WINDOW")]
    l1_window: Duration,
    /// Minimum time between snapshots (by segment timestamps).
    #[arg(long, default_value = "1h", value_parser = parse_duration, env = "DISTRIBUTARY_SNAPSHOT_INTERVAL")]
    snapshot_interval: Duration,
    /// How long snapshots are kept (the newest is always kept).
    #[arg(long, default_value = "7d", value_parser = parse_duration, env = "DISTRIBUTARY_SNAPSHOT_RETENTION")]
    snapshot_retention: Duration,
    /// How long L0 segments already merged into L1 stay for polling readers.
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "DISTRIBUTARY_L0_RETENTION")]
    l0_retention: Duration,
    /// Most merge inputs open at once (memory and file descriptors).
    #[arg(long, default_value_t = 256, env = "DISTRIBUTARY_MAX_FAN_IN")]
    max_fan_in: usize,
    /// Folder for staging segments (needs room for the largest snapshot twice).
    #[arg(long, env = "DISTRIBUTARY_TEMP_DIR")]
    temp_dir: Option<PathBuf>,
    /// Without --watch: how long to keep retrying a store that fails
    /// transiently (5xx, throttling, timeouts) before exiting with status 1.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    retry_for: Duration,
    /// With --watch: serve Prometheus metrics on /metrics at this address
    /// (as `replicate --metrics-addr` does).
    #[arg(long, requires = "watch")]
    metrics_addr: Option<String>,
}

impl Args {
    /// The compactor's settings these arguments give.
    pub fn config(&self) -> CompactConfig {
        CompactConfig {
            l1_window: self.l1_window,
            snapshot_interval: self.snapshot_interval,
            snapshot_retention: self.snapshot_retention,
            l0_retention: self.l0_retention,
            max_fan_in: self.max_fan_in,
            temp_dir: self.temp_dir.clone(),
        }
    }
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let store = store::open(&args.store_url).await.with_context(|| format!("open store {}", args.store_url))?;
    let config = args.config();
    if !args.watch {
        if !once(store.as_ref(), &config, RetryBound { give_up_after: args.retry_for }).await? {
            eprintln!("distributary: {} holds no manifest yet; nothing to compact", store.url());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Registered before the first pass: a signal in the middle of a pass
    // lets it finish (a pass killed half way is safe, but wastes its work).
    let stop = crate::signals::stop_on_signals("finishing the compaction pass");
    let metrics = match &args.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, stop.clone()).await?),
        None => None,
    };
    watch(store.as_ref(), &config, args.interval, stop, metrics.as_deref()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the compactor's metrics on `addr` until `stop` turns true.
async fn serve_metrics(addr: &str, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<Arc<CompactionMetrics>> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
    let mut registry = prometheus_client::registry::Registry::with_prefix("distributary");
    let metrics = Arc::new(CompactionMetrics::registered(&mut registry));
    tokio::spawn(crate::metrics::serve_registry(listener, Arc::new(registry), async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    }));
    Ok(metrics)
}

/// One compaction pass over `store`, transient failures retried within
/// `bound`. Returns whether the store holds a manifest (nothing to compact
/// otherwise).
pub async fn once(store: &dyn store::Store, config: &CompactConfig, bound: RetryBound) -> Result<bool> {
    // A pass stopped part way is safe to run again: every step is
    // idempotent (invariant 3), and the next one picks up the rest.
    let report = retry_bounded(bound, "compaction", CompactError::class, || compact(store, config, &SystemClock))
        .await
        .with_context(|| format!("compact {}", store.url()))?;
    Ok(!report.no_manifest)
}

/// Compacts `store` every `interval` until `stop` turns true: the loop of
/// `distributary compact --watch`, and of `replicate` with `compaction:
/// local`. A failed pass is retried at the next tick (the store may be down
/// for a while, and every pass picks up where the last one stopped); a
/// store that refuses the compactor outright ends the loop with the error.
/// [`watch`] in a task of its own: a store that refuses the compactor
/// outright stops compaction, not replication (the log says so once, and
/// the segments wait for a compactor).
pub fn spawn_watch(
    store: std::sync::Arc<dyn store::Store>,
    config: CompactConfig,
    interval: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<CompactionMetrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = watch(store.as_ref(), &config, interval, stop, Some(&metrics)).await {
            tracing::error!(error = format!("{error:#}"), "local compaction stopped; replication goes on");
        }
    })
}

/// The memories of this process's watching compactors, by store URL, so
/// that the replicator can hand a compactor of the same process
/// (`compaction: local`) each L0 segment it uploads ([`local_memory`]).
static WATCHING: LazyLock<Mutex<HashMap<String, Arc<CompactMemory>>>> = LazyLock::new(Mutex::default);

/// The memory of the compactor watching `store_url` in this process, if
/// one is: what the replicator uploads there, it remembers
/// ([`CompactMemory::remember_upload`]) and then reads without a request.
pub fn local_memory(store_url: &str) -> Option<Arc<CompactMemory>> {
    lock_watching().get(store_url).cloned()
}

fn lock_watching() -> std::sync::MutexGuard<'static, HashMap<String, Arc<CompactMemory>>> {
    WATCHING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers a watching compactor's memory for as long as it lives.
struct Watching(String);

impl Watching {
    fn register(store_url: &str) -> (Watching, Arc<CompactMemory>) {
        let memory = Arc::new(CompactMemory::new());
        lock_watching().insert(store_url.to_string(), memory.clone());
        (Watching(store_url.to_string()), memory)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        lock_watching().remove(&self.0);
    }
}

/// A failed pass or a quiet one is recorded in `metrics` too; after a pass
/// that ran, the manifest is read once more for the metrics' newest commit
/// and backlog (the report does not carry them).
pub async fn watch(
    store: &dyn store::Store,
    config: &CompactConfig,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    metrics: Option<&CompactionMetrics>,
) -> Result<()> {
    // One memory for every pass: headers read once are not requested again,
    // and a pass with nothing due costs at most one request.
    let (_registered, memory) = Watching::register(store.url());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return Ok(()),
        }
        let result = compact_watching(store, config, &SystemClock, memory.as_ref()).await;
        if let Some(metrics) = metrics {
            record_pass(store, metrics, result.as_ref().ok());
        }
        match result {
            Ok(_) => {}
            Err(error) if error.class() == ErrorClass::Permanent => {
                return Err(error).with_context(|| format!("compact {}", store.url()));
            }
            Err(error) => {
                tracing::error!(store = %store.url(), error = format!("{error:#}"), "compaction failed; retrying at the next interval");
            }
        }
        if *stop.borrow() {
            return Ok(());
        }
    }
}

/// Records one pass of [`watch`]: `report` is `None` for a failed pass,
/// `Some(None)` for a quiet one (nothing was due). The lag and backlog come
/// from the manifest the pass left, which its report carries: no request
/// of their own.
fn record_pass(store: &dyn store::Store, metrics: &CompactionMetrics, report: Option<&Option<CompactReport>>) {
    let Some(report) = report else {
        metrics.record_pass(store.url(), None);
        return;
    };
    let mut outcome = PassOutcome::default();
    if let Some(report) = report {
        outcome.l1_written = report.l1_created;
        outcome.snapshots_written = report.snapshots_created;
        outcome.deleted = report.l0_deleted + report.l1_deleted + report.snapshots_deleted;
        // `l0_min_txid` is the first TXID not in L1.
        outcome.manifest = report.manifest.as_ref().map(|manifest| {
            (manifest.newest.timestamp_ms, (manifest.newest.txid.0 + 1).saturating_sub(manifest.l0_min_txid.0))
        });
    }
    metrics.record_pass(store.url(), Some(outcome));
}
