//! The workspace's command-line programs run from tests: one-shot commands
//! with their output (`distributary ...`, `edge-reader sync --json`),
//! `distributary replicate` in the background or once, and requests to a
//! running `edge-reader serve` (started by [`crate::e2e::start_serve`]).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::bins::binary;
use crate::process::Process;

/// Environment variables for a child process (see [`crate::moto::MotoServer::env`]).
pub type Env = [(&'static str, String)];

/// Runs `distributary ARGS` to completion.
pub fn distributary(args: &[&str], env: &Env) -> Output {
    run(Command::new(binary("distributary", "distributary")).args(args), env)
}

/// Runs `edge-reader ARGS` to completion.
pub fn edge_reader(args: &[&str], env: &Env) -> Output {
    run(Command::new(binary("edge-reader", "edge-reader")).args(args), env)
}

/// Runs `edge-reader sync --json --source URL --db DB` to completion; its
/// summary when it succeeded, its stderr when it did not.
pub fn edge_sync(url: &str, db: &Path, env: &Env) -> Result<Value, String> {
    let output = edge_reader(&["sync", "--json", "--source", url, "--db", db.to_str().unwrap()], env);
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("sync --json prints a JSON summary"))
    } else {
        Err(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr)))
    }
}

/// `distributary replicate OPTIONS DB URL` in the background, its log
/// `replicate.log` beside `db`. It syncs every 100 ms (tests wait on it)
/// unless `options` set `--sync-interval`.
pub fn spawn_replicator(db: &Path, url: &str, options: &[&str], env: &Env) -> Process {
    let interval: &[&str] = if options.contains(&"--sync-interval") { &[] } else { &["--sync-interval", "100ms"] };
    Process::spawn(
        "replicate",
        db.parent().expect("the database's folder"),
        Command::new(binary("distributary", "distributary"))
            .arg("replicate")
            .args(interval)
            .args(options)
            .arg(db)
            .arg(url)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    )
}

/// `distributary replicate --once OPTIONS DB URL`: ships what the WAL holds;
/// panics with its stderr if it fails.
pub fn replicate_once(db: &Path, url: &str, options: &[&str], env: &Env) -> Output {
    let output = run(
        Command::new(binary("distributary", "distributary"))
            .args(["replicate", "--once"])
            .args(options)
            .arg(db)
            .arg(url),
        env,
    );
    assert!(output.status.success(), "replicate --once failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn run(command: &mut Command, env: &Env) -> Output {
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).output().expect("run a workspace binary")
}

/// The TXID `edge-reader serve` at `base` reports on `/status`.
pub async fn serve_txid(client: &reqwest::Client, base: &str) -> Option<u64> {
    let response = client.get(format!("{base}/status")).timeout(Duration::from_secs(10)).send().await.ok()?;
    let status: Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
    status["txid"].as_u64()
}

/// Runs `sql` on `edge-reader serve` at `base`; the answer's JSON if it
/// succeeded.
pub async fn serve_query(client: &reqwest::Client, base: &str, sql: &str) -> Option<Value> {
    let response = client
        .post(format!("{base}/query"))
        .body(serde_json::json!({ "sql": sql }).to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_str(&response.text().await.ok()?).ok()
}
