//! `distributary generations STORE_URL`: the lineages a store holds. It
//! LISTs the store (an inspection tool, not the steady state); on stores
//! that cannot list (HTTP) it shows the manifest's current generation only.
//!
//! The current generation's newest TXID is found the way readers find it
//! ([`probe_newest`]: L0 probed by name past the manifest's `newest`, which
//! moves only when the compactor runs).

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context, Result};
use distributary_core::GenerationId;
use distributary_core::manifest::{read_manifest, read_snapshot_index};
use distributary_core::plan::{known_snapshots, probe_newest};
use distributary_core::store::StoreError;

use distributary_core::rfc3339;

/// Arguments of `distributary generations`.
#[derive(clap::Args)]
pub struct Args {
    /// The store.
    store_url: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the table.
pub async fn run(args: Args) -> Result<ExitCode> {
    let store = distributary_core::store::open(&args.store_url).await?;
    let manifest = read_manifest(store.as_ref()).await?.map(|v| v.value);
    let newest = match &manifest {
        Some(m) => Some(
            probe_newest(store.as_ref(), m)
                .await
                .with_context(|| format!("probe the newest state of {}", store.url()))?,
        ),
        None => None,
    };
    let mut generations = BTreeSet::new();
    let mut sizes = std::collections::HashMap::<GenerationId, u64>::new();
    match store.list("").await {
        Ok(objects) => {
            for object in objects {
                if let Some(generation) = object.key.split('/').next().and_then(|g| g.parse::<GenerationId>().ok()) {
                    generations.insert(generation);
                    *sizes.entry(generation).or_default() += object.size;
                }
            }
        }
        Err(StoreError::Unsupported { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(m) = &manifest {
        generations.insert(m.generation);
    }
    let mut rows = Vec::new();
    for generation in generations.iter().rev() {
        let index = read_snapshot_index(store.as_ref(), *generation).await?.map(|v| v.value);
        let current = manifest.as_ref().filter(|m| m.generation == *generation);
        let snapshots = match current {
            Some(m) => known_snapshots(m, index.as_ref()),
            None => index.map(|i| i.snapshots).unwrap_or_default(),
        };
        rows.push(serde_json::json!({
            "generation": generation.to_string(),
            "current": current.is_some(),
            "created": rfc3339::format(generation.created_ms()),
            "snapshots": snapshots.len(),
            "oldest_snapshot_txid": snapshots.first().map(|s| s.txid.0),
            "newest_snapshot_txid": snapshots.last().map(|s| s.txid.0),
            "newest_txid": current.and(newest).map(|n| n.txid.0),
            "newest_time": current.and(newest).map(|n| rfc3339::format(n.timestamp_ms)),
            "bytes": sizes.get(generation),
        }));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32}  {:<7}  {:<24}  {:>9}  {:>12}  {:>14}",
        "GENERATION", "CURRENT", "CREATED", "SNAPSHOTS", "NEWEST TXID", "BYTES"
    );
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for row in &rows {
        println!(
            "{:<32}  {:<7}  {:<24}  {:>9}  {:>12}  {:>14}",
            show(&row["generation"]),
            if row["current"] == true { "yes" } else { "" },
            show(&row["created"]),
            show(&row["snapshots"]),
            show(&row["newest_txid"]),
            show(&row["bytes"])
        );
    }
    if rows.is_empty() {
        eprintln!("distributary: {} holds no generation", store.url());
    }
    Ok(ExitCode::SUCCESS)
}
