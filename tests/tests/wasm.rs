//! The wasm edge reader (`edge-wasm`, built by scripts/build-wasm.sh) against
//! a store written by `distributary replicate` and served over loopback
//! HTTP: in Node, in headless Chromium (the page of examples/browser) and in
//! workerd (the Worker of examples/worker). Each opens a replica, queries
//! it, sees the primary's next writes after a sync, and Node refuses a
//! corrupt object with the native `edge-reader sync`'s own message. Node
//! also searches an FTS5 table, and the `.wasm` must fit its size budget.
//!
//! Needs what scripts/setup.sh installs: clang and the wasm32 target (the
//! build), node and npm (edge-wasm/js: binaryen, playwright-core, workerd)
//! and Debian's chromium.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use distributary_tests::bins::{binary, target_dir, workspace};
use distributary_tests::chain::database_checksum;
use distributary_tests::static_files::StaticServer;
use distributary_tests::synthetic::Rng;
use distributary_tests::wal_primary::WalPrimary;
use distributary_tests::web_servers::{StartServer, WebServer};
use serde_json::Value;

const COUNT_SQL: &str = "SELECT count(*) AS n, max(id) AS last FROM events";

/// The npm package, built once per test run into the target folder.
fn package() -> &'static Path {
    static PACKAGE: OnceLock<PathBuf> = OnceLock::new();
    built_once(&PACKAGE, "edge-wasm-pkg", "")
}

/// The test-only package (edge-wasm's `conformance` feature): the shipped
/// API plus `runReadOnlyConformance`. Never the shipped package: that is
/// built without the feature, and its size guard is checked on it.
fn conformance_package() -> &'static Path {
    static PACKAGE: OnceLock<PathBuf> = OnceLock::new();
    built_once(&PACKAGE, "edge-wasm-conformance-pkg", "conformance")
}

