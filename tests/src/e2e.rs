//! Pieces of the end-to-end tests that run the whole pipeline as processes
//! (tests/tests/{pipeline,soak,crash}.rs): the app writing the primary, an
//! `edge-reader sync` loop, `edge-reader serve`, the `distributary` CLI, and
//! the final check that every kept snapshot restores.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use distributary_core::apply::replica_checksum;
use serde_json::Value;

use crate::bins::binary;
use crate::process::{Process, log_of};
pub use crate::programs::{distributary, serve_txid};

/// How long a soak lasts: `DISTRIBUTARY_SOAK_SECS` seconds when set (a
/// longer soak on demand), else `default`; never under `at_least`.
pub fn soak_duration(default: Duration, at_least: Duration) -> Duration {
    let seconds = std::env::var("DISTRIBUTARY_SOAK_SECS").ok().and_then(|s| s.parse().ok());
    seconds.map_or(default, Duration::from_secs).max(at_least)
}

/// The app: a Python writer committing transactions of 1 to 5 inserts of
/// random sizes, with updates and deletes mixed in, every 10 ms for
/// `seconds`. With `maintenance` set it also does what real apps do now
/// and then: a TRUNCATE checkpoint every 7 s and a VACUUM every 20 s (a
/// VACUUM is a transaction too). At exit it writes the number of
/// transactions it committed to `count_file`.
///
/// Arguments: `db seconds count_file maintenance(0|1)`.
pub const APP: &str = r#"
import random, sqlite3, sys, time
db, seconds, count_file, maintenance = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
c = sqlite3.connect(db, isolation_level=None, timeout=30)
random.seed(9)
start = time.time()
end = start + seconds
next_checkpoint, next_vacuum = start + 7, start + 20
n = 0
while time.time() < end:
    c.execute("BEGIN IMMEDIATE")
    for _ in range(random.randint(1, 5)):
        c.execute("INSERT INTO events (body) VALUES (?)", (random.randbytes(random.randint(10, 3000)).hex(),))
    if n % 10 == 0:
        c.execute("UPDATE events SET body = body || 'u' WHERE id % 17 = ?", (n % 17,))
    if n % 50 == 0:
        c.execute("DELETE FROM events WHERE id % 23 = ?", (n % 23,))
    c.execute("COMMIT")
    n += 1
    if maintenance and time.time() >= next_checkpoint:
        # The replicator's read mark may hold it back: a busy answer is fine.
        c.execute("PRAGMA busy_timeout = 1000")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        c.execute("PRAGMA busy_timeout = 30000")
        next_checkpoint += 7
    if maintenance and time.time() >= next_vacuum:
        c.execute("VACUUM")
        n += 1
        next_vacuum += 20
    time.sleep(0.01)
open(count_file, "w").write(str(n))
"#;

/// Creates the primary (WAL mode, the app's table) and writes the app's
/// script beside it; returns the script's path.
/// The top of a config file (Litestream 0.5's keys) that compacts inside
/// the replicator on intervals short enough for a test: the first level is
/// our L1 window, `l0-retention` how long merged L0 segments stay.
pub const FAST_LOCAL_COMPACTION: &str = "compaction: local\nl0-retention: 2s\nlevels:\n  - interval: 1s\n";

/// Writes `yaml` to `dir/replicate.yml` and starts `distributary replicate
/// --config` on it (its log in `dir`).
pub fn replicate_with_config(dir: &Path, yaml: &str) -> Process {
    let config = dir.join("replicate.yml");
    std::fs::write(&config, yaml).expect("write the config file");
    Process::spawn(
        "replicate",
        dir,
        Command::new(binary("distributary", "distributary")).args(["replicate", "--config"]).arg(&config),
    )
}

pub fn create_primary(db: &Path) -> PathBuf {
    let connection = rusqlite::Connection::open(db).unwrap();
    connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    connection.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT);").unwrap();
    let app = db.with_extension("py");
    std::fs::write(&app, APP).unwrap();
    app
}

/// The `--exec` command line running the app for `seconds`.
pub fn app_command(app: &Path, db: &Path, seconds: u64, count_file: &Path, maintenance: bool) -> String {
    format!(
        "python3 {} {} {seconds} {} {}",
        app.display(),
        db.display(),
        count_file.display(),
        if maintenance { 1 } else { 0 }
    )
}

/// What an `edge-reader sync` loop saw.
#[derive(Default, Debug)]
pub struct SyncLoop {
    pub successes: u64,
    pub failures: u64,
    /// Runs that ended in anything but success or a reported error (a
    /// panic, a signal), or applied a state whose file does not match the
    /// checksum the sync reported: each one is a bug.
    pub anomalies: Vec<String>,
    /// `(to_txid, checksum)` of the newest success.
    pub last: Option<(u64, String)>,
}

