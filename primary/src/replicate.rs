//! `distributary replicate`: runs capture and upload for every configured
//! database until told to stop (or once, with `--once`), optionally
//! supervising the app itself (`--exec`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use distributary_core::format::{Compression, EncryptionKey};
use distributary_core::retry::RetryBound;
use distributary_core::store;
use tokio::sync::{mpsc, watch};

use crate::config::{self, CompactionMode, Config, DbConfig, DbFolder, ReplicaConfig};
use crate::folder::FolderWatch;
use crate::metrics::Metrics;
use crate::replicator::fleet::{Change, Fleet};
use crate::replicator::open::Opening;
use crate::replicator::{CheckpointPolicy, OnPermanentFailure, ReplicaSpec, Replicator};

/// Arguments of `distributary replicate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The database to replicate (give STORE_URL too), unless --config is used.
    pub db_path: Option<PathBuf>,
    /// Where to replicate it: file:///path, s3://bucket/prefix?region=...
    pub store_url: Option<String>,
    /// A YAML config file with several databases and stores (ours, or a
    /// Litestream 0.3 or 0.5 `litestream.yml` as it is).
    #[arg(long, short = 'c', conflicts_with_all = ["db_path", "store_url", "dir"])]
    pub config: Option<PathBuf>,
    /// Replicate every database in this folder whose name matches
    /// --pattern, each to its own prefix of STORE_URL (its path below the
    /// folder); databases created later are picked up within one sync
    /// interval, removed ones are stopped. `replicate --dir DIR STORE_URL`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// With --dir: which file names are databases (`*`, `?`, `[a-z]`).
    #[arg(long, default_value = "*.db", requires = "dir")]
    pub pattern: String,
    /// With --dir: scan its subfolders too.
    #[arg(long, requires = "dir")]
    pub recursive: bool,
    /// How often to upload what was committed (100ms at least).
    #[arg(long, default_value = "1s")]
    pub sync_interval: String,
    /// Seal every page with this 256-bit key (32 bytes, or hex/base64 text).
    #[arg(long)]
    pub encryption_key_file: Option<PathBuf>,
    /// Run the app as a child: replication starts first, signals go to the
    /// child, and on its exit the replicator flushes and exits with its status.
    /// Wins over the config file's `exec`.
    #[arg(long)]
    pub exec: Option<String>,
    /// Ship what is committed now, then exit.
    #[arg(long)]
    pub once: bool,
    /// `local`: run the compactor in this process for every store, on the
    /// same schedule and with the same code as `distributary compact
    /// --watch` (for stores with no Lambda: MinIO, R2, a local folder).
    /// `lambda` (the default): leave compaction to the Lambda. Wins over the
    /// config file's `compaction`.
    #[arg(long, value_parser = parse_compaction_mode)]
    pub compaction: Option<CompactionMode>,
    /// Serve Prometheus metrics on /metrics and replication status on /status.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Run a PASSIVE checkpoint once the WAL holds this many frames.
    #[arg(long)]
    pub checkpoint_frames: Option<u64>,
    /// How pages are compressed: `lz4` (the default: fastest to restore),
    /// `zstd` or `zstd:LEVEL` (10-25% fewer bytes stored). Readers take
    /// either, and a store may mix them. Wins over the config file's.
    #[arg(long, value_parser = Compression::parse)]
    pub compression: Option<Compression>,
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
    #[arg(long, default_value = "2m", value_parser = distributary_core::duration::parse_duration)]
    pub retry_for: Duration,
}

fn parse_compaction_mode(text: &str) -> Result<CompactionMode, String> {
    match text {
        "local" => Ok(CompactionMode::Local),
        "lambda" => Ok(CompactionMode::Lambda),
        other => Err(format!("{other:?} is not a compaction mode: give `local` or `lambda`")),
    }
}

