//! `distributary replicate`: runs capture and upload for every configured
//! database until told to stop (or once, with `--once`), optionally
//! supervising the app itself (`--exec`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use distributary_core::format::{Compression, EncryptionKey, KeyCheck};
use distributary_core::retry::{ErrorClass, RetryBound, backoff, classify, retry_bounded};
use distributary_core::{TxId, store};
use tokio::sync::watch;

use crate::config::{self, Config, DbConfig, ReplicaConfig};
use crate::generation::plan_start;
use crate::metrics::Metrics;
use crate::replicator::{Capturer, CheckpointPolicy, ReplicaSpec, Start, inspect};
use crate::resume;
use crate::shipper::Shipper;
use crate::state::{ReplicaState, StateDir};

/// How often the capture thread looks at the database between captures: a
/// commit after a quiet period is captured (and shipped) within one tick,
/// and a WAL that reached the checkpoint threshold gets its checkpoint
/// window within one tick (an app that commits continuously fills
/// SQLite's 1,000 frames in tens of milliseconds, and each frame past them
/// costs its commits more). A tick is two small reads.
const SHORT_TICK: Duration = Duration::from_millis(20);

/// Arguments of `distributary replicate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The database to replicate (give STORE_URL too), unless --config is used.
    pub db_path: Option<PathBuf>,
    /// Where to replicate it: file:///path, s3://bucket/prefix?region=...
    pub store_url: Option<String>,
    /// A YAML config file with several databases and stores (Litestream-style keys).
    #[arg(long, short = 'c', conflicts_with_all = ["db_path", "store_url"])]
    pub config: Option<PathBuf>,
    /// How often to upload what was committed (100ms at least).
    #[arg(long, default_value = "1s")]
    pub sync_interval: String,
    /// Seal every page with this 256-bit key (32 bytes, or hex/base64 text).
    #[arg(long)]
    pub encryption_key_file: Option<PathBuf>,
    /// Run the app as a child: replication starts first, signals go to the
    /// child, and on its exit the replicator flushes and exits with its status.
    #[arg(long)]
    pub exec: Option<String>,
    /// Ship what is committed now, then exit.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics on /metrics and replication status on /status.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Run a PASSIVE checkpoint once the WAL holds this many frames.
    #[arg(long)]
    pub checkpoint_frames: Option<u64>,
    /// Run a TRUNCATE checkpoint once the WAL is larger than this (e.g. 64MiB).
    #[arg(long)]
    pub truncate_size: Option<String>,
    /// With --once: how long to keep retrying a store that fails
    /// transiently (5xx, throttling, timeouts) before exiting with status 1.
    /// Permanent failures (access denied, read-only store, no such bucket)
    /// stop at once; without --once transient ones are retried forever.
    #[arg(long, default_value = "2m", value_parser = distributary_core::compact::parse_duration)]
    pub retry_for: Duration,
}

/// The class of a failure, from its whole cause chain.
fn class_of(error: &anyhow::Error) -> ErrorClass {
    classify(error.as_ref())
}

fn config_from_args(args: &Args) -> Result<Config> {
    let mut config = match (&args.config, &args.db_path, &args.store_url) {
        (Some(path), _, _) => Config::load(path)?,
        (None, Some(db_path), Some(url)) => {
            store::StoreUrl::parse(url)?;
            let interval = config::parse_duration(&args.sync_interval).context("--sync-interval")?;
            config::check_sync_interval(interval)?;
            let defaults = CheckpointPolicy::default();
            Config {
                metrics_addr: None,
                dbs: vec![DbConfig {
                    path: db_path.clone(),
                    checkpoint_frames: defaults.passive_frames,
                    truncate_bytes: defaults.truncate_bytes,
                    replicas: vec![ReplicaConfig {
                        url: url.clone(),
                        sync_interval: interval,
                        encryption_key_file: args.encryption_key_file.clone(),
                    }],
                }],
            }
        }
        (None, Some(_), None) => bail!("missing STORE_URL: `distributary replicate DB_PATH STORE_URL`"),
        (None, None, _) => bail!("give DB_PATH and STORE_URL, or --config FILE"),
    };
    if args.metrics_addr.is_some() {
        config.metrics_addr = args.metrics_addr.clone();
    }
    for db in &mut config.dbs {
        if let Some(frames) = args.checkpoint_frames {
            db.checkpoint_frames = frames;
        }
        if let Some(size) = &args.truncate_size {
            db.truncate_bytes = config::parse_size(size).context("--truncate-size")?;
        }
        db.path = absolute(&db.path)?;
    }
    Ok(config)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir().context("read the current folder")?.join(path))
}

