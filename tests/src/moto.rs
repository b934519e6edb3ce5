//! A real S3-compatible server (moto) on a free loopback port, for tests.
//!
//! Each [`MotoServer`] is its own process with its own state, stopped when
//! dropped; each test asks for a fresh bucket or prefix.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use distributary_core::store::{S3Store, Store};

/// Credentials moto accepts (it accepts any).
pub const ACCESS_KEY_ID: &str = "test";
/// Credentials moto accepts (it accepts any).
pub const SECRET_ACCESS_KEY: &str = "test";

/// A running moto server.
pub struct MotoServer {
    child: Child,
    port: u16,
    buckets: AtomicU32,
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
        let child = Command::new(moto_command())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start moto_server: {e} (install it with: pip install 'moto[server]', or run scripts/setup.sh)")
            });
        let server = MotoServer { child, port, buckets: AtomicU32::new(0) };
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
        Arc::new(
            S3Store::connect_with(
                bucket.to_string(),
                prefix.to_string(),
                Some(self.endpoint()),
                Some("us-east-1".into()),
                None,
                Some((ACCESS_KEY_ID.into(), SECRET_ACCESS_KEY.into())),
            )
            .await
            .expect("connect to moto"),
        )
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
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a loopback port")
}

fn moto_command() -> String {
    std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_string())
}
