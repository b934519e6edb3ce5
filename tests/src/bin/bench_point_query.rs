//! Benchmark helper: the ceiling for `edge-reader serve`'s point queries —
//! the same query on the same file, straight through rusqlite in-process
//! (read-only connections, one per thread, cached prepared statement), with
//! no HTTP, JSON or thread hand-off. `bench/serve.py` runs it beside serve
//! and Datasette and prints one JSON line.
//!
//! Usage: `bench_point_query --db PATH [--threads N] [--seconds S] [--rows R]`
//! (query: `SELECT id, name, value FROM items WHERE id = ?` with `?` uniform
//! in 1..=R).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn number(name: &str, default: u64) -> Result<u64> {
    arg(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("parse {name} {v:?}")))
}

/// One thread's run: latencies in nanoseconds.
fn worker(db: &str, rows: u64, until: Instant, seed: u64) -> Result<Vec<u64>> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("open {db}"))?;
    let mut state = seed | 1;
    let mut latencies = Vec::with_capacity(1 << 20);
    while Instant::now() < until {
        // xorshift64: uniform enough for picking rows, and free.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = state % rows + 1;
        let started = Instant::now();
        let mut statement = conn.prepare_cached("SELECT id, name, value FROM items WHERE id = ?")?;
        let mut result = statement.query([id as i64])?;
        while let Some(row) = result.next()? {
            std::hint::black_box((row.get::<_, i64>(0)?, row.get_ref(1)?.as_str()?.len(), row.get::<_, f64>(2)?));
        }
        latencies.push(started.elapsed().as_nanos() as u64);
    }
    Ok(latencies)
}

fn main() -> Result<()> {
    let db = arg("--db").context("--db PATH is required")?;
    let threads = number("--threads", 2)?;
    let seconds = number("--seconds", 10)?;
    let rows = number("--rows", 100_000)?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || worker(&db, rows, until, 0x9e37_79b9_7f4a_7c15 ^ (t + 1)))
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let quantile = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] as f64 / 1e3;
    println!(
        "{}",
        serde_json::json!({
            "queries": latencies.len(),
            "qps": latencies.len() as f64 / elapsed,
            "p50_us": quantile(0.50),
            "p99_us": quantile(0.99),
            "threads": threads,
        })
    );
    Ok(())
}
