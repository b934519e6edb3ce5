//! `distributary replicate`: runs capture and upload for every configured
//! database until told to stop (or once, with `--once`), optionally
//! supervising the app itself (`--exec`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use distributary_core::format::EncryptionKey;
use distributary_core::retry::RetryBound;
use distributary_core::store;
use tokio::sync::watch;

use crate::config::{self, Config, DbConfig, ReplicaConfig};
use crate::metrics::Metrics;
use crate::replicator::open::Opening;
use crate::replicator::{CheckpointPolicy, OnPermanentFailure, ReplicaSpec, Replicator};

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
    /// Captured segments a store may hold in memory (e.g. 8MiB) before they
    /// are spilled to the metadata folder: a store that is down, or slower
    /// than the others, costs disk instead of memory past this.
    #[arg(long, default_value = "8MiB")]
    pub spill_size: String,
    /// With --once: how long to keep retrying a store that fails
    /// transiently (5xx, throttling, timeouts) before exiting with status 1.
    /// Permanent failures (access denied, read-only store, no such bucket)
    /// stop at once; without --once transient ones are retried forever.
    #[arg(long, default_value = "2m", value_parser = distributary_core::compact::parse_duration)]
    pub retry_for: Duration,
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
    let spill_bytes = config::parse_size(&args.spill_size).context("--spill-size")?;
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
        let (_tx, shutdown) = watch::channel(false);
        let opening =
            Opening { shutdown, wait_for_db: false, bound: Some(RetryBound { give_up_after: args.retry_for }) };
        for (path, replicas, policy) in databases {
            // Two passes that find nothing are all the quiet `--once` waits for.
            let policy = CheckpointPolicy { truncate_after_quiet: Duration::ZERO, ..policy };
            let mut replicator = Replicator::open(&path, &replicas, policy, metrics.clone(), &opening).await?;
            replicator.set_spill_bytes(spill_bytes);
            for (url, txid) in replicator.sync_once(opening.bound.expect("set above")).await? {
                println!("{} -> {url}: TXID {}", path.display(), txid.0);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    let mut running = Vec::new();
    let supervising = args.exec.is_some();
    // A store that fails permanently stops the replicator (exit 1), unless
    // it supervises the app: the app is never stopped for a store's sake.
    let on_permanent = if supervising { OnPermanentFailure::Retry } else { OnPermanentFailure::Stop };
    for (path, replicas, policy) in databases {
        let (stop, shutdown) = (shutdown_tx.clone(), shutdown.clone());
        let stop_all = move |result: Result<()>| {
            if result.is_err() && on_permanent == OnPermanentFailure::Stop {
                let _ = stop.send(true);
            }
            result
        };
        if supervising && !path.exists() {
            // The app creates it: replication starts once it appears (its
            // first capture covers whatever the app wrote before that).
            let opening = Opening { shutdown: shutdown.clone(), wait_for_db: true, bound: None };
            let metrics = metrics.clone();
            running.push(tokio::spawn(async move {
                let mut replicator = Replicator::open(&path, &replicas, policy, metrics, &opening).await?;
                replicator.set_spill_bytes(spill_bytes);
                replicator.run(shutdown, on_permanent).await
            }));
            continue;
        }
        // A database that cannot start stops the replicator before the app
        // is started.
        let opening = Opening { shutdown: shutdown.clone(), wait_for_db: false, bound: None };
        let mut replicator = Replicator::open(&path, &replicas, policy, metrics.clone(), &opening).await?;
        replicator.set_spill_bytes(spill_bytes);
        running.push(tokio::spawn(async move { stop_all(replicator.run(shutdown, on_permanent).await) }));
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