/// Builds the package `name` with edge-wasm's `features` into the target
/// folder, once per test run. Under nextest every test is a process of its
/// own: a file lock lets one of them build while the others wait, and a
/// stamp with nextest's run id lets the others take that build instead of
/// rewriting the files that running tests are reading (two builds at once
/// also race on wasm-opt's output).
fn built_once(package: &'static OnceLock<PathBuf>, name: &str, features: &str) -> &'static Path {
    package.get_or_init(|| {
        let target = target_dir();
        let out = target.join(name);
        let lock = std::fs::File::create(target.join(format!("{name}.lock"))).expect("create the build lock");
        lock.lock().expect("lock the package's build lock");
        let stamp = target.join(format!("{name}.run"));
        let run = std::env::var("NEXTEST_RUN_ID").ok();
        if run.is_some() && std::fs::read_to_string(&stamp).ok() == run {
            return out;
        }
        let _ = std::fs::remove_file(&stamp);
        let mut build = Command::new("bash");
        build.arg(workspace().join("scripts/build-wasm.sh")).arg(&out).env("CARGO_TARGET_DIR", &target);
        if !features.is_empty() {
            // A test build is a little larger: only the shipped one is held to the budget.
            build.env("EDGE_WASM_FEATURES", features).env("WASM_SIZE_BUDGET", "off");
        }
        let status = build.status().expect("run scripts/build-wasm.sh");
        assert!(
            status.success(),
            "scripts/build-wasm.sh failed (run scripts/setup.sh for clang, npm and the wasm32 target; its message is above)"
        );
        if let Some(run) = run {
            std::fs::write(&stamp, run).expect("write the package's run stamp");
        }
        out
    })
}

fn tools() -> PathBuf {
    workspace().join("edge-wasm/js")
}

/// A primary with an `events` table, replicated to a folder store.
struct Primary {
    wal: WalPrimary,
    next: i64,
}

const EVENTS: &str = "CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT);";

impl Primary {
    fn new(rows: i64) -> Primary {
        let mut primary = Primary { wal: WalPrimary::create(EVENTS), next: 1 };
        primary.write(rows);
        primary
    }

    /// A primary of 1 GB: two 500 MB blobs of zeros (so its store stays
    /// small and quick to write) beside `events`.
    fn gigabyte(rows: i64) -> Primary {
        let blobs = "CREATE TABLE blobs (b BLOB);
                     INSERT INTO blobs VALUES (zeroblob(500000000));
                     INSERT INTO blobs VALUES (zeroblob(500000000));";
        let mut primary = Primary { wal: WalPrimary::create(&format!("{EVENTS}{blobs}")), next: 1 };
        primary.write(rows);
        primary
    }

    fn db(&self) -> PathBuf {
        self.wal.db()
    }

    fn store(&self) -> PathBuf {
        self.wal.store()
    }

    fn store_url(&self) -> String {
        self.wal.store_url()
    }

    /// Commits `rows` inserts (one transaction each, or one for all when
    /// there are many) and ships them. Bodies are 200 hex digits drawn from
    /// the row's id: they compress about 2:1, like real rows, so a store of
    /// a few thousand rows is read by range requests in lazy mode.
    fn write(&mut self, rows: i64) {
        let connection = rusqlite::Connection::open(self.db()).unwrap();
        // Few rows: one transaction each, as an app commits; many: one.
        let batch = rows > 100;
        if batch {
            connection.execute_batch("BEGIN").unwrap();
        }
        for _ in 0..rows {
            let mut rng = Rng::new(self.next as u64);
            let body: String = (0..25).map(|_| format!("{:08x}", rng.next_u64() as u32)).collect();
            connection
                .execute("INSERT INTO events (id, body) VALUES (?1, ?2)", rusqlite::params![self.next, body])
                .unwrap();
            self.next += 1;
        }
        if batch {
            connection.execute_batch("COMMIT").unwrap();
        }
        drop(connection);
        self.ship();
    }

    /// Runs `sql` (one transaction) on the primary and ships it.
    fn execute(&self, sql: &str) {
        let connection = rusqlite::Connection::open(self.db()).unwrap();
        connection.execute_batch(&format!("BEGIN; {sql}; COMMIT")).unwrap();
        drop(connection);
        self.ship();
    }

    fn ship(&self) {
        self.wal.ship();
    }

    /// The newest L0 segment in the store.
    fn newest_l0(&self) -> PathBuf {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(self.store())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path().join("l0")))
            .filter(|p| p.is_dir())
            .flat_map(|l0| std::fs::read_dir(l0).unwrap().map(|e| e.unwrap().path()))
            .collect();
        segments.sort();
        segments.pop().expect("an L0 segment in the store")
    }
}

