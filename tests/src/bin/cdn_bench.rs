//! Benchmark: N simulated edge readers behind nginx as a CDN (issue #18,
//! deliverable 3), the scenario of [`distributary_tests::cdn_run`]: the
//! real replicator ships 10 commits/s to moto, nginx runs the CDN block of
//! `docs/DEPLOY.md`, and the readers follow serve's protocol through it.
//! Prints one table row per run and writes the figures as JSON (for the
//! cost tables: `origin_requests_per_s` is what the origin bills).
//!
//! Usage: `cdn_bench --readers N --seconds S [--json PATH] [--rate R]
//! [--distributary PATH] [--work DIR] [--compact]` (`--compact` also runs
//! `distributary compact --watch`, see `cdn_run::COMPACT_ARGS`;
//! `CDN_BENCH_KEEP=1` keeps the work folder and its logs). The primary is `--distributary`,
//! else `$DISTRIBUTARY`, else the `distributary` beside this binary
//! (`cargo build --release -p distributary -p distributary-tests --bin cdn_bench`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use distributary_tests::cdn_run::{CdnReport, CdnRun};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn number(name: &str, default: u64) -> Result<u64> {
    arg(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("parse {name} {v:?}")))
}

fn distributary() -> Result<PathBuf> {
    let path = match arg("--distributary").or_else(|| std::env::var("DISTRIBUTARY").ok()) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?.with_file_name("distributary"),
    };
    if !path.exists() {
        bail!("{} not found: build it (cargo build --release -p distributary) or pass --distributary", path.display());
    }
    Ok(path)
}

/// The figures as JSON: the fields the brief names first, then the rest.
fn json(report: &CdnReport, rate: u64, compact: bool) -> serde_json::Value {
    serde_json::json!({
        "readers": report.readers,
        "seconds": report.seconds,
        "origin_requests_per_s": report.origin_requests_per_s,
        "reader_requests_per_s": report.reader_requests_per_s,
        "hit_ratio": report.hit_ratio,
        "lag_p50_s": report.lag_p50_s,
        "lag_p99_s": report.lag_p99_s,
        "origin_requests_per_s_after_warmup": report.origin_requests_per_s_after_warmup,
        "origin_requests": report.origin_requests,
        "cdn_requests": report.cdn_requests,
        "cdn_origin_requests_logged": report.cdn_origin_requests,
        "lag_samples": report.lag_samples,
        "reader_cpu_cores": report.reader_cpu_cores,
        "cdn_cpu_cores": report.cdn_cpu_cores,
        "commits": report.commits,
        "commits_per_s": rate,
        "compact": compact,
        "final_txid": report.final_txid,
        "converged_readers": report.converged,
        "converge_seconds": report.converge_seconds,
        "mismatched_readers": report.mismatches.len(),
        "failed_polls": report.failed_polls,
        "last_failure": report.last_failure,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let readers = number("--readers", 1000)? as usize;
    let seconds = number("--seconds", 60)?;
    let rate = number("--rate", 10)?;
    let run = CdnRun {
        readers,
        write_seconds: seconds,
        rate: u32::try_from(rate).context("--rate")?,
        distributary: distributary()?,
        warmup: Duration::from_secs(5.min(seconds / 2)),
        converge_limit: Duration::from_secs(180),
        compact: std::env::args().any(|a| a == "--compact"),
    };
    let work = match arg("--work") {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    eprintln!(
        "cdn_bench: {readers} readers, {seconds} s of writes at {rate}/s{} (work in {})",
        if run.compact { ", compact --watch" } else { "" },
        work.path().display()
    );
    let report = run.run(work.path()).await;
    if std::env::var_os("CDN_BENCH_KEEP").is_some() {
        // The logs (nginx's access and error logs, the replicator's) for a look.
        eprintln!("kept {}", work.keep().display());
    }
    println!(
        "| readers | seconds | origin requests/s | (after {} s warm-up) | reader requests/s | hit ratio | lag p50 (s) | lag p99 (s) | reader CPU (cores) | nginx CPU (cores) | converged |",
        run.warmup.as_secs()
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.1} | {:.2} | {:.2} | {:.0} | {:.4} | {:.2} | {:.2} | {:.2} | {:.2} | {}/{}{} |",
        report.readers,
        report.seconds,
        report.origin_requests_per_s,
        report.origin_requests_per_s_after_warmup,
        report.reader_requests_per_s,
        report.hit_ratio,
        report.lag_p50_s,
        report.lag_p99_s,
        report.reader_cpu_cores,
        report.cdn_cpu_cores,
        report.converged,
        report.readers,
        report.converge_seconds.map_or(String::new(), |s| format!(" in {s:.1} s")),
    );
    if let Some(failure) = &report.last_failure {
        eprintln!("{} polls failed (retried); the last: {failure}", report.failed_polls);
    }
    if let Some(path) = arg("--json") {
        std::fs::write(&path, serde_json::to_string_pretty(&json(&report, rate, run.compact))? + "\n")
            .with_context(|| format!("write {path}"))?;
    }
    if !report.mismatches.is_empty() {
        bail!(
            "{} readers do not hold the primary's database: {:?}",
            report.mismatches.len(),
            &report.mismatches[..5.min(report.mismatches.len())]
        );
    }
    Ok(())
}
