//! The primary's metrics endpoints as a scraper meets them: `compact
//! --watch --metrics-addr` serves the compactor's metrics, and the
//! replicator's endpoint (on hyper now) answers requests larger than the
//! 4 KiB its hand-written server read, and a second request on a kept-alive
//! connection.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use distributary_tests::bins::binary;
use distributary_tests::e2e::create_primary;
use distributary_tests::moto::free_port;
use distributary_tests::process::Process;

fn distributary() -> PathBuf {
    binary("distributary", "distributary")
}

/// Generous: two cores shared with other builds.
const PATIENCE: Duration = Duration::from_secs(60);

/// `GET {addr}/metrics` until `ready` holds for its text.
async fn metrics_when(addr: &str, process: &Process, ready: impl Fn(&str) -> bool) -> String {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = client.get(format!("http://{addr}/metrics")).send().await {
            let text = response.text().await.unwrap();
            if ready(&text) {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "metrics never ready on {addr}\n{}", process.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample line that starts with `series `.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn replicate_once(db: &Path, url: &str) {
    let output = Command::new(distributary()).args(["replicate", "--once"]).arg(db).arg(url).output().unwrap();
    assert!(output.status.success(), "replicate --once: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_watch_serves_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_primary(&db);
    let url = format!("file://{}", dir.path().join("store").display());
    replicate_once(&db, &url);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut compactor = Process::spawn(
        "compact",
        dir.path(),
        Command::new(distributary()).args(["compact", "--watch", "--interval", "100ms", "--metrics-addr", &addr, &url]),
    );
    let store = format!("{{store=\"{url}\"");
    let passes = format!("distributary_compaction_passes_total{store},result=\"ok\"}}");
    let text = metrics_when(&addr, &compactor, |text| sample(text, &passes).is_some_and(|n| n >= 3.0)).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let last_success = sample(&text, &format!("distributary_compaction_last_success_timestamp_seconds{store}}}"));
    assert!(last_success.is_some_and(|t| (now - t).abs() < 60.0), "{text}");
    // The first pass ran (nothing known yet) and read the manifest after it.
    let newest = sample(&text, &format!("distributary_compaction_newest_commit_timestamp_seconds{store}}}"));
    assert!(newest.is_some_and(|t| t > 0.0 && t <= now), "{text}");
    assert!(sample(&text, &format!("distributary_compaction_backlog_transactions{store}}}")).is_some(), "{text}");
    assert_eq!(sample(&text, &format!("distributary_compaction_passes_total{store},result=\"failed\"}}")), None);
    assert!(compactor.terminate().success(), "{}", compactor.log());
}

/// Reads one HTTP/1.1 response (status line, headers, a Content-Length
/// body) from `reader`; returns the status line and the body.
fn read_response(reader: &mut impl BufRead) -> (String, String) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status.trim_end().to_string(), String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicators_endpoint_takes_large_requests_and_keeps_connections_alive() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_primary(&db);
    let url = format!("file://{}", dir.path().join("store").display());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut replicator = Process::spawn(
        "replicate",
        dir.path(),
        Command::new(distributary())
            .args(["replicate", "--sync-interval", "100ms", "--metrics-addr", &addr])
            .arg(&db)
            .arg(&url),
    );
    metrics_when(&addr, &replicator, |text| text.contains("distributary_shipped_txid{")).await;

    // 16 KiB of headers, as a proxy's cookies or tracing headers can make:
    // the hand-written server read 4 KiB and closed on the rest unread (a
    // reset the client could see before the answer).
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/status"))
        .header("x-padding", "p".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let status: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(status[0]["url"], url.as_str(), "{status:#}");

    // Two requests on one connection, the second sent after the first
    // answer (the hand-written server closed after every response).
    let stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for path in ["/metrics", "/status"] {
        write!(writer, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let (status, body) = read_response(&mut reader);
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}: {body}");
        assert!(body.contains(if path == "/metrics" {
            "distributary_replication_lag_seconds"
        } else {
            "shipped_txid"
        }));
    }
    assert!(replicator.terminate().success(), "{}", replicator.log());
}