/// A node script that prints one JSON line per step; "sync" on its stdin
/// starts the next.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn spawn(script: &str, args: &[&str]) -> Driver {
        let mut child = Command::new("node")
            .arg(tools().join("test").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node (install nodejs: scripts/setup.sh)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Driver { child, stdin, stdout }
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the node script exited early (its stderr is above)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn sync(&mut self) -> Value {
        self.command("sync")
    }

    fn command(&mut self, command: &str) -> Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(result: &Value) -> i64 {
    result["rows"][0]["n"].as_i64().unwrap_or_else(|| panic!("no row count in {result}"))
}

fn txid(result: &Value) -> u64 {
    result["txid"].as_u64().unwrap_or_else(|| panic!("no TXID in {result}"))
}

/// Native `edge-reader sync` of `db` from `store_url`: its error message
/// without the CLI's context, or `None` on success.
fn native_sync(db: &Path, store_url: &str) -> Option<String> {
    let output = Command::new(binary("edge-reader", "edge-reader"))
        .args(["sync", "--source", store_url, "--db"])
        .arg(db)
        .output()
        .unwrap();
    if output.status.success() {
        return None;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("edge-reader: sync {} from {store_url}: ", db.display());
    let line = stderr.lines().find(|l| l.starts_with(&context)).unwrap_or_else(|| panic!("unexpected: {stderr}"));
    Some(line[context.len()..].to_string())
}

#[test]
fn node_follows_the_primary_and_refuses_a_corrupt_object_like_native() {
    let opened = follow_and_refuse(20, "{}");
    assert_eq!(opened["lazy"], false, "a small store opens in full mode: {opened}");
}

/// The same checks on a lazy replica (issue 19): a store read by range
/// requests (3,000 rows: a snapshot far past the first 64 KiB fetched), its
/// pages exported and checked against the primary's.
#[test]
fn node_lazy_replica_follows_the_primary_and_refuses_a_corrupt_object_like_native() {
    let opened = follow_and_refuse(3000, r#"{"lazy": true}"#);
    assert_eq!(opened["lazy"], true, "{opened}");
}

/// Opens a replica of a primary of `rows` rows with `options`, follows five
/// commits, exports the database, then refuses a corrupt L0 segment with
/// the native reader's message. Returns the first report.
fn follow_and_refuse(rows: i64, options: &str) -> Value {
    let package = package();
    let mut primary = Primary::new(rows);
    let server = StaticServer::start(vec![("/store".into(), primary.store())]);
    let url = format!("{}/store", server.url());
    let mut node = Driver::spawn("node.mjs", &[package.to_str().unwrap(), &url, COUNT_SQL, "[]", options]);

    let opened = node.line();
    assert_eq!(opened["error"], Value::Null, "{opened}");
    assert_eq!(count(&opened), rows);
    let first = txid(&opened);
    assert!(first >= 1);
    // Same bytes as the primary: the rolling checksum matches.
    assert_eq!(opened["checksum"], database_checksum(&primary.db()).unwrap().to_string());

    primary.write(5);
    let synced = node.sync();
    assert_eq!(synced["error"], Value::Null, "{synced}");
    assert_eq!(count(&synced), rows + 5);
    assert_eq!(synced["rows"][0]["last"], rows + 5);
    let second = txid(&synced);
    assert!(second > first, "TXID {second} after {first}");
    assert_eq!(synced["checksum"], database_checksum(&primary.db()).unwrap().to_string());
    // Every page, read back: the primary's database.
    let exported = primary.wal.folder().join("exported.db");
    assert!(node.command(&format!("export {}", exported.display()))["written"].as_u64().unwrap() > 0);
    assert_eq!(database_checksum(&exported).unwrap(), database_checksum(&primary.db()).unwrap());

    // A native replica at the same point, then one corrupt object for both.
    let native = primary.wal.folder().join("replica.db");
    assert_eq!(native_sync(&native, &primary.store_url()), None);
    primary.write(1);
    let segment = primary.newest_l0();
    let mut bytes = std::fs::read(&segment).unwrap();
    // The last byte is the file checksum's: every platform reports the same
    // check (a flipped payload byte reaches zstd first, whose wording for
    // corrupt input differs between its x86-64 assembly and portable C).
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let native_error = native_sync(&native, &primary.store_url()).expect("native sync refuses the corrupt object");
    assert!(native_error.contains("file checksum mismatch"), "{native_error}");

    let refused = node.sync();
    let message = refused["error"].as_str().unwrap_or_else(|| panic!("wasm sync accepted a corrupt object: {refused}"));
    let context = format!("sync replica from {url}: ");
    assert_eq!(message.strip_prefix(&context), Some(native_error.as_str()), "wasm: {message}\nnative: {native_error}");
    // The last good state stays readable.
    assert_eq!(txid(&refused), second);
    assert_eq!(count(&refused), rows + 5);
    opened
}

/// Each bad option of `EdgeReplica.open` is refused with a message that
/// names it and what it takes, before anything is fetched.
#[test]
fn node_refuses_a_bad_option_naming_it_and_what_it_takes() {
    let package = package();
    let primary = Primary::new(5);
    let server = StaticServer::start(vec![("/store".into(), primary.store())]);
    let url = format!("{}/store", server.url());
    let cases = [
        (r#"{"lazy": "maybe"}"#, "options.lazy must be true, false or \"auto\""),
        (r#"{"cacheBytes": 5}"#, "options.cacheBytes must be a number of bytes from 1048576"),
        (r#"{"maxBytes": -1}"#, "options.maxBytes must be a number of bytes from 1"),
        (r#"{"key": 7}"#, "options.key must be a string or a Uint8Array"),
        (r#"{"fetch": 5}"#, "options.fetch must be a function (Request) => Promise<Response>"),
        (r#"{"opfs": "yes"}"#, "options.opfs must be true or false"),
        (r#"{"opfsBytes": 5}"#, "options.opfsBytes must be a whole number of bytes, at least 1048576 (1 MiB)"),
    ];
    for (options, expected) in cases {
        let mut node = Driver::spawn("node.mjs", &[package.to_str().unwrap(), &url, COUNT_SQL, "[]", options]);
        let refused = node.line();
        let message = refused["error"].as_str().unwrap_or_else(|| panic!("{options} was accepted: {refused}"));
        assert!(message.starts_with(&format!("open {url}: ")), "{options}: {message}");
        assert!(message.contains(expected), "{options}: {message}");
    }
}

/// A lazy query that is still fetching pages when a sync publishes the next
/// version finishes on the version it started with: every page as of one
/// TXID. The driver holds the query's snapshot reads until the sync is done,
/// so the two always interleave.
#[test]
fn node_lazy_query_during_sync_reads_one_txid() {
    let package = package();
    let mut primary = Primary::new(3000);
    let server = StaticServer::start(vec![("/store".into(), primary.store())]);
    let url = format!("{}/store", server.url());
    // The driver's own query reads the last leaf only; the raced one scans
    // every leaf, which no query has fetched yet.
    let sql = "SELECT max(id) AS last FROM events";
    let mut node = Driver::spawn("node.mjs", &[package.to_str().unwrap(), &url, sql, "[]", r#"{"lazy": true}"#]);
    let opened = node.line();
    assert_eq!(opened["error"], Value::Null, "{opened}");
    let before = txid(&opened);
    // Rows appended and the first rows rewritten: pages of the snapshot change.
    primary.write(200);
    let connection = rusqlite::Connection::open(primary.db()).unwrap();
    connection.execute_batch("UPDATE events SET body = upper(body) WHERE id <= 300").unwrap();
    drop(connection);
    primary.write(1);

    let raced = node.command("race SELECT count(*) AS n, sum(length(body)) AS bytes FROM events");
    assert_eq!(raced["syncedFirst"], true, "the sync must publish while the query runs: {raced}");
    assert!(txid(&raced) > before);
    assert_eq!(raced["rows"], serde_json::json!([{"n": 3000, "bytes": 600000}]), "the query's own version");
    let after =
        node.command("race SELECT count(*) AS n, sum(length(body)) AS bytes FROM events WHERE body = upper(body)");
    assert_eq!(after["rows"], serde_json::json!([{"n": 300, "bytes": 60000}]), "the new version: {after}");
    let after = node.sync();
    assert_eq!(after["rows"][0]["last"], 3201);
    assert_eq!(after["checksum"], database_checksum(&primary.db()).unwrap().to_string());
}

/// Full-text search at the edge (issue #19): SQLite's FTS5 is in the wasm
/// build. The primary indexes documents (porter stemming, so "replica"
/// finds "replicas"); Node queries the replica with `MATCH`, `bm25()` and
/// `snippet()` and gets the primary's own answer, then the index's next
/// commit after a sync.
#[test]
fn node_searches_an_fts5_table_like_the_primary() {
    const SEARCH_SQL: &str = "SELECT rowid AS id, title, snippet(docs, 1, '[', ']', '...', 6) AS snip, \
        bm25(docs) AS rank FROM docs WHERE docs MATCH ?1 ORDER BY rank, rowid";
    let package = package();
    let primary = Primary::new(0);
    primary.execute(
        "CREATE VIRTUAL TABLE docs USING fts5(title, body, tokenize = 'porter unicode61');
         INSERT INTO docs (rowid, title, body) VALUES
           (1, 'Read replicas', 'A read replica answers queries next to its users; replicas never write.'),
           (2, 'Full-text search', 'FTS5 ranks documents with bm25 and marks the matches with snippet.'),
           (3, 'Object storage', 'The primary ships every commit to object storage, where each replica finds it.'),
           (4, 'Unrelated', 'Nothing to find here.')",
    );
    let server = StaticServer::start(vec![("/store".into(), primary.store())]);
    let url = format!("{}/store", server.url());
    let mut node = Driver::spawn("node.mjs", &[package.to_str().unwrap(), &url, SEARCH_SQL, r#"["replica"]"#]);

    let opened = node.line();
    assert_eq!(opened["error"], Value::Null, "{opened}");
    assert_eq!(ids(&opened), [1, 3], "{opened}");
    // Stemmed: "replicas" matched and is marked as the document says it.
    assert_eq!(opened["rows"][0]["snip"], "A read [replica] answers queries next...", "{opened}");
    assert_same_rows(&opened, &native_search(&primary.db(), SEARCH_SQL, "replica"));

    primary.execute("INSERT INTO docs (rowid, title, body) VALUES (5, 'Replica', 'A replica, a replica, a replica.')");
    let synced = node.sync();
    assert_eq!(synced["error"], Value::Null, "{synced}");
    // The new document, denser in the term and with it in its title, ranks first.
    assert_eq!(ids(&synced), [5, 1, 3], "{synced}");
    assert_same_rows(&synced, &native_search(&primary.db(), SEARCH_SQL, "replica"));
}

fn ids(result: &Value) -> Vec<i64> {
    let rows = result["rows"].as_array().unwrap_or_else(|| panic!("no rows in {result}"));
    rows.iter().map(|row| row["id"].as_i64().unwrap_or_else(|| panic!("no id in {row}"))).collect()
}

/// The search on the primary's file with the test's own SQLite (rusqlite,
/// bundled, which has FTS5), as {id, title, snip, rank} objects.
fn native_search(db: &Path, sql: &str, term: &str) -> Vec<Value> {
    let connection = rusqlite::Connection::open(db).unwrap();
    let mut statement = connection.prepare(sql).unwrap();
    let rows = statement.query_map([term], |row| {
        Ok(serde_json::json!({
            "id": row.get::<_, i64>(0)?,
            "title": row.get::<_, String>(1)?,
            "snip": row.get::<_, String>(2)?,
            "rank": row.get::<_, f64>(3)?,
        }))
    });
    rows.unwrap().collect::<Result<_, _>>().unwrap()
}

/// Same rows in the same order; bm25 scores equal to 1e-9 relative (the
/// primary's SQLite and the wasm build's may be different releases).
fn assert_same_rows(result: &Value, native: &[Value]) {
    let rows = result["rows"].as_array().unwrap_or_else(|| panic!("no rows in {result}"));
    assert_eq!(rows.len(), native.len(), "wasm: {result}\nnative: {native:?}");
    for (wasm, native) in rows.iter().zip(native) {
        for column in ["id", "title", "snip"] {
            assert_eq!(wasm[column], native[column], "{column}: wasm {wasm}, native {native}");
        }
        let (a, b) = (wasm["rank"].as_f64().unwrap(), native["rank"].as_f64().unwrap());
        assert!(b < 0.0 && (a - b).abs() <= 1e-9 * b.abs(), "bm25: wasm {a}, native {b}");
    }
}

/// The wasm reader through real static servers (issue #22): Python's
/// `http.server` (no ETag, no Range) and nginx with the deploy guide's
/// block (Node's fetch asks for gzip, so the manifest comes compressed with
/// a weak ETag).
#[test]
fn node_follows_a_store_behind_python_http_server_and_nginx() {
    let package = package();
    let servers: [(&str, StartServer); 2] = [("python http.server", WebServer::python), ("nginx", WebServer::nginx)];
    for (name, server_at) in servers {
        let mut primary = Primary::new(20);
        let logs = tempfile::tempdir().unwrap();
        let server = server_at(&primary.store(), logs.path());
        let mut node = Driver::spawn("node.mjs", &[package.to_str().unwrap(), &server.url(), COUNT_SQL]);
        let opened = node.line();
        assert_eq!(opened["error"], Value::Null, "{name}: {opened}\n{}", server.log());
        assert_eq!(count(&opened), 20, "{name}");
        assert_eq!(opened["checksum"], database_checksum(&primary.db()).unwrap().to_string(), "{name}");
        primary.write(5);
        let synced = node.sync();
        assert_eq!(synced["error"], Value::Null, "{name}: {synced}\n{}", server.log());
        assert_eq!(count(&synced), 25, "{name}");
        assert_eq!(synced["checksum"], database_checksum(&primary.db()).unwrap().to_string(), "{name}");
    }
}

/// Core's read-only store conformance suite run in wasm, in Node, on the
/// store the wasm reader uses (core's `HttpStore` over JavaScript's
/// `fetch`), against loopback servers as real as the native suite's
/// (tests/tests/origins.rs): Python's `http.server` (no ETag, no Range)
/// and nginx. A failing check fails the script: a reader pointed at another
/// folder than the one the suite writes must fail it.
#[test]
fn node_fetch_store_passes_the_read_only_conformance_suite() {
    let package = conformance_package();
    let servers: [(&str, StartServer); 2] = [("python http.server", WebServer::python), ("nginx", WebServer::nginx)];
    let run = |url: &str, folder: &Path| {
        Command::new("node")
            .arg(tools().join("test/conformance.mjs"))
            .args([package.to_str().unwrap(), url, folder.to_str().unwrap()])
            .output()
            .expect("run node (install nodejs: scripts/setup.sh)")
    };
    for (name, server_at) in servers {
        let (folder, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let server = server_at(folder.path(), logs.path());
        let output = run(&server.url(), folder.path());
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{name}: {stdout}{stderr}\n{}", server.log());
        assert_eq!(stdout.trim(), "passed", "{name}: {stderr}");
        // The same suite writing where the server does not serve: its first
        // read finds nothing, and the run fails naming the check.
        let elsewhere = tempfile::tempdir().unwrap();
        let output = run(&server.url(), elsewhere.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: a failing check passed");
        assert!(stderr.contains("conformance ["), "{name}: {stderr}");
    }
}

/// The optimised `.wasm` within its size guard (docs/BENCHMARKS.md, "wasm
/// edge reader: size"): 1.12 MB raw and 525 KB gzip -9, in bytes of 1000.
/// Issue 19's goal is 1.1 MB / 480 KB: met with FTS5 before lazy mode,
/// which adds about 43 KB gzipped, not yet won back; the guard stops the
/// package growing meanwhile. scripts/build-wasm.sh refuses to finish over
/// the guard too; this says by how much, and prints the two SQLite wasm
/// builds of edge-wasm/js measured the same way, for the comparison table.
#[test]
fn the_wasm_stays_within_its_size_guard() {
    // Issue 19's goal with FTS5 and lazy mode: 1.1 MB raw, 480 KB gzip -9.
    const RAW_BUDGET: usize = 1_100_000;
    const GZIP_BUDGET: usize = 480_000;
    let wasm = package().join("distributary_edge_wasm_bg.wasm");
    let (raw, gzipped) = sizes(&wasm);
    let peers = ["sql.js/dist/sql-wasm.wasm", "@sqlite.org/sqlite-wasm/dist/sqlite3.wasm"];
    for file in std::iter::once(wasm.clone()).chain(peers.iter().map(|p| tools().join("node_modules").join(p))) {
        if file.exists() {
            let (raw, gzipped) = sizes(&file);
            eprintln!("{}: {raw} bytes, {gzipped} gzip -9", file.display());
        }
    }
    assert!(raw <= RAW_BUDGET, "{}: {raw} bytes, over the budget of {RAW_BUDGET}", wasm.display());
    assert!(gzipped <= GZIP_BUDGET, "{}: {gzipped} bytes gzipped, over the budget of {GZIP_BUDGET}", wasm.display());
}

/// A file's size raw and after `gzip -9`, the way docs/BENCHMARKS.md measures.
fn sizes(file: &Path) -> (usize, usize) {
    let raw = std::fs::metadata(file).unwrap().len() as usize;
    let gzip = Command::new("gzip").args(["-9", "-c"]).arg(file).output().expect("run gzip");
    assert!(gzip.status.success(), "gzip -9 {}", file.display());
    (raw, gzip.stdout.len())
}

#[test]
fn chromium_renders_the_example_page_and_syncs() {
    let mut primary = Primary::new(20);
    let (_server, mut browser) = example_page(&primary, "");
    let opened = browser.line();
    assert_eq!(opened["error"], Value::Null, "{opened}");
    assert_eq!(count(&opened), 20);
    assert_eq!(opened["cells"], serde_json::json!(["20"]), "the rendered table");
    follows_three_commits(&mut primary, &mut browser, &opened);
    // A full replica reloaded reads its objects (each whole) from OPFS.
    let reloaded = browser.command("reload");
    assert_eq!(reloaded["error"], Value::Null, "{reloaded}");
    assert_eq!(count(&reloaded), 23);
    assert_eq!(reloaded["network"]["objects"], 0, "every object from OPFS after a reload: {reloaded}");
}

/// The example page opens a 1 GB database lazily (issue 19): it answers
/// after fetching a sliver of the store, then follows new commits.
#[test]
fn chromium_opens_a_gigabyte_database_lazily_and_follows_it() {
    let mut primary = Primary::gigabyte(20);
    let (_server, mut browser, opened) = lazy_example_page(&primary);
    assert!(opened["size"].as_f64().unwrap() >= 1e9, "a 1 GB database: {opened}");
    assert!(opened["stats"]["bytes"].as_f64().unwrap() < 1e6, "a lazy open reads a sliver of the store: {opened}");
    assert_eq!(count(&opened), 20);
    assert_eq!(opened["cells"], serde_json::json!(["20"]));
    follows_three_commits(&mut primary, &mut browser, &opened);
}

/// A reloaded page reads the lazy replica's ranges from OPFS instead of the
/// network (issue 19), and an OPFS entry damaged on disk is fetched again,
/// not served: the answer stays the primary's.
#[test]
fn chromium_reloads_a_lazy_replica_from_opfs_and_refetches_a_damaged_entry() {
    let mut primary = Primary::new(3000);
    let (_server, mut browser, opened) = lazy_example_page(&primary);
    assert_eq!(count(&opened), 3000);
    let fetched = opened["network"]["objects"].as_u64().unwrap();
    assert!(fetched > 0, "a cold replica fetches ranges: {opened}");

    let reloaded = browser.command("reload");
    assert_eq!(reloaded["error"], Value::Null, "{reloaded}");
    assert_eq!(count(&reloaded), 3000);
    assert_eq!(txid(&reloaded), txid(&opened));
    assert_eq!(reloaded["network"]["objects"], 0, "every range from OPFS after a reload: {reloaded}");
    assert!(reloaded["network"]["requests"].as_u64().unwrap() >= 1, "the manifest from the origin: {reloaded}");

    let damaged = browser.command("damage");
    assert!(damaged["damaged"].as_u64().unwrap() > 0, "{damaged}");
    let refetched = browser.command("reload");
    assert_eq!(refetched["error"], Value::Null, "a damaged entry is dropped, not served: {refetched}");
    assert_eq!(count(&refetched), 3000);
    assert_eq!(refetched["network"]["objects"], fetched, "every damaged range fetched again: {refetched}");
    follows_three_commits(&mut primary, &mut browser, &refetched);
}

/// The example page reading `primary`'s store lazily, and its first result.
fn lazy_example_page(primary: &Primary) -> (StaticServer, Driver, Value) {
    let (server, mut browser) = example_page(primary, "lazy=1&");
    let opened = browser.line();
    assert_eq!(opened["error"], Value::Null, "{opened}");
    assert_eq!(opened["lazy"], true, "{opened}");
    (server, browser, opened)
}

/// The example page (examples/browser) in headless Chromium, reading
/// `primary`'s store and counting its events; `options` go first in the
/// page's query string (`name=value&` each).
fn example_page(primary: &Primary, options: &str) -> (StaticServer, Driver) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} not found: apt-get install chromium (scripts/setup.sh)");
    let package = package();
    let server = StaticServer::start(vec![
        ("/".into(), workspace().join("examples/browser")),
        ("/pkg".into(), package.to_path_buf()),
        ("/store".into(), primary.store()),
    ]);
    let page = format!("{}/?{options}store=/store&sql=SELECT%20count(*)%20AS%20n%20FROM%20events", server.url());
    let browser = Driver::spawn("chromium.mjs", &[&page]);
    (server, browser)
}

/// The primary commits three rows; the page's Sync button shows them.
fn follows_three_commits(primary: &mut Primary, browser: &mut Driver, opened: &Value) {
    let before = count(opened);
    primary.write(3);
    let synced = browser.sync();
    assert_eq!(synced["error"], Value::Null, "{synced}");
    assert_eq!(count(&synced), before + 3);
    assert_eq!(synced["cells"], serde_json::json!([(before + 3).to_string()]));
    assert!(txid(&synced) > txid(opened));
}

/// A GET through node's fetch (no HTTP client in this crate).
fn get(url: &str) -> Option<Value> {
    let output = Command::new("node")
        .args(["-e", "fetch(process.argv[1]).then(r => r.text()).then(t => process.stdout.write(t))", url])
        .output()
        .ok()?;
    serde_json::from_slice(&output.stdout).ok()
}

#[test]
fn workerd_runs_the_example_worker() {
    let package = package();
    let mut primary = Primary::new(20);
    let server = StaticServer::start(vec![("/store".into(), primary.store())]);
    // The example's config embeds ./worker.js and ./pkg: assemble them.
    let site = tempfile::tempdir().unwrap();
    for file in ["worker.js", "config.capnp"] {
        std::fs::copy(workspace().join("examples/worker").join(file), site.path().join(file)).unwrap();
    }
    std::fs::create_dir(site.path().join("pkg")).unwrap();
    for entry in std::fs::read_dir(package).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, site.path().join("pkg").join(path.file_name().unwrap())).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut workerd = Command::new(tools().join("node_modules/.bin/workerd"))
        .args(["serve", "config.capnp", "--socket-addr", &format!("http=127.0.0.1:{port}")])
        .current_dir(site.path())
        .env("STORE_URL", format!("{}/store", server.url()))
        .env("ENCRYPTION_KEY", "")
        .spawn()
        .expect("run workerd (npm ci in edge-wasm/js: scripts/setup.sh)");
    let query = format!("http://127.0.0.1:{port}/?sql=SELECT%20count(*)%20AS%20n%20FROM%20events");
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(answer) = get(&query) {
            break answer;
        }
        assert!(Instant::now() < deadline, "workerd did not answer on port {port}");
        assert!(workerd.try_wait().unwrap().is_none(), "workerd exited");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(first["error"], Value::Null, "{first}");
    assert_eq!(count(&first), 20);

    primary.write(3);
    let second = get(&query).expect("workerd answers");
    assert_eq!(second["error"], Value::Null, "{second}");
    assert_eq!(count(&second), 23);
    assert!(txid(&second) > txid(&first));
    let _ = workerd.kill();
    let _ = workerd.wait();
}