/// `edge-reader sync` run every 300 ms on one replica in a thread, as cron
/// would; it can be taken offline (no runs) and back.
pub struct SyncLoopHandle {
    stop: Arc<AtomicBool>,
    offline: Arc<AtomicBool>,
    thread: JoinHandle<SyncLoop>,
}

impl SyncLoopHandle {
    pub fn start(url: &str, db: &Path, env: &[(&'static str, String)]) -> SyncLoopHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let offline = Arc::new(AtomicBool::new(false));
        let thread = {
            let (url, db, env, stop, offline) =
                (url.to_string(), db.to_path_buf(), env.to_vec(), stop.clone(), offline.clone());
            std::thread::spawn(move || run_sync_loop(&url, &db, &env, &stop, &offline))
        };
        SyncLoopHandle { stop, offline, thread }
    }

    /// Offline: no syncs until set back (the run in progress finishes).
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    /// Stops after the run in progress; what the loop saw.
    pub fn finish(self) -> SyncLoop {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn run_sync_loop(
    url: &str,
    db: &Path,
    env: &[(&'static str, String)],
    stop: &AtomicBool,
    offline: &AtomicBool,
) -> SyncLoop {
    let mut seen = SyncLoop::default();
    let edge_reader = binary("edge-reader", "edge-reader");
    while !stop.load(Ordering::SeqCst) {
        if offline.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let output = Command::new(&edge_reader)
            .args(["sync", "--json", "--source", url, "--db"])
            .arg(db)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {
                seen.successes += 1;
                let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
                let txid = summary["to_txid"].as_u64().unwrap();
                let reported = summary["checksum"].as_str().unwrap().to_string();
                // Nothing else writes the replica between runs: the file
                // must hold exactly the state the sync says it applied.
                let actual = replica_checksum(db).unwrap().to_string();
                if actual != reported {
                    seen.anomalies.push(format!("TXID {txid}: file checksum {actual}, reported {reported}"));
                }
                seen.last = Some((txid, reported));
            }
            Some(1) if !stderr.contains("panicked") => seen.failures += 1,
            _ => seen.anomalies.push(format!("sync exited with {}: {stderr}", output.status)),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    seen
}

/// Starts `edge-reader serve` (200 ms poll, any free port) and returns it
/// with its base URL, read from its log.
pub fn start_serve(name: &str, dir: &Path, url: &str, db: &Path, env: &[(&'static str, String)]) -> (Process, String) {
    start_serve_with(name, dir, url, db, &["--poll", "200ms"], env)
}

/// `edge-reader serve` with `extra` arguments, on any free port.
pub fn start_serve_with(
    name: &str,
    dir: &Path,
    url: &str,
    db: &Path,
    extra: &[&str],
    env: &[(&'static str, String)],
) -> (Process, String) {
    // The log is appended to across restarts: the newest address counts.
    // Counted before spawning: serve may print its address before a count
    // taken after the spawn, which would then wait for one more forever.
    let before = log_of(dir, name).matches(" on http://").count();
    let mut serve = Process::spawn(
        name,
        dir,
        Command::new(binary("edge-reader", "edge-reader"))
            .args(["serve", "--source", url, "--db", db.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("EDGE_READER_LOG", "info"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = serve.log();
        // `... listening on http://ADDRESS`, the first line serve logs.
        if let Some(address) = text.lines().filter_map(|l| l.split(" on http://").nth(1)).nth(before) {
            let base = format!("http://{}", address.split_whitespace().next().unwrap());
            return (serve, base);
        }
        if let Some(status) = serve.exited() {
            panic!("{name} exited with {status}: {text}");
        }
        assert!(Instant::now() < deadline, "{name} did not start listening: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restores every snapshot `distributary snapshots` lists into `dir` with
/// `--integrity-check full` and asserts each equals its listed checksum;
/// returns how many there were.
pub fn assert_every_snapshot_restores(url: &str, env: &[(&'static str, String)], dir: &Path) -> usize {
    let output = distributary(&["snapshots", url, "--json"], env);
    assert!(output.status.success(), "snapshots: {}", String::from_utf8_lossy(&output.stderr));
    let snapshots: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    for snapshot in &snapshots {
        let txid = snapshot["txid"].as_u64().unwrap().to_string();
        let restored = dir.join(format!("restored-{txid}.db"));
        let output = distributary(
            &["restore", url, "--snapshot", &txid, "-o", restored.to_str().unwrap(), "--integrity-check", "full"],
            env,
        );
        assert!(output.status.success(), "restore --snapshot {txid}: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(replica_checksum(&restored).unwrap().to_string(), snapshot["checksum"].as_str().unwrap());
    }
    snapshots.len()
}

/// `PRAGMA integrity_check` of a replica, asserted ok.
pub fn assert_integrity(db: &Path) {
    let connection = rusqlite::Connection::open(db).unwrap();
    let check: String = connection.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "{}", db.display());
}