fn config_from_args(args: &Args) -> Result<Config> {
    // `--dir DIR STORE_URL`: the one positional argument is the store.
    let (db_path, store_url) = match (&args.dir, &args.db_path, &args.store_url) {
        (Some(_), Some(url), None) => (args.dir.clone(), url.to_str().map(str::to_string)),
        (Some(_), Some(_), Some(_)) => {
            bail!("give --dir DIR STORE_URL (a folder of databases) or DB_PATH STORE_URL (one), not both")
        }
        (Some(_), None, _) => bail!("missing STORE_URL: `distributary replicate --dir DIR STORE_URL`"),
        (None, db_path, url) => (db_path.clone(), url.clone()),
    };
    let mut config = match (&args.config, &db_path, &store_url) {
        (Some(path), _, _) => Config::load(path)?,
        (None, Some(db_path), Some(url)) => {
            store::StoreUrl::parse(url)?;
            let interval = config::parse_duration(&args.sync_interval).context("--sync-interval")?;
            config::check_sync_interval(interval)?;
            let defaults = CheckpointPolicy::default();
            Config {
                dbs: vec![DbConfig {
                    path: db_path.clone(),
                    folder: args.dir.as_ref().map(|_| DbFolder {
                        pattern: args.pattern.clone(),
                        recursive: args.recursive,
                        watch: true,
                    }),
                    checkpoint_frames: defaults.passive_frames,
                    truncate_bytes: defaults.truncate_bytes,
                    replicas: vec![ReplicaConfig {
                        url: url.clone(),
                        sync_interval: interval,
                        encryption_key_file: args.encryption_key_file.clone(),
                        credentials: None,
                        compression: Compression::default(),
                    }],
                    compaction: Default::default(),
                }],
                ..Config::default()
            }
        }
        (None, Some(_), None) => bail!("missing STORE_URL: `distributary replicate DB_PATH STORE_URL`"),
        (None, None, _) => bail!("give DB_PATH and STORE_URL, or --config FILE"),
    };
    if args.metrics_addr.is_some() {
        config.metrics_addr = args.metrics_addr.clone();
    }
    if args.exec.is_some() {
        config.exec = args.exec.clone();
    }
    for db in &mut config.dbs {
        if let Some(frames) = args.checkpoint_frames {
            db.checkpoint_frames = frames;
        }
        if let Some(mode) = args.compaction {
            db.compaction.mode = mode;
        }
        if let Some(compression) = args.compression {
            db.replicas.iter_mut().for_each(|replica| replica.compression = compression);
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

/// The config file's `logging:` section, for `main` to set up logging with
/// before the command runs (flags and `DISTRIBUTARY_LOG` win over it). A
/// file that does not load gives the defaults: `run` reports why.
pub fn config_logging(args: &Args) -> config::Logging {
    args.config.as_deref().and_then(|path| Config::load(path).ok()).map(|config| config.logging).unwrap_or_default()
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let config = config_from_args(&args)?;
    // Keys accepted with no effect here, and where the compactor's settings
    // go: said once, before anything starts.
    for notice in &config.notices {
        tracing::info!("config: {notice}");
    }
    for instruction in config.lambda_instructions() {
        tracing::info!("{instruction}");
    }
    crate::limits::prepare_for(database_count(&config));
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
            let key = replica.encryption_key_file.as_deref().map(EncryptionKey::from_file).transpose()?;
            let store = replica.open_store().await?;
            replicas.push(ReplicaSpec {
                url: replica.url.clone(),
                store,
                sync_interval: replica.sync_interval,
                key,
                compression: replica.compression,
            });
        }
        let policy = CheckpointPolicy {
            passive_frames: db.checkpoint_frames,
            truncate_bytes: db.truncate_bytes,
            ..CheckpointPolicy::default()
        };
        // `compaction: local`: the compactor's settings and interval.
        let local = (db.compaction.mode == CompactionMode::Local).then(|| db.compaction.local_compactor());
        databases.push(Database { path: db.path.clone(), folder: db.folder.clone(), replicas, policy, local });
    }

    if args.once {
        return sync_once(databases, &metrics, spill_bytes, RetryBound { give_up_after: args.retry_for }).await;
    }

    let supervising = config.exec.is_some();
    // A store that fails permanently stops the replicator (exit 1), unless
    // it supervises the app: the app is never stopped for a store's sake.
    let on_permanent = if supervising { OnPermanentFailure::Retry } else { OnPermanentFailure::Stop };
    let mut fleet = Fleet::new(on_permanent);
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let mut compactors = Vec::new();
    let mut watchers = Vec::new();
    for Database { path, folder, replicas, policy, local } in databases {
        if let Some((compact_config, interval)) = &local
            && folder.is_none()
        {
            for replica in &replicas {
                let (config, stop) = (compact_config.clone(), shutdown.clone());
                compactors.push(spawn_local_compactor(replica, config, *interval, stop, metrics.compaction()));
            }
        }
        if let Some(folder) = folder {
            let watch = FolderWatch {
                dir: path,
                pattern: folder.pattern,
                recursive: folder.recursive,
                watch: folder.watch,
                interval: replicas.iter().map(|r| r.sync_interval).min().unwrap_or(config::DEFAULT_SYNC_INTERVAL),
                replicas,
                policy,
                spill_bytes,
                local,
            };
            let (metrics, shutdown, changes) = (metrics.clone(), shutdown.clone(), changes_tx.clone());
            watchers.push(tokio::spawn(crate::folder::watch(watch, metrics, shutdown, changes)));
            continue;
        }
        if supervising && !path.exists() {
            // The app creates it: replication starts once it appears (its
            // first capture covers whatever the app wrote before that).
            let opening = Opening { shutdown: shutdown.clone(), wait_for_db: true, bound: None };
            let (metrics, changes) = (metrics.clone(), changes_tx.clone());
            watchers.push(tokio::spawn(async move {
                let mut replicator = Replicator::open(&path, &replicas, policy, metrics, &opening).await?;
                replicator.set_spill_bytes(spill_bytes);
                let _ = changes.send(Change::Add(Box::new(replicator)));
                Ok(())
            }));
            continue;
        }
        // A database that cannot start stops the replicator before the app
        // is started.
        let opening = Opening { shutdown: shutdown.clone(), wait_for_db: false, bound: None };
        let mut replicator = Replicator::open(&path, &replicas, policy, metrics.clone(), &opening).await?;
        replicator.set_spill_bytes(spill_bytes);
        fleet.add(replicator);
    }
    drop(changes_tx);
    // Every database is stepped by this one task; a database whose store
    // refuses it for good stops them all (`on_permanent`).
    let stop = shutdown_tx.clone();
    let running = tokio::spawn(fleet.run(shutdown.clone(), Some(changes)));
    let fleet_done = async move {
        let result = running.await.context("replication task")?;
        if result.is_err() {
            let _ = stop.send(true);
        }
        result
    };
    let fleet_done = tokio::spawn(fleet_done);

    let child_status = match &config.exec {
        Some(command) => Some(supervise(command).await?),
        None => {
            let stop = crate::signals::stop_requested_from_now();
            tracing::info!(databases = config.dbs.len(), "replicating; SIGTERM or SIGINT flushes and stops");
            wait_for_stop(stop, shutdown_tx.clone(), shutdown.clone()).await;
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
    for handle in watchers {
        if let Err(e) = handle.await.context("folder watcher")? {
            eprintln!("distributary: {e:#}");
            failed = true;
        }
    }
    if let Err(e) = fleet_done.await.context("replication task")? {
        eprintln!("distributary: {e:#}");
        failed = true;
    }
    // A compaction pass in progress finishes (a pass stopped half way is
    // safe, but wastes its work); a second signal exits at once.
    for handle in compactors {
        handle.await.context("compaction task")?;
    }
    match child_status {
        Some(code) => Ok(ExitCode::from(code)),
        None if failed => Ok(ExitCode::FAILURE),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// A configured database (or folder of them), its stores opened.
struct Database {
    path: PathBuf,
    folder: Option<DbFolder>,
    replicas: Vec<ReplicaSpec>,
    policy: CheckpointPolicy,
    local: Option<(distributary_core::compact::CompactConfig, Duration)>,
}

/// How many databases the configuration names now (a folder's as its scan
/// finds them), for the open-files limit.
fn database_count(config: &Config) -> usize {
    config
        .dbs
        .iter()
        .map(|db| match &db.folder {
            Some(folder) => crate::folder::scan(&db.path, &folder.pattern, folder.recursive).map_or(0, |f| f.len()),
            None => 1,
        })
        .sum()
}

/// `--once`: ships what each database (and each database of each folder)
/// has committed now, then (with local compaction) one compaction pass.
async fn sync_once(
    databases: Vec<Database>,
    metrics: &Arc<Metrics>,
    spill_bytes: u64,
    bound: RetryBound,
) -> Result<ExitCode> {
    let (_tx, shutdown) = watch::channel(false);
    let opening = Opening { shutdown, wait_for_db: false, bound: Some(bound) };
    for Database { path, folder, replicas, policy, local } in databases {
        // Two passes that find nothing are all the quiet `--once` waits for.
        let policy = CheckpointPolicy { truncate_after_quiet: Duration::ZERO, ..policy };
        let each: Vec<(PathBuf, Vec<ReplicaSpec>)> = match &folder {
            Some(folder) => crate::folder::scan(&path, &folder.pattern, folder.recursive)?
                .into_iter()
                .map(|db| crate::folder::replicas_of(&path, &db, &replicas).map(|r| (db, r)))
                .collect::<Result<_>>()?,
            None => vec![(path.clone(), replicas.clone())],
        };
        for (path, replicas) in each {
            let mut replicator = Replicator::open(&path, &replicas, policy, metrics.clone(), &opening).await?;
            replicator.set_spill_bytes(spill_bytes);
            for (url, txid) in replicator.sync_once(bound).await? {
                println!("{} -> {url}: TXID {}", path.display(), txid.0);
            }
            // With local compaction, one pass over what was just shipped.
            if let Some((compact_config, _)) = &local {
                for replica in &replicas {
                    crate::compact::once(replica.store.as_ref(), compact_config, bound).await?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `compaction: local`: compacts `replica`'s store every `interval` in
/// this process until `shutdown`, as `distributary compact --watch` would.
/// A store that refuses the compactor outright stops compaction, not
/// replication: the log says so once, and the segments wait for a
/// compactor.
fn spawn_local_compactor(
    replica: &ReplicaSpec,
    config: distributary_core::compact::CompactConfig,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<crate::metrics::CompactionMetrics>,
) -> tokio::task::JoinHandle<()> {
    let store = replica.store.clone();
    tracing::info!(
        store = %replica.url,
        every = ?interval,
        l1_window = ?config.l1_window,
        snapshot_interval = ?config.snapshot_interval,
        snapshot_retention = ?config.snapshot_retention,
        l0_retention = ?config.l0_retention,
        "compacting in this process (compaction: local)"
    );
    crate::compact::spawn_watch(store, config, interval, shutdown, metrics)
}

/// Waits for SIGINT/SIGTERM, or for a task to stop the replicator.
async fn wait_for_stop(
    signal: impl std::future::Future<Output = ()>,
    shutdown_tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = signal => {
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
