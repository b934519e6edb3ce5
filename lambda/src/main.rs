//! The Distributary compactor as an AWS Lambda function. The handler arrives
//! with the compactor issue; until then the binary parses `--help` and
//! `--version` only.

use clap::Parser;

/// Compacts Distributary segments on S3 ObjectCreated events.
#[derive(Parser)]
#[command(name = "distributary-lambda", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("distributary-lambda: the compactor handler is not built yet; see `distributary-lambda --help`");
    std::process::exit(2);
}
