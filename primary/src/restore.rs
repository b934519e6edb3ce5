//! `distributary restore STORE_URL -o OUT`: a new database file at the
//! newest state, a TXID, a time or a snapshot. The logic is core's
//! [`distributary_core::apply::restore`] (the same code as
//! `edge-reader sync`); this file is the command line around it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use distributary_core::TxId;
use distributary_core::apply::{
    ApplyError, IntegrityCheck, ProgressChoice, RestoreOptions, SyncOptions, progress_printer, restore,
};
use distributary_core::format::EncryptionKey;
use distributary_core::manifest::read_manifest;
use distributary_core::plan::{Base, HistoryPoint};
use distributary_core::retry::{RetryBound, WrapsStoreError, retry_bounded};

use crate::config::Config;
use distributary_core::rfc3339;

/// Arguments of `distributary restore`.
#[derive(clap::Args)]
pub struct Args {
    /// The store to restore from; with --config, the DB_PATH whose first
    /// configured store to restore from.
    #[arg(value_name = "STORE_URL|DB_PATH")]
    source: String,
    /// The configuration file of `distributary replicate`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The database file to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Restore exactly this transaction (decimal, or 16 hex digits).
    #[arg(long, conflicts_with_all = ["timestamp", "snapshot"])]
    txid: Option<String>,
    /// Restore the newest transaction committed at or before this time (RFC 3339).
    #[arg(long, conflicts_with = "snapshot")]
    timestamp: Option<String>,
    /// Restore exactly the snapshot at this TXID, nothing after it.
    #[arg(long)]
    snapshot: Option<String>,
    /// Do nothing (exit 0) if the output file already exists.
    #[arg(long)]
    if_db_not_exists: bool,
    /// Do nothing (exit 0) if the store holds no replica.
    #[arg(long)]
    if_replica_exists: bool,
    /// Print the plan; download nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result (or the plan) as JSON.
    #[arg(long)]
    json: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
    /// Integrity check before the file is moved into place.
    #[arg(long, value_enum, default_value = "quick")]
    integrity_check: Check,
    /// Key file for an encrypted store.
    #[arg(long)]
    encryption_key_file: Option<PathBuf>,
    /// Progress on stderr: auto (a bar when stderr is a terminal and --json
    /// is not given), bar, json (one object per line, for tools) or none.
    #[arg(long, default_value = "auto")]
    progress: ProgressChoice,
    /// Objects downloaded at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Writing a new file from a remote store: ranged parts of a snapshot
    /// over 64 MiB fetched at once, 4 MiB each (1: one stream, for a server
    /// that reads the whole object for every range request).
    #[arg(long, default_value_t = distributary_core::apply::DEFAULT_PARTS as u64, value_parser = clap::value_parser!(u64).range(1..=16))]
    parts: u64,
    /// How long to keep retrying a store that fails transiently (5xx,
    /// throttling, timeouts) before exiting with status 1.
    #[arg(long, default_value = "2m", value_parser = distributary_core::duration::parse_duration)]
    retry_for: std::time::Duration,
}

/// `--integrity-check` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Check {
    /// Skip it.
    None,
    /// `PRAGMA quick_check`.
    Quick,
    /// `PRAGMA integrity_check`.
    Full,
}

/// Parses a TXID given as decimal or as the 16 hex digits of object keys.
pub fn parse_txid(text: &str) -> Result<TxId> {
    if let Some(txid) = TxId::from_hex(text) {
        return Ok(txid);
    }
    text.parse::<u64>().map(TxId).map_err(|_| anyhow::anyhow!("invalid TXID {text:?}: expected a number"))
}