fn read_key(path: &Path) -> Result<EncryptionKey> {
    let bytes = std::fs::read(path).with_context(|| format!("read encryption key file {}", path.display()))?;
    EncryptionKey::parse(&bytes).with_context(|| format!("encryption key file {}", path.display()))
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let config = config_from_args(&args)?;
    let metrics = Arc::new(Metrics::default());
    let (shutdown_tx, shutdown) = watch::channel(false);

    if let Some(addr) = &config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listen on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /status");
        let mut stop = shutdown.clone();
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }

    let mut databases = Vec::new();
    for db in &config.dbs {
        let mut replicas = Vec::new();
        for replica in &db.replicas {
            let key = replica.encryption_key_file.as_deref().map(read_key).transpose()?;
            let store = store::open(&replica.url).await?;
            replicas.push(ReplicaSpec { url: replica.url.clone(), store, sync_interval: replica.sync_interval, key });
        }
        let policy = CheckpointPolicy {
            passive_frames: db.checkpoint_frames,
            truncate_bytes: db.truncate_bytes,
            ..CheckpointPolicy::default()
        };
        databases.push((db.path.clone(), replicas, policy));
    }

    if args.once {
        let bound = RetryBound { give_up_after: args.retry_for };
        for (path, replicas, policy) in databases {
            replicate_once(&path, &replicas, policy, metrics.clone(), bound).await?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let mut running = Vec::new();
    let supervising = args.exec.is_some();
    // A store that fails permanently stops the replicator (exit 1), unless
    // it supervises the app: the app is never stopped for a store's sake.
    let stop_on_permanent = (!supervising).then(|| shutdown_tx.clone());
    for (path, replicas, policy) in databases {
        let run = Running { metrics: metrics.clone(), shutdown: shutdown.clone(), stop: stop_on_permanent.clone() };
        if supervising && !path.exists() {
            // The app creates it: replication starts once it appears (its
            // first capture covers whatever the app wrote before that).
            running.push(tokio::spawn(async move { start_database(path, replicas, policy, run, true).await?.await? }));
            continue;
        }
        running.push(start_database(path, replicas, policy, run, false).await?);
    }

    let child_status = match &args.exec {
        Some(command) => Some(supervise(command).await?),
        None => {
            wait_for_stop(shutdown_tx.clone(), shutdown.clone()).await;
            None
        }
    };
    let _ = shutdown_tx.send(true);
    // A second signal while flushing exits at once.
    tokio::spawn(async {
        crate::signals::stop_requested().await;
        eprintln!("distributary: second signal, exiting without flushing");
        std::process::exit(130);
    });
    let mut failed = false;
    for handle in running {
        if let Err(e) = handle.await.context("replication task")? {
            eprintln!("distributary: {e:#}");
            failed = true;
        }
    }
    match child_status {
        Some(code) => Ok(ExitCode::from(code)),
        None if failed => Ok(ExitCode::FAILURE),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Waits for SIGINT/SIGTERM, or for a task to stop the replicator.
async fn wait_for_stop(shutdown_tx: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
    tokio::select! {
        _ = crate::signals::stop_requested() => {
            tracing::info!("stopping: flushing the last commits (signal again to exit at once)");
        }
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    let _ = shutdown_tx.send(true);
}

/// What every database's tasks share.
struct Running {
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    /// Set: a permanent store failure stops the replicator through it.
    stop: Option<watch::Sender<bool>>,
}

/// Runs the app and forwards SIGINT/SIGTERM to it; returns its exit status.
async fn supervise(command: &str) -> Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .spawn()
        .with_context(|| format!("start the app: sh -c {command:?}"))?;
    let pid = child.id().context("the app exited before it could be supervised")? as libc::pid_t;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = interrupt.recv() => forward(pid, libc::SIGINT),
            _ = terminate.recv() => forward(pid, libc::SIGTERM),
        }
    };
    tracing::info!(%status, "the app exited: flushing the last commits");
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        _ => 1,
    })
}

