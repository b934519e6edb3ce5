//! `edge-reader serve --source URL --db PATH`: keeps the replica in sync in
//! the background and answers read-only SQL over HTTP (`docs/API.md`).
//!
//! | module | concept |
//! |---|---|
//! | [`follower`] | the sync loop: cheap idle polls, `sync` when something changed, the published TXID |
//! | [`pool`] | read-only connections, statement cache, per-query deadline and limits |
//! | [`api`] | request and response bodies, errors and their status codes |
//! | [`server`] | the hyper server: routes, token, bookmark waits, graceful shutdown |
//! | [`metrics`] | Prometheus metrics and the store-request counter |

mod api;
mod follower;
mod metrics;
mod pool;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use distributary_core::apply::SyncOptions;
use distributary_core::plan::HistoryPoint;
use distributary_core::replica;
use distributary_core::store::Store;
use tokio::net::TcpListener;

use self::follower::{Follower, FollowerConfig};
use self::metrics::{MeteredStore, Metrics};
use self::pool::{Limits, Pool, PoolConfig};
use self::server::App;
use crate::source::ReplicaArgs;

/// Arguments of `edge-reader serve`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    replica: ReplicaArgs,
    /// Address to listen on. Loopback by default: expose it deliberately,
    /// and with --token-file.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Time between polls of the store (e.g. 500ms, 1s, 1m).
    #[arg(long, default_value = "1s", value_parser = distributary_core::duration::parse_duration)]
    poll: Duration,
    /// Longest time between two reads of the manifest while the probe for
    /// the next segment finds nothing: how soon a new generation is seen.
    /// An idle poll costs one request, plus one conditional read of the
    /// manifest per interval (0: every poll).
    #[arg(long, default_value = "30s", value_parser = distributary_core::duration::parse_duration)]
    manifest_interval: Duration,
    /// /healthz reports unhealthy once the replica has not been confirmed up
    /// to date for this long.
    #[arg(long, default_value = "60s", value_parser = distributary_core::duration::parse_duration)]
    max_staleness: Duration,
    /// Stop a query that runs longer than this.
    #[arg(long, default_value = "5s", value_parser = distributary_core::duration::parse_duration)]
    query_timeout: Duration,
    /// Refuse results with more rows than this.
    #[arg(long, default_value_t = 10_000)]
    max_rows: usize,
    /// Refuse results whose values add up to more bytes than this.
    #[arg(long, default_value_t = 16 << 20)]
    max_bytes: usize,
    /// Refuse request bodies larger than this many bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Longest wait for a bookmark (min_txid), and the default one.
    #[arg(long, default_value = "10s", value_parser = distributary_core::duration::parse_duration)]
    max_wait: Duration,
    /// Require `Authorization: Bearer <token>` with the token in this file
    /// (surrounding whitespace ignored) on every route but /healthz.
    #[arg(long, env = "EDGE_READER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Read connections (queries at once); default: twice the CPUs.
    #[arg(long)]
    readers: Option<usize>,
    /// On shutdown, wait this long for requests in flight.
    #[arg(long, default_value = "30s", value_parser = distributary_core::duration::parse_duration)]
    drain_timeout: Duration,
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<()> {
    let key = args.replica.key()?;
    let ReplicaArgs { source, db, concurrency, force, .. } = &args.replica;
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("read the token file {}", path.display()))?;
            let token = text.trim_ascii().to_vec();
            if token.len() < 16 {
                bail!("the token in {} is shorter than 16 bytes: use a long random one", path.display());
            }
            Some(token)
        }
        None => None,
    };
    if !args.listen.ip().is_loopback() && token.is_none() {
        tracing::warn!(listen = %args.listen, "serving beyond loopback without --token-file: anyone who can reach it can query");
    }
    // The store first: a URL this build cannot read leaves no lock file.
    let store = crate::source::open(source).await?;
    // serve owns the replica: no other sync may write it while queries read
    // the TXID this process publishes.
    let _lock = replica::lock(db, false).with_context(|| format!("serve {}", db.display()))?;

    let metrics = Arc::new(Metrics::default());
    // Refuse a database that is not this store's replica before serving it
    // (and before the first sync would): queries would read someone else's
    // data, and the sync would overwrite it.
    crate::sync::admit(store.as_ref(), source, db, *force).await.with_context(|| format!("serve {}", db.display()))?;
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, Arc::clone(&metrics)));
    let sync = SyncOptions {
        target: HistoryPoint::Newest,
        key,
        concurrency: *concurrency,
        parts: crate::sync::DEFAULT_PARTS,
        ..SyncOptions::default()
    };
    let follower = Arc::new(Follower::new(
        store,
        FollowerConfig {
            db: db.clone(),
            source: source.clone(),
            sync,
            poll: args.poll,
            max_staleness: args.max_staleness,
            manifest_interval: args.manifest_interval,
        },
        Arc::clone(&metrics),
    )?);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let size = args.readers.unwrap_or(cpus * 2).clamp(1, 256);
    let pool = Pool::new(
        PoolConfig {
            db: db.clone(),
            size,
            statement_cache: 128,
            max_sql_length: args.max_body,
            limits: Limits { timeout: args.query_timeout, max_rows: args.max_rows, max_bytes: args.max_bytes },
        },
        follower.subscribe(),
    );
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr().context("read the listening address")?;
    eprintln!("edge-reader: serving {} on http://{addr} ({size} read connections)", db.display());

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sync_loop = {
        let follower = Arc::clone(&follower);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            follower
                .run(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        })
    };
    let app = Arc::new(App { follower, pool, metrics, token, max_body: args.max_body, max_wait: args.max_wait });
    server::run(listener, app, shutdown_signal(), args.drain_timeout).await;
    let _ = stop.send(true);
    // A sync in progress finishes (it is bounded by the store's timeouts);
    // one that hangs is abandoned: the sidecar's pending mark makes the next
    // start safe either way.
    if tokio::time::timeout(Duration::from_secs(30), sync_loop).await.is_err() {
        tracing::warn!("the sync in progress did not finish within 30 s; exiting anyway");
    }
    eprintln!("edge-reader: stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::{Cli, Command};

    /// `--poll` reads durations as every other flag and configuration key
    /// does: the same inputs are taken or refused alike, with core's reason.
    #[test]
    fn poll_takes_the_one_duration_grammar() {
        // `--flag=value`: clap takes `-1s` after a space for a flag.
        distributary_core::duration::assert_reads_as_core("--poll", |text| {
            let argv = ["edge-reader", "serve", "--source", "file:///s", "--db", "r.db", &format!("--poll={text}")];
            match Cli::try_parse_from(argv) {
                Ok(Cli { command: Command::Serve(args) }) => Ok(args.poll),
                Ok(_) => unreachable!("the arguments name serve"),
                Err(e) => Err(e.to_string()),
            }
        });
    }
}
