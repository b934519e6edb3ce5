//! `edge-reader status --db PATH`: where the replica is, its last successful
//! and last failed sync, and how far behind the store it is when the store
//! can be reached.
//!
//! The store's newest state is found the way a sync finds it: from the
//! manifest's `newest`, L0 probed by name until not found
//! ([`probe_newest`]). The manifest's `newest` alone moves only when the
//! compactor runs, so it can be far behind the store (and behind the
//! replica itself).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use distributary_core::GenerationId;
use distributary_core::manifest::{Position, read_manifest};
use distributary_core::plan::probe_newest;
use distributary_core::replica::{read_state, recorded_source, source_url};

use distributary_core::rfc3339::format as format_time;

/// Arguments of `edge-reader status`.
#[derive(clap::Args)]
pub struct Args {
    /// The replica's SQLite file.
    #[arg(long, env = "EDGE_READER_DB")]
    db: PathBuf,
    /// The store to measure lag against (default: the one last synced from,
    /// as its sidecar records it: without credentials or an http(s) URL's
    /// query string).
    #[arg(long, env = "EDGE_READER_SOURCE")]
    source: Option<String>,
    /// Do not contact the store (no lag).
    #[arg(long)]
    offline: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What the store holds now.
struct StoreNewest {
    /// The store's display form (never credentials).
    display: String,
    generation: GenerationId,
    newest: Position,
}

/// Prints the status.
pub async fn run(args: Args) -> Result<()> {
    let Some(state) = read_state(&args.db)? else {
        bail!("{} has no replica state: run `edge-reader sync` first", args.db.display());
    };
    let recorded = source_url(&state.source);
    let source = args.source.clone().unwrap_or_else(|| recorded.clone());
    // Lag needs the store; an unreachable store is reported, not fatal.
    let store = if args.offline {
        None
    } else {
        Some(
            async {
                let store = crate::source::open(&source).await?;
                let manifest = read_manifest(store.as_ref())
                    .await?
                    .with_context(|| format!("read {}: the store has no manifest", store.url()))?
                    .value;
                let newest = probe_newest(store.as_ref(), &manifest)
                    .await
                    .with_context(|| format!("probe the newest state of {}", store.url()))?;
                anyhow::Ok(StoreNewest { display: store.url().to_string(), generation: manifest.generation, newest })
            }
            .await
            .map_err(|e| {
                let hint = if args.source.is_none() && source.starts_with("http") {
                    " (the sidecar records an http(s) store without its query string: pass --source with the token if it needs one)"
                } else {
                    ""
                };
                format!("{e:#}{hint}")
            }),
        )
    };
    let (lag_txids, lag_seconds, newest, lag_error) = match &store {
        Some(Ok(store)) if store.generation == state.generation => (
            Some(store.newest.txid.0.saturating_sub(state.txid.0)),
            Some(store.newest.timestamp_ms.saturating_sub(state.timestamp_ms) as f64 / 1000.0),
            Some(store.newest.txid.0),
            None,
        ),
        Some(Ok(store)) => (
            None,
            None,
            Some(store.newest.txid.0),
            Some(format!("the store moved to generation {} (the next sync bootstraps it)", store.generation)),
        ),
        Some(Err(e)) => (None, None, None, Some(e.clone())),
        None => (None, None, None, None),
    };
    let shown_source = match &store {
        Some(Ok(store)) => store.display.clone(),
        _ => recorded_source(&source),
    };
    let last_success_ms = (state.synced_ms > 0).then_some(state.synced_ms);
    let failure = state.last_failure.as_ref();
    if args.json {
        let json = serde_json::json!({
            "db": args.db,
            "source": recorded_source(&source),
            "generation": state.generation.to_string(),
            "txid": state.txid.0,
            "checksum": state.checksum.to_string(),
            "timestamp_ms": state.timestamp_ms,
            "synced_ms": state.synced_ms,
            "last_success_ms": last_success_ms,
            "last_failure_ms": failure.map(|f| f.at_ms),
            "last_failure": failure.map(|f| f.error.clone()),
            "interrupted": state.pending.is_some(),
            "store_newest_txid": newest,
            "lag_txids": lag_txids,
            "lag_seconds": lag_seconds,
            "lag_error": lag_error,
        });
        println!("{json}");
        return Ok(());
    }
    println!("replica       {}", args.db.display());
    println!("source        {shown_source}");
    println!("generation    {}", state.generation);
    println!("txid          {} ({})", state.txid.0, state.txid);
    println!("checksum      {}", state.checksum);
    println!("committed     {}", format_time(state.timestamp_ms));
    match last_success_ms {
        Some(ms) => println!("last success  {}", format_time(ms)),
        None => println!("last success  never"),
    }
    if let Some(failure) = failure {
        let note = if failure.at_ms < state.synced_ms { " (a later sync succeeded)" } else { "" };
        println!("last failure  {}{note}: {}", format_time(failure.at_ms), failure.error);
    }
    if state.pending.is_some() {
        println!("note          the last sync was interrupted; the next one checks the file and converges");
    }
    match (lag_txids, lag_seconds, lag_error) {
        (Some(txids), Some(seconds), _) => {
            println!("lag           {txids} transactions, {seconds:.1} s (store at TXID {})", newest.unwrap_or(0))
        }
        (_, _, Some(error)) => println!("lag           unknown: {error}"),
        _ => println!("lag           not measured (offline)"),
    }
    Ok(())
}
