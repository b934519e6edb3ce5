//! A static file server on a free loopback port, for readers that fetch a
//! store over HTTP (the wasm edge reader in Node, Chromium and workerd):
//! GET and HEAD with single byte ranges, ETags, CORS, and a folder per URL
//! prefix. Stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A running server.
pub struct StaticServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    /// Serves `mounts`: URL prefix (`"/store"`, `"/"`) → folder. The longest
    /// matching prefix wins.
    pub fn start(mounts: Vec<(String, PathBuf)>) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the static server");
        let addr = listener.local_addr().expect("static server address");
        let stop = Arc::new(AtomicBool::new(false));
        let mut mounts = mounts;
        mounts.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let mounts = Arc::new(mounts);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let mounts = mounts.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, &mounts);
                });
            }
        });
        StaticServer { addr, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves requests on one connection until the client closes it.
fn serve_connection(stream: TcpStream, mounts: &[(String, PathBuf)]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut range = None;
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "range" => range = Some(value.trim().to_string()),
                    "content-length" => content_length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        // Drain any request body (none expected).
        std::io::copy(&mut (&mut reader).take(content_length as u64), &mut std::io::sink())?;
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        respond(&mut writer, method, target, range.as_deref(), mounts)?;
    }
}

fn respond(
    out: &mut TcpStream,
    method: &str,
    target: &str,
    range: Option<&str>,
    mounts: &[(String, PathBuf)],
) -> std::io::Result<()> {
    let cors = "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: Range, If-None-Match\r\nAccess-Control-Expose-Headers: ETag, Content-Range, Content-Length\r\n";
    if method == "OPTIONS" {
        return write!(out, "HTTP/1.1 204 No Content\r\n{cors}Content-Length: 0\r\n\r\n");
    }
    let path = target.split('?').next().unwrap_or("/");
    let Some(file) = resolve(path, mounts) else {
        return write!(out, "HTTP/1.1 404 Not Found\r\n{cors}Content-Length: 0\r\n\r\n");
    };
    let Ok(bytes) = std::fs::read(&file) else {
        return write!(out, "HTTP/1.1 404 Not Found\r\n{cors}Content-Length: 0\r\n\r\n");
    };
    let etag = format!("\"{:x}-{:x}\"", bytes.len(), fnv1a(&bytes));
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let (status, body, content_range) = match range.and_then(|r| parse_range(r, bytes.len())) {
        Some(Ok((start, end))) => {
            ("206 Partial Content", &bytes[start..end], Some(format!("bytes {start}-{}/{}", end - 1, bytes.len())))
        }
        Some(Err(())) => {
            return write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\n{cors}Content-Range: bytes */{}\r\nContent-Length: 0\r\n\r\n",
                bytes.len()
            );
        }
        None => ("200 OK", &bytes[..], None),
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\n{cors}Content-Type: {content_type}\r\nContent-Length: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\nCache-Control: no-cache\r\n",
        body.len()
    )?;
    if let Some(content_range) = content_range {
        write!(out, "Content-Range: {content_range}\r\n")?;
    }
    out.write_all(b"\r\n")?;
    if method != "HEAD" {
        out.write_all(body)?;
    }
    out.flush()
}

/// The file for a URL path, if it is under a mount and exists.
fn resolve(path: &str, mounts: &[(String, PathBuf)]) -> Option<PathBuf> {
    let (prefix, root) = mounts.iter().find(|(prefix, _)| {
        path == prefix || path.starts_with(&format!("{}/", prefix.trim_end_matches('/'))) || prefix == "/"
    })?;
    let rest = path[prefix.trim_end_matches('/').len()..].trim_start_matches('/');
    if rest.split('/').any(|part| part == ".." || part.starts_with('.')) {
        return None;
    }
    let mut file = root.join(rest);
    if file.is_dir() {
        file = file.join("index.html");
    }
    file.is_file().then_some(file)
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range: `None` if
/// absent or unparsable (serve everything), `Err` if unsatisfiable.
fn parse_range(value: &str, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = value.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.parse::<usize>().ok(), end.parse::<usize>().ok()) {
        (Some(start), Some(end)) => (start, end.saturating_add(1).min(len)),
        (Some(start), None) if end.is_empty() => (start, len),
        (None, Some(suffix)) if start.is_empty() => (len.saturating_sub(suffix), len),
        _ => return None,
    };
    Some(if start >= len || start >= end { Err(()) } else { Ok((start, end)) })
}

/// A cheap content hash for ETags (FNV-1a).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
