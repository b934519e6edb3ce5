//! `edge-reader`: keeps a read-only replica of a Distributary store and
//! answers queries on it. Thin glue over `distributary-core`; every command
//! lives in its own file.
//!
//! | module | command |
//! |---|---|
//! | [`sync`] | `edge-reader sync`: one-shot catch-up of a replica (cron, systemd timers) |
//! | [`serve`] | `edge-reader serve`: continuous sync and read-only SQL over HTTP (`docs/API.md`) |
//! | [`status`] | `edge-reader status`: the replica's position and lag |
//! | [`query`] | `edge-reader query`: read-only SQL on the replica |
//! | [`authorizer`] | what a query may do (`serve` and `query` alike) |
//! | [`source`] | opening `--source`; the small build's refusal of `s3://` |
//!
//! Features: `s3` (default) reads `s3://` stores through the AWS SDK;
//! without it (`--no-default-features`, the small static device build of
//! `scripts/build-edge.sh`) the reader takes `file://` and `http(s)://`
//! stores only.

mod authorizer;
mod query;
mod serve;
mod source;
mod status;
mod sync;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What every command's exit status means (`--help`, and docs/DEPLOY.md).
const EXIT_STATUS: &str = "\
Exit status:
  0  success: sync brought the replica up to date with the store; serve
     stopped on SIGTERM or Ctrl-C; status printed the replica's state (also
     when the store could not be reached: lag is then reported unknown)
  1  failure, with the error on stderr: the store or an object could not be
     read or verified (the replica keeps its last good state, and its
     sidecar records the failure for `status`), --db is not this store's
     replica (nothing was written; --force replaces it), another sync holds
     the replica (--no-wait), a query was refused or failed
  2  invalid command line (clap's usage error)";

/// Follows a Distributary store into a local read-only SQLite replica.
#[derive(Parser)]
#[command(name = "edge-reader", version, about, propagate_version = true, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the replica up to date once, then exit (for cron and timers).
    Sync(sync::Args),
    /// Keep the replica in sync and answer read-only SQL over HTTP.
    Serve(serve::Args),
    /// Show the replica's generation, TXID, checksum, last sync and lag.
    Status(status::Args),
    /// Run a read-only SQL query on the replica.
    Query(query::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so stdout stays a clean summary or JSON.
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGE_READER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Query(args) => query::run(args),
        command => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(async move {
                match command {
                    Command::Sync(args) => sync::run(args).await,
                    Command::Serve(args) => serve::run(args).await,
                    Command::Status(args) => status::run(args).await,
                    Command::Query(_) => unreachable!("handled without a runtime above"),
                }
            }),
            Err(e) => Err(anyhow::Error::new(e).context("start the async runtime")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edge-reader: {error:#}");
            ExitCode::FAILURE
        }
    }
}