fn forward(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Decides how each store starts: resume from the metadata, or look at the
/// store. A permanent failure is returned at once; transient ones are
/// retried until `bound` (one-shot) or forever (daemons, until shutdown).
async fn plan_starts(
    path: &Path,
    replicas: &[ReplicaSpec],
    shutdown: &watch::Receiver<bool>,
    wait_for_db: bool,
    bound: Option<RetryBound>,
) -> Result<Vec<Start>> {
    let inspection = loop {
        let inspect_path = path.to_path_buf();
        match tokio::task::spawn_blocking(move || inspect(&inspect_path)).await? {
            Ok(inspection) => break inspection,
            Err(e) if wait_for_db && !path.exists() => {
                tracing::info!(db = %path.display(), "waiting for the app to create the database");
                if *shutdown.borrow() {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let mut starts = Vec::with_capacity(replicas.len());
    for replica in replicas {
        let key_check = replica.key.as_ref().map_or(KeyCheck::NONE, EncryptionKey::check);
        let store = replica.store.as_ref();
        if let Some(known) = inspection.resumable.iter().find(|r| r.url == replica.url) {
            if known.key_check == Some(key_check) {
                let check = resume_problem(path, replica, known, inspection.other_boot, shutdown, bound);
                match check.await? {
                    None => {
                        starts.push(Start::Resume);
                        continue;
                    }
                    Some(problem) => tracing::warn!(
                        store = %replica.url,
                        %problem,
                        "the metadata folder does not continue the store's chain (writes lost in a machine \
                         restart?): continuing from the store's newest TXID with a full catch-up"
                    ),
                }
            } else {
                // A generation never mixes keys (or keys and plaintext): the
                // store's manifest decides below, and a changed key starts a
                // new generation there.
                tracing::warn!(
                    store = %replica.url,
                    recorded = %known.key_check.map_or("unknown".to_string(), describe_key),
                    configured = %describe_key(key_check),
                    "the encryption key differs from the one this store was replicated with"
                );
            }
        }
        let plan = reach_store(&replica.url, shutdown, bound, || plan_start(store, inspection.page_size, key_check));
        starts.push(Start::Plan(plan.await?));
    }
    Ok(starts)
}

/// What keeps `known`, a store's progress in the metadata, from being
/// resumed as it stands (`None`: nothing). The pending files must continue
/// the store's chain whole; after a machine restart (`other_boot`) the
/// store is asked how far its chain goes, and the recorded upload progress
/// moves up to it (see `crate::resume`).
async fn resume_problem(
    path: &Path,
    replica: &ReplicaSpec,
    known: &ReplicaState,
    other_boot: bool,
    shutdown: &watch::Receiver<bool>,
    bound: Option<RetryBound>,
) -> Result<Option<String>> {
    let mut after = known.shipped_txid;
    // Folders written before the genesis upload was recorded say nothing
    // was uploaded even when the store holds the generation: ask it.
    if other_boot || known.shipped_txid == TxId::ZERO {
        let store = replica.store.as_ref();
        let newest = reach_store(&replica.url, shutdown, bound, || {
            resume::store_newest(store, known.generation, known.shipped_txid)
        })
        .await?;
        after = match newest {
            None if known.shipped_txid > TxId::ZERO => {
                return Ok(Some(format!("the store holds no manifest of generation {}", known.generation)));
            }
            None => TxId::ZERO,
            Some(newest) if newest < known.shipped_txid => {
                return Ok(Some(format!(
                    "the store's chain ends at TXID {newest}, before the {} recorded as uploaded",
                    known.shipped_txid
                )));
            }
            Some(newest) if newest > known.captured_txid => {
                return Ok(Some(format!(
                    "the store holds TXIDs up to {newest}, past the {} recorded as captured",
                    known.captured_txid
                )));
            }
            Some(newest) => newest,
        };
    }
    let (path, url, captured, known_shipped) =
        (path.to_path_buf(), replica.url.clone(), known.captured_txid, known.shipped_txid);
    tokio::task::spawn_blocking(move || -> Result<Option<String>> {
        let state = StateDir::open(&path)?;
        if let Some(gap) = resume::pending_gap(&state.pending_dir(&url), after, captured, other_boot)? {
            return Ok(Some(gap));
        }
        if after > known_shipped {
            state.set_shipped(&url, after)?;
        }
        Ok(None)
    })
    .await?
}

/// Runs `op` against a store: a permanent failure is returned at once;
/// transient ones are retried until `bound` (one-shot) or forever
/// (daemons, until shutdown).
async fn reach_store<T, F, Fut>(
    url: &str,
    shutdown: &watch::Receiver<bool>,
    bound: Option<RetryBound>,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if let Some(bound) = bound {
        return retry_bounded(bound, "reach the store", class_of, op).await;
    }
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if *shutdown.borrow() || class_of(&e) == ErrorClass::Permanent => return Err(e),
            Err(e) => {
                attempt += 1;
                tracing::warn!(store = %url, error = %format!("{e:#}"), "reach the store; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// A key check for a log line: "none" for plaintext.
fn describe_key(key_check: KeyCheck) -> String {
    if key_check == KeyCheck::NONE { "none".to_string() } else { format!("key {key_check}") }
}

async fn open_capturer(
    path: &Path,
    replicas: &[ReplicaSpec],
    policy: CheckpointPolicy,
    metrics: Arc<Metrics>,
    shutdown: &watch::Receiver<bool>,
    wait_for_db: bool,
    bound: Option<RetryBound>,
) -> Result<Capturer> {
    let starts = plan_starts(path, replicas, shutdown, wait_for_db, bound).await?;
    let (path, replicas) = (path.to_path_buf(), replicas.to_vec());
    tokio::task::spawn_blocking(move || {
        Capturer::start(&path, &replicas, &starts, policy, Compression::default(), metrics)
    })
    .await?
}

fn shippers(capturer: &Capturer, replicas: &[ReplicaSpec], metrics: &Arc<Metrics>) -> Vec<Shipper> {
    capturer
        .pending_dirs()
        .into_iter()
        .zip(replicas)
        .map(|(pending_dir, replica)| {
            let db_path = capturer.db_path().to_path_buf();
            Shipper::new(replica.store.clone(), pending_dir, metrics.clone(), db_path, replica.url.clone())
        })
        .collect()
}

/// `--once`: capture everything committed, upload it, return.
async fn replicate_once(
    path: &Path,
    replicas: &[ReplicaSpec],
    policy: CheckpointPolicy,
    metrics: Arc<Metrics>,
    bound: RetryBound,
) -> Result<()> {
    let (_tx, shutdown) = watch::channel(false);
    // Two passes that find nothing are all the quiet `--once` waits for.
    let policy = CheckpointPolicy { truncate_after_quiet: Duration::ZERO, ..policy };
    let capturer = open_capturer(path, replicas, policy, metrics.clone(), &shutdown, false, Some(bound)).await?;
    let capturer = tokio::task::spawn_blocking(move || -> Result<Capturer> {
        let mut capturer = capturer;
        capturer.capture_pass(|_| {})?;
        // A second pass finds nothing and marks the app quiet, so the
        // checkpoint policy (TRUNCATE past the size limit) applies.
        capturer.capture_pass(|_| {})?;
        capturer.maybe_checkpoint()?;
        Ok(capturer)
    })
    .await??;
    let db_label = path.display().to_string();
    for ((shipper, replica), captured) in
        shippers(&capturer, replicas, &metrics).into_iter().zip(replicas).zip(capturer.captured())
    {
        retry_bounded(bound, &format!("upload to {}", replica.url), class_of, || shipper.ship(captured)).await?;
        metrics.update_replica(&db_label, &replica.url, |s| s.shipped_txid = captured.0);
        println!("{} -> {}: TXID {}", path.display(), replica.url, captured.0);
    }
    Ok(())
}

/// Sends the captured TXIDs to the shippers if they moved.
fn publish(captured_tx: &watch::Sender<Vec<distributary_core::TxId>>, captured: Vec<distributary_core::TxId>) {
    captured_tx.send_if_modified(|current| {
        let moved = *current != captured;
        *current = captured;
        moved
    });
}

/// Starts capture (on its own thread) and one upload task per store;
/// returns a handle that finishes once everything captured before the
/// shutdown signal is uploaded.
async fn start_database(
    path: PathBuf,
    replicas: Vec<ReplicaSpec>,
    policy: CheckpointPolicy,
    run: Running,
    wait_for_db: bool,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let Running { metrics, shutdown, stop } = run;
    let capturer = open_capturer(&path, &replicas, policy, metrics.clone(), &shutdown, wait_for_db, None).await?;
    let shippers = shippers(&capturer, &replicas, &metrics);
    // Capture runs once per sync interval (the shortest of the stores'):
    // each capture writes a pending segment and commits the metadata, so
    // capturing more often than uploads only costs the app CPU and I/O. The
    // checkpoint policy runs after each capture. Between captures the thread
    // only looks for a new commit, so that a commit after a quiet period
    // ships at once instead of waiting for the interval.
    let interval = replicas.iter().map(|r| r.sync_interval).min().unwrap_or(config::DEFAULT_SYNC_INTERVAL);
    let (captured_tx, captured_rx) = watch::channel(capturer.captured());
    let (done_tx, done_rx) = watch::channel(false);
    let db_label = path.display().to_string();

    let capture_shutdown = shutdown.clone();
    let capture_label = db_label.clone();
    let capture_metrics = metrics.clone();
    let capture_thread = std::thread::Builder::new().name("capture".into()).spawn(move || -> Result<()> {
        let mut capturer = capturer;
        let mut failures = 0u32;
        let mut last_capture = std::time::Instant::now();
        let mut seen_requests = capture_metrics.pass_requests();
        capture_metrics.register_database(&capture_label);
        loop {
            let stopping = *capture_shutdown.borrow();
            let requests = capture_metrics.pass_requests();
            let result = (|| -> Result<bool> {
                // Due at the interval, at shutdown, or for a `/bookmark`.
                let due = stopping || last_capture.elapsed() >= interval || requests != seen_requests;
                // Or for the first commit after a quiet pass (ships at once).
                let woken = !due && capturer.is_quiet() && capturer.has_new_commits()?;
                if due || woken {
                    capturer.capture_pass(|c| publish(&captured_tx, c.captured()))?;
                }
                if !stopping {
                    // Looks at the WAL's size; a window captures first.
                    capturer.maybe_checkpoint()?;
                }
                Ok(due || woken)
            })();
            match result {
                Ok(captured) => {
                    failures = 0;
                    // A checkpoint window captures too.
                    publish(&captured_tx, capturer.captured());
                    if captured {
                        last_capture = std::time::Instant::now();
                        seen_requests = requests;
                        capture_metrics.record_capture_pass(&capture_label);
                    }
                }
                Err(e) => {
                    failures += 1;
                    capture_metrics.record_error();
                    tracing::error!(db = %capture_label, error = %format!("{e:#}"), "capture failed; retrying");
                    if stopping {
                        let _ = done_tx.send(true);
                        return Err(e);
                    }
                    std::thread::sleep(backoff(failures));
                    continue;
                }
            }
            if stopping {
                let _ = done_tx.send(true);
                return Ok(());
            }
            std::thread::sleep(SHORT_TICK.min(interval));
        }
    })?;

    let mut tasks = Vec::new();
    for (index, (shipper, replica)) in shippers.into_iter().zip(replicas).enumerate() {
        let (label, metrics, stop) = (db_label.clone(), metrics.clone(), stop.clone());
        let (mut captured_rx, mut done_rx) = (captured_rx.clone(), done_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut attempt = 0u32;
            let mut last_upload = tokio::time::Instant::now() - replica.sync_interval;
            loop {
                let finished = *done_rx.borrow_and_update();
                let captured = captured_rx.borrow_and_update()[index];
                // An unreadable pending file is reported by `ship`, with retries.
                if shipper.has_pending(captured).unwrap_or(true) {
                    match shipper.ship(captured).await {
                        Ok(shipped) => {
                            attempt = 0;
                            last_upload = tokio::time::Instant::now();
                            metrics.update_replica(&label, &replica.url, |s| {
                                s.shipped_txid = s.shipped_txid.max(shipped.max_txid.map_or(0, |t| t.0));
                                s.oldest_unshipped_ms = None;
                                s.last_error = None;
                            });
                        }
                        Err(e) if stop.is_some() && class_of(&e) == ErrorClass::Permanent => {
                            tracing::error!(store = %replica.url, error = %format!("{e:#}"), "the store refuses uploads: stopping");
                            if let Some(stop) = &stop {
                                let _ = stop.send(true);
                            }
                            return Err(e.context(format!("replicate to {}", replica.url)));
                        }
                        Err(e) => {
                            attempt += 1;
                            let message = format!("{e:#}");
                            tracing::warn!(store = %replica.url, error = %message, "upload failed; retrying");
                            metrics.update_replica(&label, &replica.url, |s| s.last_error = Some(message));
                            tokio::time::sleep(backoff(attempt)).await;
                            continue;
                        }
                    }
                } else if finished {
                    return Ok::<(), anyhow::Error>(());
                }
                if finished {
                    // Flushing: upload what is left without waiting.
                    continue;
                }
                // At most one upload per interval: wait out the interval
                // since the last upload, then for the next capture (after a
                // quiet period both are immediate).
                tokio::select! {
                    _ = tokio::time::sleep_until(last_upload + replica.sync_interval) => {}
                    _ = done_rx.changed() => continue,
                }
                tokio::select! {
                    _ = captured_rx.changed() => {}
                    _ = done_rx.changed() => {}
                }
            }
        }));
    }
    Ok(tokio::spawn(async move {
        let mut result = Ok(());
        for task in tasks {
            if let Err(e) = task.await? {
                result = Err(e);
            }
        }
        match tokio::task::spawn_blocking(move || capture_thread.join()).await? {
            Ok(Err(e)) => result = Err(e),
            Err(_) => bail!("the capture thread panicked"),
            Ok(Ok(())) => {}
        }
        result
    }))
}
