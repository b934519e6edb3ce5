//! `edge-reader status --db PATH`: where the replica is, and how far behind
//! the store it is when the store can be reached.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use distributary_core::manifest::read_manifest;
use distributary_core::replica::read_state;

use distributary_core::clock::format_rfc3339 as format_time;

/// Arguments of `edge-reader status`.
#[derive(clap::Args)]
pub struct Args {
    /// The replica's SQLite file.
    #[arg(long, env = "EDGE_READER_DB")]
    db: PathBuf,
    /// The store to measure lag against (default: the one last synced from).
    #[arg(long, env = "EDGE_READER_SOURCE")]
    source: Option<String>,
    /// Do not contact the store (no lag).
    #[arg(long)]
    offline: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the status.
pub async fn run(args: Args) -> Result<()> {
    let Some(state) = read_state(&args.db)? else {
        bail!("{} has no replica state: run `edge-reader sync` first", args.db.display());
    };
    let source = args.source.clone().unwrap_or_else(|| state.source.clone());
    // Lag needs the store; an unreachable store is reported, not fatal.
    let lag = if args.offline {
        None
    } else {
        Some(
            async {
                let store = distributary_core::store::open(&source).await?;
                let manifest = read_manifest(store.as_ref()).await?.context("the store has no manifest")?.value;
                anyhow::Ok(manifest)
            }
            .await,
        )
    };
    let (lag_txids, lag_seconds, newest, lag_error) = match &lag {
        Some(Ok(manifest)) if manifest.generation == state.generation => (
            Some(manifest.newest.txid.0.saturating_sub(state.txid.0)),
            Some(manifest.newest.timestamp_ms.saturating_sub(state.timestamp_ms) as f64 / 1000.0),
            Some(manifest.newest.txid.0),
            None,
        ),
        Some(Ok(manifest)) => (
            None,
            None,
            Some(manifest.newest.txid.0),
            Some(format!("the store moved to generation {}", manifest.generation)),
        ),
        Some(Err(e)) => (None, None, None, Some(format!("{e:#}"))),
        None => (None, None, None, None),
    };
    if args.json {
        let json = serde_json::json!({
            "db": args.db,
            "source": source,
            "generation": state.generation.to_string(),
            "txid": state.txid.0,
            "checksum": state.checksum.to_string(),
            "timestamp_ms": state.timestamp_ms,
            "synced_ms": state.synced_ms,
            "interrupted": state.pending.is_some(),
            "store_newest_txid": newest,
            "lag_txids": lag_txids,
            "lag_seconds": lag_seconds,
            "lag_error": lag_error,
        });
        println!("{json}");
        return Ok(());
    }
    println!("replica     {}", args.db.display());
    println!("source      {source}");
    println!("generation  {}", state.generation);
    println!("txid        {} ({})", state.txid.0, state.txid);
    println!("checksum    {}", state.checksum);
    println!("committed   {}", format_time(state.timestamp_ms));
    println!("last sync   {}", format_time(state.synced_ms));
    if state.pending.is_some() {
        println!("note        the last sync was interrupted; the next one checks the file and converges");
    }
    match (lag_txids, lag_seconds, lag_error) {
        (Some(txids), Some(seconds), _) => println!("lag         {txids} transactions, {seconds:.1} s"),
        (_, _, Some(error)) => println!("lag         unknown: {error}"),
        _ => println!("lag         not measured (offline)"),
    }
    Ok(())
}
