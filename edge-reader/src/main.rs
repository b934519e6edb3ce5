//! `edge-reader`: keeps a read-only replica of a Distributary store and
//! serves it. Its commands (sync, serve, query, status) arrive with their
//! issues; until then it parses `--help` and `--version` only.

use clap::Parser;

/// Follows a Distributary store into a local read-only SQLite replica.
#[derive(Parser)]
#[command(name = "edge-reader", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("edge-reader: no command given; see `edge-reader --help`");
    std::process::exit(2);
}
