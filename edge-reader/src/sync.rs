//! `edge-reader sync --source URL --db PATH`: one catch-up, then exit.
//!
//! Bootstraps from a snapshot when the replica is missing (or empty),
//! follows another generation or is behind the retention floor; otherwise
//! applies what is new. Exit status 0 means the replica is up to date with
//! the store.
//!
//! A `--db` that is not this store's replica — a file that holds data and
//! has no sidecar, or one whose sidecar names another store — is refused
//! and left as it is; `--force` replaces it (see
//! [`distributary_core::apply::check_replica`]).

use std::sync::Arc;

use anyhow::{Context, Result};
use distributary_core::apply::{
    ApplyError, ProgressChoice, SyncOptions, check_replica, progress_printer, remove_replica, sync_replica,
};
use distributary_core::plan::{Base, HistoryPoint};
use distributary_core::replica::{self, ReplicaError};
use distributary_core::retry::{RetryBound, WrapsStoreError, retry_bounded};
use distributary_core::store::Store;

use crate::source::ReplicaArgs;

/// Ranged parts of a new replica's snapshot fetched at once, by default
/// (`sync --parts`; `serve`'s first sync). Parts beat one connection's rate
/// cap on S3, but every part is held whole: (parts + 2) × 4 MiB of memory.
/// The small device build reads one stream instead: its peak RSS bootstrapping
/// a 1 GB database over HTTP is 13 MB with one part against 31 MB with four,
/// and on a device the link, not one connection, is the limit (the four were
/// slower even on loopback: docs/BENCHMARKS.md, "A small reader for devices").
pub const DEFAULT_PARTS: usize = if cfg!(feature = "s3") { distributary_core::apply::DEFAULT_PARTS } else { 1 };

/// Arguments of `edge-reader sync`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    replica: ReplicaArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Exit at once if another sync of this replica is running, instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Writing a new file from a remote store: ranged parts of a snapshot
    /// over 64 MiB fetched at once, 4 MiB each, held in memory (1: one
    /// stream, for a server that reads the whole object for every range
    /// request; the default of the small device build, to save memory).
    #[arg(long, default_value_t = DEFAULT_PARTS as u64, value_parser = clap::value_parser!(u64).range(1..=16))]
    parts: u64,
    /// How long to keep retrying a store that fails transiently (5xx,
    /// throttling, timeouts) before exiting with status 1. Permanent
    /// failures (access denied, no such bucket) and damaged objects fail at once.
    #[arg(long, default_value = "2m", value_parser = distributary_core::duration::parse_duration)]
    retry_for: std::time::Duration,
    /// Progress on stderr: auto (a bar when stderr is a terminal and --json
    /// is not given), bar, json (one object per line, for tools) or none.
    #[arg(long, default_value = "auto")]
    progress: ProgressChoice,
}

/// Refuses `db` unless it is missing, empty or this store's replica; with
/// `force`, removes such a database (and its sidecar) instead, so the sync
/// bootstraps it from the store. The caller holds the replica's lock.
pub async fn admit(store: &dyn Store, source: &str, db: &std::path::Path, force: bool) -> Result<()> {
    match check_replica(store, source, db).await {
        Err(ApplyError::Replica(ReplicaError::NotAReplica { .. } | ReplicaError::OtherStore { .. })) if force => {
            tracing::warn!(db = %db.display(), "--force: replacing a database that is not this store's replica");
            eprintln!("edge-reader: --force: replacing {}, which is not a replica of {}", db.display(), store.url());
            remove_replica(db).with_context(|| format!("replace {}", db.display()))?;
            Ok(())
        }
        result => Ok(result?),
    }
}

/// Runs one sync.
pub async fn run(args: Args) -> Result<()> {
    let key = args.replica.key()?;
    let ReplicaArgs { source, db, concurrency, force, .. } = &args.replica;
    // The store first: a URL this build cannot read leaves no lock file.
    let store = crate::source::open(source).await?;
    let _lock = replica::lock(db, !args.no_wait)?;
    let progress_style = args.progress.style(args.json);
    let options = SyncOptions {
        target: HistoryPoint::Newest,
        key,
        concurrency: *concurrency,
        parts: args.parts as usize,
        progress: progress_style.map(|style| progress_printer(style, "syncing")),
        ..SyncOptions::default()
    };
    if *force {
        // Without --force, the sync's own check refuses such a file.
        admit(store.as_ref(), source, db, true).await?;
    }
    // A sync cut short converges on the next attempt (the sidecar and the
    // SQLite transaction make every attempt start from a consistent state).
    let bound = RetryBound { give_up_after: args.retry_for };
    let attempt =
        || retry_bounded(bound, "sync", ApplyError::class, || sync_replica(Arc::clone(&store), source, db, &options));
    let summary = match attempt().await {
        // A file that is not at the state its sidecar names (replaced or
        // restored apart from it), or an unreadable sidecar: --force
        // replaces both with the store's database.
        Err(ApplyError::Replica(ReplicaError::Mismatch { .. } | ReplicaError::Invalid { .. })) if *force => {
            eprintln!("edge-reader: --force: replacing {}, which is not at its sidecar's state", db.display());
            remove_replica(db).with_context(|| format!("replace {}", db.display()))?;
            attempt().await
        }
        result => result,
    }
    .with_context(|| format!("sync {} from {}", db.display(), store.url()))?;
    let bootstrapped = matches!(summary.plan.base, Base::Snapshot(_));
    if args.json {
        let json = serde_json::json!({
            "db": db,
            "source": store.url(),
            "generation": summary.generation.to_string(),
            "from_txid": summary.from_txid.map(|t| t.0),
            "to_txid": summary.to_txid.0,
            "checksum": summary.checksum.to_string(),
            "bootstrapped": bootstrapped,
            "objects": summary.objects,
            "bytes": summary.bytes,
            "seconds": summary.seconds,
            "manifest_newest_txid": summary.manifest_newest.0,
        });
        println!("{json}");
    } else if summary.objects == 0 {
        println!("{}: up to date at TXID {} (generation {})", db.display(), summary.to_txid.0, summary.generation);
    } else {
        let from = summary.from_txid.map_or("nothing".to_string(), |t| format!("TXID {}", t.0));
        println!(
            "{}: synced from {from} to TXID {}{}: {} objects, {} bytes in {:.2} s",
            db.display(),
            summary.to_txid.0,
            if bootstrapped { " (bootstrapped from a snapshot)" } else { "" },
            summary.objects,
            summary.bytes,
            summary.seconds
        );
    }
    Ok(())
}
