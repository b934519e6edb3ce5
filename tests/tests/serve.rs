//! `edge-reader serve` as a process on a free loopback port: queries with
//! parameters, the authorizer's refusals, the query timeout, the bearer
//! token, read-your-writes with the primary's `/bookmark` (a real
//! `distributary replicate` into moto), sync failures that leave queries on
//! the last good TXID, the idle poll's cost, and graceful shutdown.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use distributary_core::TxId;
use distributary_core::apply::{SyncOptions, sync};
use distributary_core::layout::l0_key;
use distributary_tests::counting::CountingStore;
use distributary_tests::e2e::start_serve_with;
use distributary_tests::history::History;
use distributary_tests::moto::{MotoServer, free_port};
use distributary_tests::process::Process;
use distributary_tests::programs::spawn_replicator;
use distributary_tests::test_store::file_store;
use serde_json::{Value, json};

/// Generous: the test machine has two cores shared with other builds.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running `edge-reader serve`; killed on drop.
struct Serve {
    process: Process,
    base: String,
    client: reqwest::Client,
}

/// A response: status, `X-Replica-Txid` and the body as JSON (or a string).
#[derive(Debug)]
struct Answer {
    status: u16,
    txid: Option<u64>,
    body: Value,
}

impl Serve {
    /// Starts serve on a free port with `extra` arguments (and `--poll
    /// 100ms` unless they set it).
    fn start(dir: &Path, source: &str, db: &Path, extra: &[&str], env: &[(&'static str, String)]) -> Serve {
        let name = format!("serve-{}", free_port());
        let (process, base) = start_serve_with(&name, dir, source, db, &with_poll(extra), env);
        Serve { process, base, client: reqwest::Client::new() }
    }

    fn log(&self) -> String {
        self.process.log()
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response =
            request.timeout(PATIENCE).send().await.unwrap_or_else(|e| panic!("request: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let txid = response.headers().get("x-replica-txid").map(|v| v.to_str().unwrap().parse().unwrap());
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, txid, body }
    }

    async fn post(&self, body: Value) -> Answer {
        self.send(self.client.post(format!("{}/query", self.base)).body(body.to_string())).await
    }

    async fn query(&self, sql: &str) -> Answer {
        self.post(json!({ "sql": sql })).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base))).await
    }

