//! Readers follow a store published by any static HTTP server (issue #22),
//! against real servers on loopback: Python's `http.server` over the store
//! folder (Last-Modified only: no ETag, no Range), nginx with the server
//! block of `docs/DEPLOY.md` (ETag, Range, gzip on), and moto's own HTTP
//! interface to a public bucket (S3's ETags). For each: the read-only
//! conformance suite, `sync` to the primary's checksum, `restore`,
//! `snapshots` and `generations`, `serve` following new commits, and two
//! requests per idle poll.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use distributary_core::apply::replica_checksum;
use distributary_core::store::origin::{self, Conditional};
use distributary_core::store::{FileStore, GetOptions, HttpStore, Store, StoreError, conformance};
use distributary_tests::chain::database_checksum;
use distributary_tests::e2e::{create_primary, start_serve_with};
use distributary_tests::moto::MotoServer;
use distributary_tests::programs::{Env, distributary, edge_sync, serve_txid};
use distributary_tests::web_servers::{StartServer, WebServer};

/// Where the primary replicates to, and how readers see it over HTTP.
struct Published {
    /// The replicator's store URL (`file://…` or `s3://…`).
    store_url: String,
    /// The readers' `http://…` source.
    source: String,
    env: Vec<(&'static str, String)>,
    /// Requests the server has answered so far, and its log of them.
    requests: Box<dyn Fn() -> (usize, String)>,
}

fn insert_rows(db: &Path, from: usize, count: usize) {
    let connection = rusqlite::Connection::open(db).unwrap();
    for i in from..from + count {
        connection
            .execute("INSERT INTO events (body) VALUES (?1)", [format!("row {i} {}", "x".repeat(i % 300))])
            .unwrap();
    }
}

/// Ships what the primary has committed to the store.
/// Ships what `db` committed; returns the store's newest TXID, as
/// `replicate --once` prints it. (Not the manifest's: the replicator
/// rewrites the manifest only for a new generation, and readers find newer
/// segments by probing. A test that waited for the manifest's TXID passed
/// only when serve had not yet followed.)
fn replicate_once(db: &Path, published: &Published) -> u64 {
    let output = distributary(&["replicate", "--once", db.to_str().unwrap(), &published.store_url], &published.env);
    assert!(output.status.success(), "replicate --once: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let txid = stdout.lines().filter_map(|line| line.rsplit_once(": TXID ")).next_back();
    txid.and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("replicate --once printed no TXID: {stdout}"))
}

/// The serve metric `distributary_store_requests_total{op=…,result=…}`.
async fn store_requests(client: &reqwest::Client, base: &str, op: &str, result: &str) -> u64 {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let label = format!("distributary_store_requests_total{{op=\"{op}\",result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&label)).map_or(0, |v| v.trim().parse().unwrap())
}

/// Every reader command against `published`, with `dir` for files.
async fn readers_follow(published: Published, dir: &Path) {
    let primary = dir.join("primary.db");
    create_primary(&primary);
    insert_rows(&primary, 0, 200);
    replicate_once(&primary, &published);
    let env: &Env = &published.env;

    // sync: the replica is the primary, page for page.
    let replica = dir.join("replica.db");
    edge_sync(&published.source, &replica, env).unwrap_or_else(|e| panic!("sync from {}: {e}", published.source));
    assert_eq!(replica_checksum(&replica).unwrap(), database_checksum(&primary).unwrap());

    // restore, snapshots, generations.
    let restored = dir.join("restored.db");
    let output = distributary(&["restore", &published.source, "-o", restored.to_str().unwrap()], env);
    assert!(output.status.success(), "restore: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(replica_checksum(&restored).unwrap(), database_checksum(&primary).unwrap());
    for command in ["snapshots", "generations"] {
        let output = distributary(&[command, &published.source, "--json"], env);
        assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
        let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(listed.as_array().is_some_and(|a| !a.is_empty()), "{command}: {listed}");
    }

    // serve follows new commits.
    let served_db = dir.join("served.db");
    let (mut serve, base) = start_serve_with(
        "serve",
        dir,
        &published.source,
        &served_db,
        &["--poll", "200ms", "--manifest-interval", "0s"],
        env,
    );
    let client = reqwest::Client::new();
    for round in 1..=2 {
        insert_rows(&primary, 200 * round, 50);
        let newest = replicate_once(&primary, &published);
        let deadline = Instant::now() + Duration::from_secs(60);
        while serve_txid(&client, &base).await != Some(newest) {
            serve.assert_running();
            assert!(Instant::now() < deadline, "serve did not reach TXID {newest}: {}", serve.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // An idle poll with `--manifest-interval 0s`: a probe for the next
    // segment and a conditional read of the manifest, whatever validators
    // the server sends.
    let idle = |client: reqwest::Client, base: String| async move {
        store_requests(&client, &base, "get_conditional", "not_modified").await
    };
    let wait_for_idle_polls = |from: u64, count: u64| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while idle(client.clone(), base.clone()).await < from + count {
                assert!(Instant::now() < deadline, "serve made no idle polls");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // From the first idle poll on: the poll after a sync reads the
    // manifest unconditionally.
    wait_for_idle_polls(idle(client.clone(), base.clone()).await, 1).await;
    let (polls_before, served_before) = (idle(client.clone(), base.clone()).await, (published.requests)().0);
    wait_for_idle_polls(polls_before, 10).await;
    let (polls, served) =
        (idle(client.clone(), base.clone()).await - polls_before, (published.requests)().0 - served_before);
    // A poll in flight at either reading may add its two requests.
    assert!(
        served as u64 <= 2 * polls + 2 && served as u64 + 2 >= 2 * polls,
        "{served} requests for {polls} idle polls (expected 2 each): {}",
        (published.requests)().1
    );
    serve.terminate();
    assert_eq!(replica_checksum(&served_db).unwrap(), database_checksum(&primary).unwrap());
}

/// The read-only conformance suite through `server_at(folder, logs)`, over
/// a folder a `FileStore` writes.
async fn conformance_through(dir: &Path, server_at: StartServer) {
    let (folder, logs) = (dir.join("conformance"), dir.join("conformance-logs"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let server = server_at(&folder, &logs);
    let reader = HttpStore::new(server.url(), None).unwrap();
    conformance::run_read_only(&FileStore::new(folder), &reader).await;
}

/// With only Last-Modified, a read made once the date is settled (the
/// object unchanged for 2 s) gets a token polled with If-Modified-Since,
/// which the server answers 304.
async fn last_modified_once_settled_is_polled_with_if_modified_since(dir: &Path) {
    let (folder, logs) = (dir.join("settled"), dir.join("settled-logs"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(folder.join("doc.json"), b"{\"format_version\":1}").unwrap();
    let server = WebServer::python(&folder, &logs);
    let reader = HttpStore::new(server.url(), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let (_, meta) = reader.get_bytes("doc.json").await.unwrap();
        let token = meta.etag.expect("a version token");
        if matches!(origin::conditional(&token), Conditional::IfModifiedSince(_)) {
            break token;
        }
        assert!(Instant::now() < deadline, "the Last-Modified never settled: {token:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let polled = reader.get("doc.json", GetOptions { range: None, if_none_match: Some(token) }).await;
    assert!(matches!(polled, Err(StoreError::NotModified { .. })), "{polled:?}");
    let log = server.log();
    assert!(log.lines().last().is_some_and(|l| l.contains("\" 304 ")), "{log}");
}

/// A file:// store published by `server_at`.
fn published_folder(dir: &Path, server_at: StartServer) -> Published {
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let server = server_at(&store, dir);
    Published {
        store_url: format!("file://{}", store.display()),
        source: server.url(),
        env: Vec::new(),
        requests: Box::new(move || (server.requests(), server.log())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_server_without_etag_or_range() {
    let dir = tempfile::tempdir().unwrap();
    conformance_through(dir.path(), WebServer::python).await;
    last_modified_once_settled_is_polled_with_if_modified_since(dir.path()).await;
    readers_follow(published_folder(dir.path(), WebServer::python), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_the_deploy_guides_config() {
    let dir = tempfile::tempdir().unwrap();
    conformance_through(dir.path(), WebServer::nginx).await;
    readers_follow(published_folder(dir.path(), WebServer::nginx), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_servers_own_http_interface() {
    let dir = tempfile::tempdir().unwrap();
    let moto = std::sync::Arc::new(MotoServer::start());
    let bucket = moto.create_bucket();
    moto.make_public(&bucket);
    moto.start_recording();
    let recorder = moto.clone();
    let published = Published {
        store_url: moto.url(&bucket, "db"),
        source: format!("{}/{bucket}/db", moto.endpoint()),
        env: moto.env(),
        // Every GET and HEAD of an object (the replicator's writes are PUTs).
        requests: Box::new(move || {
            let reads: Vec<_> =
                recorder.recorded().into_iter().filter(|r| r.method == "GET" || r.method == "HEAD").collect();
            (reads.len(), format!("{reads:#?}"))
        }),
    };
    readers_follow(published, dir.path()).await;
}

/// A body cut short of its Content-Length is a retryable error naming the
/// object, never a short object.
#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_a_retryable_error_naming_the_object() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nETag: \"v1\"\r\n\r\n");
            let _ = stream.write_all(&[b'{'; 50]);
            // Dropped: the connection closes 50 bytes short.
        }
    });
    let reader = HttpStore::new(url, None).unwrap();
    let error = reader.get_bytes("manifest.json").await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("manifest.json"), "{error}");
}
