//! `distributary`: the primary-side CLI. Parses arguments and runs the
//! command; everything else is the library (`src/lib.rs`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use distributary::config::{self, Logging};
use distributary::{compact, generations, replicate, restore, snapshots, verify};

/// Streams a SQLite database to object storage for read-only replicas.
#[derive(Parser)]
#[command(name = "distributary", version, about, propagate_version = true)]
struct Cli {
    /// Log format: text (the default) or json; wins over a config file's
    /// `logging.type`.
    #[arg(long, global = true, env = "DISTRIBUTARY_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Tail a database's WAL and ship every commit to one or more stores.
    Replicate(replicate::Args),
    /// Compact a store: L0 segments into L1 and snapshots, then retention.
    Compact(compact::Args),
    /// Restore a database file from a store (newest, a TXID, a time or a snapshot).
    Restore(restore::Args),
    /// List the snapshots of a store's generation.
    Snapshots(snapshots::Args),
    /// List the generations (lineages) a store holds.
    Generations(generations::Args),
    /// Check a store without changing it: chains, checksums, manifest, snapshots.
    #[command(long_about = verify::LONG_ABOUT)]
    Verify(verify::Args),
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let logging = match &cli.command {
        Command::Replicate(args) => replicate::config_logging(args),
        _ => Logging::default(),
    };
    init_tracing(cli.log_format, logging);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("distributary: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Replicate(args) => replicate::run(args).await,
            Command::Compact(args) => compact::run(args).await,
            Command::Restore(args) => restore::run(args).await,
            Command::Snapshots(args) => snapshots::run(args).await,
            Command::Generations(args) => generations::run(args).await,
            Command::Verify(args) => verify::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("distributary: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One malloc arena. glibc gives each thread that allocates an arena of
/// its own (up to 8 per core), and the freed memory of each stays
/// resident. Beside an app with four writers the replicator peaked at
/// 17.5–19.9 MiB with the default; with two arenas, 19.4–19.7 MiB over
/// 48–64 cycles of `bench/bursts.py` (the second arena alone held 5.6 MiB
/// after 150 s); with one, 17 MiB, of which 10 MiB is the binary's code
/// mapped from the page cache (docs/BENCHMARKS.md). Its threads allocate
/// little: with one arena its CPU per transaction was no higher. Before any
/// thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; it is called
    // before the process starts any other thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Logs to standard error. `DISTRIBUTARY_LOG` (a filter) wins over the
/// config file's `logging.level`, and `--log-format` over its `logging.type`.
fn init_tracing(format: Option<LogFormat>, logging: Logging) {
    let level = logging.level.map_or("info", |level| level.directive());
    let filter = tracing_subscriber::EnvFilter::try_from_env("DISTRIBUTARY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json = match format {
        Some(format) => matches!(format, LogFormat::Json),
        None => logging.format == Some(config::LogFormat::Json),
    };
    if json { builder.json().init() } else { builder.init() }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    /// `compact --l1-window` reads durations as every other flag and
    /// configuration key does: the same inputs are taken or refused alike,
    /// with core's reason (it refused `1.5m` while `serve --poll` took it).
    #[test]
    fn duration_flags_take_the_one_grammar() {
        // `--flag=value`: clap takes `-1s` after a space for a flag.
        distributary_core::duration::assert_reads_as_core("--l1-window", |text| {
            let argv = ["distributary".into(), "compact".into(), "file:///s".into(), format!("--l1-window={text}")];
            match Cli::try_parse_from(argv) {
                Ok(Cli { command: Command::Compact(args), .. }) => Ok(args.config().l1_window),
                Ok(_) => unreachable!("the arguments name compact"),
                Err(e) => Err(e.to_string()),
            }
        });
    }
}