    /// Polls `/status` until `done` holds.
    async fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.get("/status").await.body;
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: last status {status:#}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the replica is ready, asking `/status` with the token.
    async fn wait_status_with_token(&self, token: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self.send(self.client.get(format!("{}/status", self.base)).bearer_auth(token)).await;
            if answer.body["ready"] == true {
                return;
            }
            assert!(Instant::now() < deadline, "never ready: {answer:?}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_txid(&self, txid: u64) -> Value {
        self.wait_status(&format!("reach TXID {txid}"), |s| s["txid"] == txid).await
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate()
    }
}

/// `extra` with `--poll 100ms` unless it sets the poll.
fn with_poll<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let poll: &[&str] = if extra.contains(&"--poll") { &[] } else { &["--poll", "100ms"] };
    poll.iter().chain(extra).copied().collect()
}

const SETUP: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, data BLOB);
     CREATE INDEX items_name ON items (name);
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
     INSERT INTO items SELECT i, 'item ' || i, i * 0.5, zeroblob(i % 7) FROM n;";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_take_positional_named_and_blob_parameters_and_report_their_txid() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let mut history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    history.commit("INSERT INTO items VALUES (1000, 'blob', 1.25, x'00ff10')").await;
    let db = dir.path().join("replica.db");
    let serve = Serve::start(dir.path(), &url, &db, &["--max-rows", "100", "--max-body", "4096"], &[]);
    serve.wait_txid(2).await;

    let answer = serve.post(json!({"sql": "SELECT id, name, price, data FROM items WHERE id IN (?, ?) ORDER BY id", "params": [3, 1000]})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["columns"], json!(["id", "name", "price", "data"]));
    assert_eq!(
        answer.body["rows"],
        json!([[3, "item 3", 1.5, {"base64": "AAAA"}], [1000, "blob", 1.25, {"base64": "AP8Q"}]])
    );
    assert_eq!(answer.body["txid"], 2);
    assert_eq!(answer.txid, Some(2), "the header carries the TXID read at");
    assert_eq!(answer.body["generation"], history.generation.to_string());

    // Named, with and without the prefix; a BLOB parameter; NULL.
    let answer = serve
        .post(
            json!({"sql": "SELECT count(*) AS n, :tag AS tag, $b AS b, @z IS NULL AS z FROM items WHERE price > :min",
                     "params": {"min": 200, ":tag": "x", "$b": {"base64": "3q2+7w=="}, "z": null}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["rows"], json!([[100, "x", {"base64": "3q2+7w=="}, 1]]));

    // GET with a query string, params as JSON text.
    let answer = serve.get("/query?sql=SELECT%20name%20FROM%20items%20WHERE%20id%20%3D%20%3F&params=%5B42%5D").await;
    assert_eq!((answer.status, answer.body["rows"].clone()), (200, json!([["item 42"]])), "{answer:?}");

    // Read-only PRAGMAs and recursive CTEs are queries too.
    assert_eq!(serve.query("PRAGMA table_info(items)").await.body["rows"][1][1], "name");
    assert_eq!(serve.query("SELECT name FROM pragma_index_list('items')").await.body["rows"], json!([["items_name"]]));
    let answer = serve
        .query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) SELECT sum(x) FROM c")
        .await;
    assert_eq!(answer.body["rows"], json!([[55]]));

    // Mistakes get a 4xx that says what is wrong.
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (serve.client.post(format!("{}/query", serve.base)).body("{\"sql\": "), 400, "bad_request"),
        (
            serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELECT 1", "limit": 3}"#),
            400,
            "bad_request",
        ),
        (
            serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELECT ?", "params": [[1]]}"#),
            400,
            "bad_request",
        ),
        (
            serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELECT ?", "params": [1, 2]}"#),
            400,
            "sql_error",
        ),
        (
            serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELECT :a", "params": {"b": 1}}"#),
            400,
            "sql_error",
        ),
        (serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELEC 1"}"#), 400, "sql_error"),
        (
            serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELECT 1; SELECT 2"}"#),
            400,
            "multiple_statements",
        ),
        (
            serve
                .client
                .post(format!("{}/query", serve.base))
                .body(format!(r#"{{"sql": "SELECT '{}'"}}"#, "x".repeat(5000))),
            413,
            "body_too_large",
        ),
        (
            serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELECT * FROM items"}"#),
            422,
            "result_too_large",
        ),
        (serve.client.get(format!("{}/query?sql=SELECT+1&bogus=1", serve.base)), 400, "bad_request"),
        (serve.client.delete(format!("{}/query", serve.base)), 405, "method_not_allowed"),
        (serve.client.get(format!("{}/nothing", serve.base)), 404, "not_found"),
    ];
    for (request, status, code) in cases {
        let answer = serve.send(request).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (status, Some(code)), "{answer:?}");
        assert!(answer.body["error"].as_str().is_some_and(|m| m.len() > 10), "a message: {answer:?}");
    }
    // Still serving after all of that.
    assert_eq!(serve.query("SELECT count(*) FROM items").await.body["rows"], json!([[501]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_class_of_write_is_refused_by_the_authorizer_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    let db = dir.path().join("replica.db");
    let serve = Serve::start(dir.path(), &url, &db, &[], &[]);
    serve.wait_txid(1).await;
    let copy = dir.path().join("copy.db");
    let other = dir.path().join("other.db");
    let refused = [
        "INSERT INTO items (name) VALUES ('x')".to_string(),
        "UPDATE items SET name = 'x'".into(),
        "DELETE FROM items".into(),
        "WITH doomed AS (SELECT id FROM items) DELETE FROM items WHERE id IN doomed".into(),
        "REPLACE INTO items (id, name) VALUES (1, 'x')".into(),
        "CREATE TABLE t (a)".into(),
        "CREATE TEMP TABLE t (a)".into(),
        "CREATE INDEX i ON items (price)".into(),
        "CREATE VIEW v AS SELECT 1".into(),
        "CREATE TRIGGER tr AFTER INSERT ON items BEGIN SELECT 1; END".into(),
        "DROP TABLE items".into(),
        "DROP INDEX items_name".into(),
        "ALTER TABLE items ADD COLUMN extra".into(),
        format!("ATTACH '{}' AS other", other.display()),
        "DETACH main".into(),
        "PRAGMA writable_schema = ON".into(),
        "PRAGMA writable_schema".into(),
        "PRAGMA user_version = 5".into(),
        "PRAGMA journal_mode = DELETE".into(),
        "PRAGMA query_only = OFF".into(),
        "SELECT load_extension('/tmp/nothing.so')".into(),
        format!("VACUUM INTO '{}'", copy.display()),
        "VACUUM".into(),
        "BEGIN".into(),
        "SAVEPOINT s".into(),
        "ANALYZE".into(),
    ];
    for sql in &refused {
        let answer = serve.query(sql).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (403, Some("forbidden")), "{sql}: {answer:?}");
        let message = answer.body["error"].as_str().unwrap();
        assert!(message.starts_with("refused: "), "{sql}: {answer:?}");
        // SQLite has no authorizer action for VACUUM: its own read-only
        // classification refuses it. Everything else is the authorizer's.
        let by_authorizer = !message.contains("the statement would write");
        assert_eq!(by_authorizer, !sql.starts_with("VACUUM"), "{sql}: {message}");
    }
    assert!(!copy.exists() && !other.exists(), "no file was written");
    let answer = serve.query("SELECT count(*), (SELECT count(*) FROM sqlite_schema) FROM items").await;
    assert_eq!(answer.body["rows"], json!([[500, 2]]), "nothing changed");
    assert_eq!(serve.query("PRAGMA user_version").await.body["rows"], json!([[0]]));
    drop(history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runaway_query_is_stopped_by_the_timeout_while_other_queries_keep_being_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let _history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    let db = dir.path().join("replica.db");
    let serve = Arc::new(Serve::start(dir.path(), &url, &db, &["--query-timeout", "2s", "--readers", "4"], &[]));
    serve.wait_txid(1).await;
    let runaway = {
        let serve = Arc::clone(&serve);
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = serve
                .query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
                .await;
            (answer, started.elapsed())
        })
    };
    // While it runs, point queries are answered, each well within the limit.
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    while !runaway.is_finished() {
        let started = Instant::now();
        let answer =
            serve.post(json!({"sql": "SELECT name FROM items WHERE id = ?", "params": [answered % 500 + 1]})).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(answer.status, 200, "{answer:?}");
        answered += 1;
    }
    let (answer, elapsed) = runaway.await.unwrap();
    assert_eq!((answer.status, answer.body["code"].as_str()), (422, Some("query_timeout")), "{answer:?}");
    assert!(answer.body["error"].as_str().unwrap().contains("--query-timeout"), "{answer:?}");
    assert!(elapsed >= Duration::from_millis(1900), "stopped at the limit, not before: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "stopped: {elapsed:?}");
    assert!(answered >= 5, "only {answered} point queries were answered during the runaway one");
    assert!(slowest < Duration::from_secs(2), "a point query waited {slowest:?} behind the runaway one");
    eprintln!("{answered} point queries answered (slowest {slowest:?}) while the runaway one ran {elapsed:?}");
    // The connection that ran it is fine afterwards.
    for _ in 0..8 {
        assert_eq!(serve.query("SELECT count(*) FROM items").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bearer_token_is_required_on_every_route_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let _history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    let token = "s3cret-token-0123456789abcdef";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let db = dir.path().join("replica.db");
    let serve = Serve::start(dir.path(), &url, &db, &["--token-file", token_file.to_str().unwrap()], &[]);
    let query = || serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELECT count(*) FROM items"}"#);
    for path in ["/status", "/metrics"] {
        let answer = serve.get(path).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (401, Some("unauthorized")), "{path}: {answer:?}");
    }
    let answer = serve.send(query()).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    let answer = serve.send(query().bearer_auth("s3cret-token-0123456789abcdeX")).await;
    assert_eq!(answer.status, 401, "a wrong token of the same length: {answer:?}");
    let answer = serve.send(query().bearer_auth("s3cret")).await;
    assert_eq!(answer.status, 401, "a prefix of the token: {answer:?}");
    let answer = serve.send(query().header("authorization", format!("Basic {token}"))).await;
    assert_eq!(answer.status, 401, "another scheme: {answer:?}");
    // /healthz stays open for load balancers.
    let deadline = Instant::now() + PATIENCE;
    while serve.get("/healthz").await.status != 200 {
        assert!(Instant::now() < deadline, "never healthy: {}", serve.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = serve.send(query().bearer_auth(token)).await;
    assert_eq!((answer.status, answer.body["rows"].clone()), (200, json!([[500]])), "{answer:?}");
    let answer = serve.send(serve.client.get(format!("{}/status", serve.base)).bearer_auth(token)).await;
    assert_eq!(answer.status, 200);
}

/// Issue 15 (10): with two `Authorization` headers, the first one alone
/// counted, so a request carrying the token and anything else passed.
/// Such a request is now refused with 400 (two values of a singleton
/// header are a malformed request, not missing credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_with_two_authorization_headers_is_refused_with_400() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let _history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    let token = "s3cret-token-0123456789abcdef";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let db = dir.path().join("replica.db");
    let serve = Serve::start(dir.path(), &url, &db, &["--token-file", token_file.to_str().unwrap()], &[]);
    let query = || serve.client.post(format!("{}/query", serve.base)).body(r#"{"sql": "SELECT count(*) FROM items"}"#);
    let bearer = format!("Bearer {token}");
    for (first, second) in
        [(bearer.as_str(), "Bearer wrong"), ("Bearer wrong", bearer.as_str()), (bearer.as_str(), bearer.as_str())]
    {
        let answer = serve.send(query().header("authorization", first).header("authorization", second)).await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (400, Some("bad_request")),
            "{first} + {second}: {answer:?}"
        );
        assert!(answer.body["error"].as_str().unwrap().contains("2 Authorization headers"), "{answer:?}");
    }
    serve.wait_status_with_token(token).await;
    let answer = serve.send(query().header("authorization", &bearer)).await;
    assert_eq!((answer.status, answer.body["rows"].clone()), (200, json!([[500]])), "one header: {answer:?}");
}

/// Issue 15 (10): `PRAGMA journal_mode`, a read docs/API.md lists as
/// allowed, was refused (SQLite classifies every journal_mode statement as
/// writing), and a NUL byte in the SQL silently dropped what followed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_mode_is_readable_and_sql_holding_a_nul_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let _history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    let db = dir.path().join("replica.db");
    let serve = Serve::start(dir.path(), &url, &db, &[], &[]);
    serve.wait_txid(1).await;
    // Twice: the second one comes from the statement cache.
    for sql in ["PRAGMA journal_mode", "PRAGMA journal_mode", "pragma main.JOURNAL_MODE"] {
        let answer = serve.query(sql).await;
        assert_eq!((answer.status, answer.body["rows"].clone()), (200, json!([["wal"]])), "{sql}: {answer:?}");
    }
    let answer = serve.query("PRAGMA journal_mode = DELETE").await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = serve.query("SELECT count(*) FROM items\u{0} WHERE id < 10").await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("sql_error")), "{answer:?}");
    assert!(answer.body["error"].as_str().unwrap().contains("NUL byte at offset 26"), "{answer:?}");
    let answer = serve.get("/query?sql=SELECT%201%00%3B%20DELETE%20FROM%20items").await;
    assert_eq!(answer.status, 400, "from a query string too: {answer:?}");
    assert_eq!(serve.query("SELECT count(*) FROM items").await.body["rows"], json!([[500]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_a_bookmark_from_the_primary_waits_until_serve_has_the_write() {
    let moto = MotoServer::start();
    let bucket = moto.create_bucket();
    let url = moto.url(&bucket, "app");
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.db");
    let writer = rusqlite::Connection::open(&app).unwrap();
    writer.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    writer.busy_timeout(Duration::from_secs(10)).unwrap();
    writer.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)").unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut replicator = spawn_replicator(&app, &url, &["--metrics-addr", &metrics], &moto.env());
    let client = reqwest::Client::new();
    let bookmark = || async {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = client.get(format!("http://{metrics}/bookmark")).timeout(PATIENCE).send().await
                && response.status() == 200
            {
                let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
                if body["txid"].as_u64().is_some_and(|t| t > 0) {
                    return body;
                }
            }
            assert!(Instant::now() < deadline, "the replicator's /bookmark did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    bookmark().await;
    let db = dir.path().join("replica.db");
    // A 1 s poll, slower than the round trip: the bookmark wait, not luck,
    // is what makes the write visible.
    let serve = Serve::start(dir.path(), &url, &db, &["--poll", "1s"], &moto.env());
    serve.wait_status("ready", |s| s["ready"] == true).await;

    for i in 0..5 {
        writer.execute("INSERT INTO notes (body) VALUES (?1)", [format!("note {i}")]).unwrap();
        let mark = bookmark().await;
        let txid = mark["txid"].as_u64().unwrap();
        let started = Instant::now();
        let answer = serve
            .post(json!({"sql": "SELECT body FROM notes WHERE body = ?", "params": [format!("note {i}")],
                         "min_txid": txid, "generation": mark["generation"], "wait_ms": 30_000}))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}\n{}", serve.log());
        assert_eq!(answer.body["rows"], json!([[format!("note {i}")]]), "the write is visible: {answer:?}");
        assert!(answer.txid.unwrap() >= txid, "read at {:?}, bookmark {txid}", answer.txid);
        eprintln!("write {i}: bookmark TXID {txid}, visible through serve after {:?}", started.elapsed());
    }
    // The header form of the bookmark.
    let answer = serve
        .send(
            serve
                .client
                .post(format!("{}/query", serve.base))
                .header("x-min-txid", "1")
                .body(r#"{"sql": "SELECT count(*) FROM notes"}"#),
        )
        .await;
    assert_eq!((answer.status, answer.body["rows"].clone()), (200, json!([[5]])), "{answer:?}");

    // A bookmark the replica cannot reach in time: a clear 504, and it says
    // where the replica is.
    let far = serve.txid_now().await + 1_000;
    let started = Instant::now();
    let answer =
        serve.send(serve.client.get(format!("{}/query?sql=SELECT+1&min_txid={far}&wait_ms=500", serve.base))).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (504, Some("bookmark_timeout")), "{answer:?}");
    let message = answer.body["error"].as_str().unwrap();
    assert!(message.contains(&format!("TXID {far}")) && message.contains("it is at TXID"), "{message}");
    assert!(started.elapsed() >= Duration::from_millis(450), "waited: {:?}", started.elapsed());
    assert!(answer.txid.is_some(), "the replica's TXID is in the header");
    replicator.kill_nine();
}

impl Serve {
    async fn txid_now(&self) -> u64 {
        self.get("/status").await.body["txid"].as_u64().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_store_down_queries_answer_from_the_last_good_txid_and_health_says_so() {
    let moto = MotoServer::start();
    let bucket = moto.create_bucket();
    let store = moto.store_at(&bucket, "edge").await;
    let dir = tempfile::tempdir().unwrap();
    let mut history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    for i in 0..3 {
        history.commit(&format!("UPDATE items SET price = price + 1 WHERE id = {}", i + 1)).await;
    }
    let db = dir.path().join("replica.db");
    let serve = Serve::start(dir.path(), &moto.url(&bucket, "edge"), &db, &["--max-staleness", "2s"], &moto.env());
    serve.wait_txid(4).await;
    assert_eq!(serve.get("/healthz").await.status, 200);

    drop(moto); // the store goes away
    let status =
        serve.wait_status("report the store down", |s| s["last_error"].is_string() && s["healthy"] == false).await;
    assert_eq!(status["txid"], 4, "{status:#}");
    assert!(status["staleness_seconds"].as_f64().unwrap() > 2.0, "{status:#}");
    assert!(status["consecutive_failures"].as_u64().unwrap() >= 1, "{status:#}");
    let health = serve.get("/healthz").await;
    assert_eq!(health.status, 503, "{health:?}");
    assert!(health.body["last_error"].is_string(), "{health:?}");
    let answer = serve.query("SELECT price FROM items WHERE id = 1").await;
    assert_eq!((answer.status, answer.txid, answer.body["rows"].clone()), (200, Some(4), json!([[1.5]])), "{answer:?}");
    let metrics = serve.get("/metrics").await.body;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("distributary_replica_healthy 0"), "{metrics}");
    assert!(metrics.contains("distributary_replica_syncs_total{result=\"failed\"}"), "{metrics}");
}

/// Copies the objects of `from` that `to` lacks (write to a hidden temp
/// name, then rename, as the file store does), flipping a byte in the middle
/// of `corrupt` if given.
fn mirror(from: &Path, to: &Path, corrupt: Option<&str>) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            mirror(&entry.path(), &target, corrupt);
            continue;
        }
        let mut bytes = std::fs::read(entry.path()).unwrap();
        if corrupt.is_some_and(|key| entry.path().ends_with(key)) {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
        }
        if std::fs::read(&target).ok().as_ref() == Some(&bytes) {
            continue;
        }
        let temp = to.join(format!(".{name}.mirror"));
        std::fs::write(&temp, &bytes).unwrap();
        std::fs::rename(&temp, &target).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_object_keeps_queries_on_the_last_good_txid_until_it_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = file_store(&dir.path().join("written"));
    let (_, url) = file_store(&dir.path().join("served"));
    let mut history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    for i in 0..5 {
        history.commit(&format!("UPDATE items SET name = 'renamed {i}' WHERE id = {}", i + 1)).await;
    }
    mirror(&dir.path().join("written"), &dir.path().join("served"), None);
    let db = dir.path().join("replica.db");
    let serve = Serve::start(dir.path(), &url, &db, &["--max-staleness", "2s"], &[]);
    serve.wait_txid(6).await;

    for i in 5..10 {
        history.commit(&format!("UPDATE items SET name = 'renamed {i}' WHERE id = {}", i + 1)).await;
    }
    let key = l0_key(history.generation, TxId(7));
    mirror(&dir.path().join("written"), &dir.path().join("served"), Some(&key));
    let status = serve.wait_status("report the corrupt object", |s| s["last_error"].is_string()).await;
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains(&key), "the error names the object: {error}");
    assert_eq!(status["txid"], 6, "{status:#}");
    assert!(status["lag_transactions"].as_u64().unwrap() >= 1, "{status:#}");
    let answer = serve.query("SELECT count(*) FROM items WHERE name LIKE 'renamed %'").await;
    assert_eq!((answer.status, answer.txid, answer.body["rows"].clone()), (200, Some(6), json!([[5]])), "{answer:?}");
    let status = serve.wait_status("turn unhealthy", |s| s["healthy"] == false).await;
    assert_eq!(status["txid"], 6, "{status:#}");
    assert_eq!(serve.get("/healthz").await.status, 503);

    // Repaired: the next poll applies everything and health returns.
    mirror(&dir.path().join("written"), &dir.path().join("served"), None);
    let status = serve.wait_status("recover", |s| s["txid"] == 11 && s["healthy"] == true).await;
    assert!(status["last_error"].is_null(), "{status:#}");
    let answer = serve.query("SELECT count(*) FROM items WHERE name LIKE 'renamed %'").await;
    assert_eq!((answer.txid, answer.body["rows"].clone()), (Some(11), json!([[10]])), "{answer:?}");
    assert_eq!(serve.get("/healthz").await.status, 200);
}

/// Sums a counter's samples whose labels contain `labels`.
fn counter(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_poll_costs_one_request_and_never_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let mut history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    let db = dir.path().join("replica.db");
    // The default cadence scaled down twenty times: a manifest check per
    // 30 polls, as 1 s polls with the 30 s manifest interval make.
    let serve = Serve::start(dir.path(), &url, &db, &["--poll", "50ms", "--manifest-interval", "1500ms"], &[]);
    serve.wait_txid(1).await;
    history.commit("UPDATE items SET price = 0 WHERE id = 1").await;
    serve.wait_txid(2).await;
    let metrics = || async { serve.get("/metrics").await.body.as_str().unwrap().to_string() };
    let requests = "distributary_store_requests_total";
    let probes = |text: &str| counter(text, requests, "op=\"head\",result=\"not_found\"");
    // Counted over 100 idle polls, from the first one on.
    let wait_for_probes = |from: u64| async move {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let text = metrics().await;
            if probes(&text) >= from {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "serve made no idle polls\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let before = wait_for_probes(1).await;
    let after = wait_for_probes(probes(&before) + 100).await;
    let delta = |labels: &str| counter(&after, requests, labels) - counter(&before, requests, labels);
    let polls = probes(&after) - probes(&before);
    // Conditional reads of the manifest, and the first one, which has no
    // ETag to send yet (the syncs before read it whole).
    let manifest_checks = delta("op=\"get_conditional\"") + delta("op=\"get\",");
    assert!(manifest_checks >= 2, "the manifest is still checked: {manifest_checks} in {polls} polls\n{after}");
    // A poll in flight at either reading may add one request.
    let per_poll = (delta("") as f64 - 1.0) / polls as f64;
    assert!(per_poll <= 1.05, "{per_poll:.3} requests per idle poll ({polls} polls)\n{after}");
    assert_eq!(delta("") - polls - manifest_checks, 0, "nothing but probes and manifest checks\n{after}");
    assert_eq!(counter(&after, requests, "op=\"list\""), 0, "never a LIST");

    // For comparison, what an idle `apply::sync` (core, as `edge-reader sync`
    // uses it) costs: the whole manifest and the probe, both unconditional.
    let counting = Arc::new(CountingStore::new(Arc::clone(&history.store)));
    let copy = dir.path().join("baseline.db");
    sync(counting.clone(), &copy, &SyncOptions::default()).await.unwrap();
    counting.reset();
    sync(counting.clone(), &copy, &SyncOptions::default()).await.unwrap();
    assert_eq!((counting.gets.load(Ordering::SeqCst), counting.total()), (2, 2), "core's idle sync");
}

/// A busy database: each poll finds one new segment. The sync it runs is
/// planned from the manifest the last check found current, so it costs the
/// probe, the segment and the walk's probe past it, not the manifest again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_poll_does_not_read_the_manifest_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let mut history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    let db = dir.path().join("replica.db");
    let serve = Serve::start(dir.path(), &url, &db, &["--poll", "50ms", "--manifest-interval", "1h"], &[]);
    serve.wait_txid(1).await;
    history.commit("UPDATE items SET price = 0 WHERE id = 1").await;
    serve.wait_txid(2).await;
    let metrics = || async { serve.get("/metrics").await.body.as_str().unwrap().to_string() };
    let requests = "distributary_store_requests_total";
    let checks = |text: &str| counter(text, requests, "op=\"get_conditional\"");
    let before = metrics().await;
    let commits = 20;
    for i in 0..commits {
        history.commit(&format!("UPDATE items SET price = {i} WHERE id = 1")).await;
        serve.wait_txid(3 + i).await;
    }
    let after = metrics().await;
    let delta = |labels: &str| counter(&after, requests, labels) - counter(&before, requests, labels);
    // Each commit is one segment GET: the manifest is not read again (it
    // was read once since the start, by the first busy poll's sync, and
    // the manifest interval has not passed).
    let segments = delta("op=\"get\",result=\"ok\"");
    assert_eq!(segments, commits, "one GET per commit, none for the manifest\n{after}");
    assert_eq!(checks(&after) - checks(&before), 0, "no conditional reads within the manifest interval\n{after}");
    // For the record: a poll right after one that applied something syncs
    // at once (its walk is the probe), others probe first; which one a
    // commit meets depends on the test's timing, so it is measured by
    // `scripts/bench` (a steady 10 commits/s), not asserted here.
    let found_by_probe = delta("op=\"head\",result=\"ok\"");
    let per_commit = (segments + found_by_probe) as f64 / commits as f64;
    println!("{per_commit:.2} requests per commit besides polls that found nothing\n{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_the_query_in_flight_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(&dir.path().join("store"));
    let _history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    let db = dir.path().join("replica.db");
    let mut serve = Serve::start(dir.path(), &url, &db, &["--query-timeout", "2s"], &[]);
    serve.wait_txid(1).await;
    let base = serve.base.clone();
    let client = serve.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .post(format!("{base}/query"))
            .body(
                r#"{"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"}"#,
            )
            .timeout(PATIENCE)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = serve.terminate();
        (status, serve.log())
    })
    .await
    .unwrap();
    let answered = in_flight.await.unwrap();
    assert_eq!(answered.ok(), Some(422), "the query in flight got its answer; log: {}", status.1);
    assert!(status.0.success(), "exit status {:?}: {}", status.0, status.1);
    assert!(status.1.contains("edge-reader: stopped"), "{}", status.1);
}
