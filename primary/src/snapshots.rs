//! `distributary snapshots STORE_URL`: what can be restored exactly, from
//! the generation's snapshot index (no LIST).

use std::process::ExitCode;

use anyhow::{Context, Result};
use distributary_core::GenerationId;
use distributary_core::manifest::{read_manifest, read_snapshot_index};
use distributary_core::plan::known_snapshots;

use distributary_core::rfc3339;

/// Arguments of `distributary snapshots`.
#[derive(clap::Args)]
pub struct Args {
    /// The store.
    store_url: String,
    /// The generation (default: the manifest's current one).
    #[arg(long)]
    generation: Option<GenerationId>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the table.
pub async fn run(args: Args) -> Result<ExitCode> {
    let store = distributary_core::store::open(&args.store_url).await?;
    let manifest = read_manifest(store.as_ref())
        .await?
        .with_context(|| format!("{} holds no replica (no manifest.json)", store.url()))?
        .value;
    let generation = args.generation.unwrap_or(manifest.generation);
    let index = read_snapshot_index(store.as_ref(), generation).await?.map(|v| v.value);
    let snapshots = if generation == manifest.generation {
        known_snapshots(&manifest, index.as_ref())
    } else {
        index.map(|i| i.snapshots).unwrap_or_default()
    };
    if args.json {
        let rows: Vec<serde_json::Value> = snapshots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "generation": generation.to_string(),
                    "txid": s.txid.0,
                    "timestamp_ms": s.timestamp_ms,
                    "time": rfc3339::format(s.timestamp_ms),
                    "size": s.size,
                    "pages": s.commit,
                    "checksum": s.checksum.to_string(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<32}  {:>12}  {:<24}  {:>14}  {:>10}  CHECKSUM", "GENERATION", "TXID", "TIME", "SIZE", "PAGES");
    for s in &snapshots {
        println!(
            "{:<32}  {:>12}  {:<24}  {:>14}  {:>10}  {}",
            generation.to_string(),
            s.txid.0,
            rfc3339::format(s.timestamp_ms),
            s.size,
            s.commit,
            s.checksum
        );
    }
    if snapshots.is_empty() {
        eprintln!("distributary: generation {generation} has no snapshot");
    }
    Ok(ExitCode::SUCCESS)
}
