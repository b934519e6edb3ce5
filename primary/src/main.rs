//! `distributary`: the primary-side CLI. Its commands arrive with their
//! issues (replicate, restore, snapshots, generations, compact, verify);
//! until then it parses `--help` and `--version` only.

use clap::Parser;

/// Streams a SQLite database to object storage for read-only replicas.
#[derive(Parser)]
#[command(name = "distributary", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("distributary: no command given; see `distributary --help`");
    std::process::exit(2);
}
