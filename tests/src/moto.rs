//! A real S3-compatible server (moto) on a free loopback port, for tests.
//!
//! Each [`MotoServer`] is its own process with its own state, stopped when
//! dropped; each test asks for a fresh bucket or prefix.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use distributary_core::store::{S3Store, Store};

/// Credentials moto accepts (it accepts any).
pub const ACCESS_KEY_ID: &str = "test";
/// Credentials moto accepts (it accepts any).
pub const SECRET_ACCESS_KEY: &str = "test";

/// An S3 store at `endpoint` (moto, or a proxy in front of it) with the
/// credentials moto accepts.
pub async fn s3_store(endpoint: &str, bucket: &str, prefix: &str) -> S3Store {
    S3Store::connect_with(
        bucket.to_string(),
        prefix.to_string(),
        Some(endpoint.to_string()),
        Some("us-east-1".into()),
        None,
        Some((ACCESS_KEY_ID.into(), SECRET_ACCESS_KEY.into())),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

/// A running moto server.
pub struct MotoServer {
    child: Child,
    port: u16,
    buckets: AtomicU32,
    recording: PathBuf,
}

/// One HTTP request as moto's recorder saw it (see
/// [`MotoServer::start_recording`]).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `PUT`, `HEAD`, `DELETE`, `POST`.
    pub method: String,
    /// Path and query string, e.g. `/bucket/prefix/l0/0000000000000002.seg`.
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

impl RecordedRequest {
    /// The object key (after `/bucket/`), or `None` for a bucket-level
    /// request (LIST, bulk DELETE, bucket settings).
    pub fn key(&self) -> Option<&str> {
        let path = self.target.split('?').next().unwrap_or_default();
        path.trim_start_matches('/').split_once('/').map(|(_, key)| key).filter(|key| !key.is_empty())
    }

    /// A LIST (ListObjects or ListObjectsV2): a GET on the bucket itself.
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.key().is_none()
    }
}

impl MotoServer {
    /// Starts `moto_server` on a free loopback port and waits until it
    /// answers. Panics with the fix if moto is not installed.
    pub fn start() -> MotoServer {
        MotoServer::start_on(free_port())
    }

    /// Starts `moto_server` on a given loopback port (for tests where the
    /// store is unreachable at first).
    pub fn start_on(port: u16) -> MotoServer {
        // Each server records to its own file, so tests running at once
        // never mix their request logs.
        let recording = std::env::temp_dir().join(format!("moto-recording-{}-{port}.jsonl", std::process::id()));
        let child = Command::new(moto_command())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start moto_server: {e} (install it with: pip install 'moto[server]', or run scripts/setup.sh)")
            });
        let server = MotoServer { child, port, buckets: AtomicU32::new(0), recording };
        server.wait_ready();
        server
    }

    /// The server's endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a new, empty bucket and returns its name.
    pub fn create_bucket(&self) -> String {
        let n = self.buckets.fetch_add(1, Ordering::SeqCst);
        let bucket = format!("test-{}-{n}", std::process::id());
        let status = self.raw_request("PUT", &format!("/{bucket}"), "");
        assert!(status == 200, "create bucket {bucket}: HTTP {status}");
        bucket
    }

    /// Creates a bucket with a given name.
    pub fn create_named_bucket(&self, bucket: &str) {
        let status = self.raw_request("PUT", &format!("/{bucket}"), "");
        assert!(status == 200, "create bucket {bucket}: HTTP {status}");
    }

    /// Lets anyone read `bucket`'s objects without signing (a public bucket
    /// behind a CDN), through a bucket policy.
    pub fn make_public(&self, bucket: &str) {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}}]}}"#
        );
        let status = self.raw_request("PUT", &format!("/{bucket}?policy"), &policy);
        assert!(status == 200 || status == 204, "set policy of {bucket}: HTTP {status}");
    }

    /// The `s3://` URL of `bucket/prefix` on this server.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3://{bucket}/{prefix}?endpoint={}&region=us-east-1", self.endpoint())
    }

    /// Environment variables a child process needs to reach this server
    /// with the standard credential chain, and nothing else.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// An S3 store on a fresh bucket of this server.
    pub async fn store(&self, prefix: &str) -> Arc<dyn Store> {
        self.store_at(&self.create_bucket(), prefix).await
    }

    /// An S3 store on an existing bucket of this server.
    pub async fn store_at(&self, bucket: &str, prefix: &str) -> Arc<dyn Store> {
        Arc::new(s3_store(&self.endpoint(), bucket, prefix).await)
    }

    /// A client of this server with no bucket: the base a compactor's
    /// handler places on the bucket and prefix each event names.
    pub async fn base_store(&self) -> S3Store {
        s3_store(&self.endpoint(), "", "").await
    }

    /// Starts moto's request recorder with an empty log: from now on the
    /// server writes down every request it receives, as it received it
    /// (retries and all), which is what proves a client's request count.
    pub fn start_recording(&self) {
        let status = self.raw_request("POST", "/moto-api/recorder/reset-recording", "");
        assert!(status == 200, "reset moto's recording: HTTP {status}");
        let status = self.raw_request("POST", "/moto-api/recorder/start-recording", "");
        assert!(status == 200, "start moto's recording: HTTP {status}");
    }

    /// Stops the recorder and returns the requests it saw since
    /// [`MotoServer::start_recording`], in arrival order.
    pub fn stop_recording(&self) -> Vec<RecordedRequest> {
        let status = self.raw_request("POST", "/moto-api/recorder/stop-recording", "");
        assert!(status == 200, "stop moto's recording: HTTP {status}");
        self.recorded()
    }

    /// The requests recorded so far, in arrival order, without stopping.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        let log = std::fs::read_to_string(&self.recording).unwrap_or_default();
        log.lines()
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).expect("a line of moto's recording");
                let url = entry["url"].as_str().unwrap_or_default();
                // `http://host:port/path?query` -> `/path?query`.
                let target = url.split_once("://").map_or(url, |(_, rest)| rest);
                let target = target.find('/').map_or("/", |i| &target[i..]).to_string();
                let range = entry["headers"].as_object().and_then(|headers| {
                    headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("range")).map(|(_, v)| v.to_string())
                });
                RecordedRequest { method: entry["method"].as_str().unwrap_or_default().to_string(), target, range }
            })
            .collect()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.raw_request("GET", "/", "") == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not answer on port {} within 60 s", self.port);
    }

    /// Sends an unsigned request (moto does not check signatures) and
    /// returns the status code (0 if the server could not be reached).
    fn raw_request(&self, method: &str, path: &str, body: &str) -> u16 {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return 0;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return 0;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.recording);
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a loopback port")
}

fn moto_command() -> String {
    std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_string())
}