/// Runs the restore.
pub async fn run(args: Args) -> Result<ExitCode> {
    if args.if_db_not_exists && args.output.exists() {
        eprintln!("distributary: {} exists; nothing to do (--if-db-not-exists)", args.output.display());
        return Ok(ExitCode::SUCCESS);
    }
    // With --config, the store is opened as `replicate` opens it (the
    // file's static credentials included).
    let (replica, mut key_file) = match &args.config {
        None => (None, None),
        Some(config) => {
            let db = PathBuf::from(&args.source);
            let config = Config::load(config)?;
            let wanted = std::fs::canonicalize(&db).unwrap_or(db.clone());
            let entry = config
                .dbs
                .iter()
                .find(|d| d.path == db || std::fs::canonicalize(&d.path).is_ok_and(|p| p == wanted))
                .with_context(|| format!("{} is not in the configuration", db.display()))?;
            let replica =
                entry.replicas.first().with_context(|| format!("{} has no store configured", db.display()))?;
            (Some(replica.clone()), replica.encryption_key_file.clone())
        }
    };
    if args.encryption_key_file.is_some() {
        key_file = args.encryption_key_file.clone();
    }
    let key = match &key_file {
        Some(path) => Some(EncryptionKey::from_file(path)?),
        None => None,
    };
    let target = match (&args.txid, &args.timestamp, &args.snapshot) {
        (Some(txid), _, _) => HistoryPoint::TxId(parse_txid(txid)?),
        (_, Some(time), _) => HistoryPoint::Timestamp(rfc3339::parse(time)?),
        (_, _, Some(txid)) => HistoryPoint::Snapshot(parse_txid(txid)?),
        _ => HistoryPoint::Newest,
    };
    let url = replica.as_ref().map_or_else(|| args.source.clone(), |r| r.url.clone());
    let store = match &replica {
        Some(replica) => replica.open_store().await?,
        None => distributary_core::store::open(&args.source).await?,
    };
    let bound = RetryBound { give_up_after: args.retry_for };
    if args.if_replica_exists
        && retry_bounded(bound, "read the manifest", ApplyError::class, || async {
            read_manifest(store.as_ref()).await.map_err(ApplyError::from)
        })
        .await?
        .is_none()
    {
        eprintln!("distributary: {url} holds no replica; nothing to do (--if-replica-exists)");
        return Ok(ExitCode::SUCCESS);
    }
    let progress_style = if args.dry_run { None } else { args.progress.style(args.json) };
    let progress = progress_style.map(|style| progress_printer(style, "restoring"));
    let options = RestoreOptions {
        sync: SyncOptions {
            target,
            key,
            concurrency: args.concurrency,
            parts: args.parts as usize,
            keep_state: false,
            dry_run: args.dry_run,
            progress,
        },
        force: args.force,
        integrity: match args.integrity_check {
            Check::None => IntegrityCheck::None,
            Check::Quick => IntegrityCheck::Quick,
            Check::Full => IntegrityCheck::Full,
        },
    };
    // A restore that fails part way leaves nothing behind, so it is simply
    // run again (what was downloaded is downloaded again).
    let summary =
        retry_bounded(bound, "restore", ApplyError::class, || restore(Arc::clone(&store), &args.output, &options))
            .await
            .with_context(|| format!("restore {} from {url}", args.output.display()))?;
    let plan = &summary.plan;
    if args.json {
        let json = serde_json::json!({
            "output": args.output,
            "source": url,
            "dry_run": args.dry_run,
            "generation": summary.generation.to_string(),
            "target": plan.target.to_string(),
            "snapshot": plan.snapshot_key(),
            "plan": plan.describe(),
            "txid": summary.to_txid.0,
            "timestamp": (!args.dry_run).then(|| rfc3339::format(summary.timestamp_ms)),
            "checksum": summary.checksum.to_string(),
            "objects": summary.objects,
            "bytes": summary.bytes,
            "seconds": summary.seconds,
        });
        println!("{json}");
    } else if args.dry_run {
        print!("{}", plan.describe());
    } else {
        let from = match plan.base {
            Base::Snapshot(s) => format!("snapshot {}", s.txid.0),
            Base::Replica(_) => "nothing".into(),
        };
        println!(
            "restored {} to TXID {} ({}, checksum {}) from {from}: {} objects, {} bytes in {:.2} s",
            args.output.display(),
            summary.to_txid.0,
            rfc3339::format(summary.timestamp_ms),
            summary.checksum,
            summary.objects,
            summary.bytes,
            summary.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
