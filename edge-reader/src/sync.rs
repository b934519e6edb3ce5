//! `edge-reader sync --source URL --db PATH`: one catch-up, then exit.
//!
//! Bootstraps from a snapshot when the replica is missing, follows another
//! generation or is behind the retention floor; otherwise applies what is
//! new. Exit status 0 means the replica is up to date with the store.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use distributary_core::apply::{SyncOptions, sync};
use distributary_core::format::EncryptionKey;
use distributary_core::plan::{Base, Target};
use distributary_core::replica;

/// Arguments of `edge-reader sync`.
#[derive(clap::Args)]
pub struct Args {
    /// The store: s3://bucket/prefix, file:///path or https://cdn/prefix.
    #[arg(long, env = "EDGE_READER_SOURCE")]
    source: String,
    /// The replica's SQLite file (created if missing).
    #[arg(long, env = "EDGE_READER_DB")]
    db: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Exit at once if another sync of this replica is running, instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Key file for an encrypted store (32 raw bytes, 64 hex digits or base64).
    #[arg(long, env = "EDGE_READER_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Objects downloaded at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// Reads the store's encryption key from `path` (32 raw bytes, 64 hex
/// digits or base64), if one is given.
pub fn read_key(path: Option<&std::path::Path>) -> Result<Option<EncryptionKey>> {
    let Some(path) = path else { return Ok(None) };
    let bytes = std::fs::read(path).with_context(|| format!("read encryption key file {}", path.display()))?;
    Ok(Some(EncryptionKey::parse(&bytes).with_context(|| format!("encryption key file {}", path.display()))?))
}

/// Runs one sync.
pub async fn run(args: Args) -> Result<()> {
    let key = crate::sync::read_key(args.encryption_key_file.as_deref())?;
    let _lock = replica::lock(&args.db, !args.no_wait)?;
    let store = distributary_core::store::open(&args.source).await?;
    let options = SyncOptions { target: Target::Newest, key, concurrency: args.concurrency, ..SyncOptions::default() };
    let summary = sync(Arc::clone(&store), &args.db, &options)
        .await
        .with_context(|| format!("sync {} from {}", args.db.display(), store.url()))?;
    let bootstrapped = matches!(summary.plan.base, Base::Snapshot(_));
    if args.json {
        let json = serde_json::json!({
            "db": args.db,
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
        println!("{}: up to date at TXID {} (generation {})", args.db.display(), summary.to_txid.0, summary.generation);
    } else {
        let from = summary.from_txid.map_or("nothing".to_string(), |t| format!("TXID {}", t.0));
        println!(
            "{}: synced from {from} to TXID {}{}: {} objects, {} bytes in {:.2} s",
            args.db.display(),
            summary.to_txid.0,
            if bootstrapped { " (bootstrapped from a snapshot)" } else { "" },
            summary.objects,
            summary.bytes,
            summary.seconds
        );
    }
    Ok(())
}
