//! The compactor Lambda as S3 drives it: real S3 event notification JSON,
//! and the real Lambda runtime API (`cargo lambda watch` on a loopback port)
//! running the function binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use aws_lambda_events::event::s3::S3Event;

use crate::moto::{MotoServer, free_port};
use crate::process::Process;

/// Encodes a key the way S3 event notifications do (form encoding).
pub fn event_key(key: &str) -> String {
    let mut out = String::new();
    for byte in key.bytes() {
        match byte {
            b' ' => out.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'*' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A real S3 notification: one record per `(event name, bucket, full key)`.
pub fn s3_event(records: &[(&str, &str, String)]) -> S3Event {
    let records: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, (name, bucket, key))| {
            serde_json::json!({
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-01-01T00:10:00.000Z",
                "eventName": name,
                "userIdentity": { "principalId": "AWS:AIDAEXAMPLE" },
                "requestParameters": { "sourceIPAddress": "127.0.0.1" },
                "responseElements": { "x-amz-request-id": format!("REQ{i}"), "x-amz-id-2": "EXAMPLE/id2" },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "distributary-l0",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": { "principalId": "EXAMPLE" },
                        "arn": format!("arn:aws:s3:::{bucket}")
                    },
                    "object": {
                        "key": event_key(key),
                        "size": 1024,
                        "eTag": "0123456789abcdef0123456789abcdef",
                        "sequencer": format!("0055AED6DCD90281E{i}")
                    }
                }
            })
        })
        .collect();
    let json = serde_json::json!({ "Records": records }).to_string();
    serde_json::from_str(&json).expect("a real S3 event parses")
}

/// The function's crate, where `cargo lambda` runs.
fn lambda_dir() -> PathBuf {
    crate::bins::workspace().join("lambda")
}

/// `cargo lambda watch` serving the runtime API for the compactor function,
/// configured to reach moto; stopped on drop.
pub struct LambdaWatch {
    pub port: u16,
    process: Process,
}

impl LambdaWatch {
    /// Starts the emulator with the function's environment (`env`, e.g. its
    /// `DISTRIBUTARY_L1_WINDOW`) and waits until it listens. Its log goes to
    /// `<log_dir>/lambda.log`.
    pub fn start(moto: &MotoServer, env: &[(&str, String)], log_dir: &std::path::Path) -> Result<LambdaWatch> {
        let port = free_port();
        let mut watch = Command::new("cargo");
        watch
            .args(["lambda", "watch", "--ignore-changes", "--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .arg("--env-var")
            .arg(format!("DISTRIBUTARY_S3_ENDPOINT={}", moto.endpoint()))
            .current_dir(lambda_dir())
            .stdin(Stdio::null());
        for (name, value) in moto.env().iter().map(|(n, v)| (*n, v)).chain(env.iter().map(|(n, v)| (*n, v))) {
            watch.arg("--env-var").arg(format!("{name}={value}"));
        }
        let mut process = Process::spawn("lambda", log_dir, &mut watch);
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(process.exited().is_none(), "cargo lambda watch exited (run scripts/setup.sh):\n{}", process.log());
            ensure!(Instant::now() < deadline, "cargo lambda watch did not listen on {port}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(LambdaWatch { port, process })
    }

    /// Invokes the function with `event` through the runtime API, as
    /// `cargo lambda invoke` does, and returns its response. The first
    /// invocation builds the function: allow for a cold cache.
    pub async fn invoke(&self, event: &S3Event) -> Result<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/2015-03-31/functions/distributary-lambda/invocations", self.port);
        let response = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(serde_json::to_string(event).context("encode the event")?)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .with_context(|| format!("invoke {url}"))?;
        let status = response.status();
        let body = response.text().await.context("read the invocation's response")?;
        ensure!(status.is_success(), "invocation answered {status}: {body}");
        serde_json::from_str(&body).with_context(|| format!("the function's response {body}"))
    }

    /// The emulator's log (its own lines and the function's).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Where `cargo lambda invoke` reaches it.
    pub fn invoke_args(&self) -> Vec<String> {
        ["--invoke-address", "127.0.0.1", "--invoke-port"]
            .map(String::from)
            .into_iter()
            .chain([self.port.to_string()])
            .collect()
    }

    /// The crate folder `cargo lambda invoke` runs in.
    pub fn dir(&self) -> PathBuf {
        lambda_dir()
    }
}
