//! Real static web servers on loopback that publish a store folder, as
//! users do (issue #22): Python's `http.server` (Last-Modified only: no
//! ETag, no Range) and nginx running the server block of `docs/DEPLOY.md`
//! (ETag, Range, gzip). Each counts the requests it answered, from its own
//! log, and is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::moto::free_port;
use crate::nginx;
use crate::process::Process;

/// How a test starts a kind of server: `(folder, work) -> server`.
pub type StartServer = fn(&Path, &Path) -> WebServer;

/// A running web server over one folder.
pub struct WebServer {
    _process: Process,
    port: u16,
    /// The file it logs each request to, one line per request.
    requests_log: PathBuf,
    /// What marks a request line in that log.
    request_marker: &'static str,
}

impl WebServer {
    /// `python3 -m http.server` over `folder`, logging into `work`.
    pub fn python(folder: &Path, work: &Path) -> WebServer {
        let port = free_port();
        let process = Process::spawn(
            "python-http-server",
            work,
            Command::new("python3")
                .args(["-u", "-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--directory", folder.to_str().unwrap()]),
        );
        // It logs each request to stderr: `127.0.0.1 - - [date] "GET /x HTTP/1.1" 200 -`.
        let requests_log = crate::process::log_path(work, "python-http-server");
        WebServer::ready(WebServer { _process: process, port, requests_log, request_marker: "\" " })
    }

    /// nginx over `folder` with the server block of `docs/DEPLOY.md`
    /// (its `listen` and `root` replaced), run in the foreground from
    /// `work`. Panics with the fix if nginx is not installed.
    pub fn nginx(folder: &Path, work: &Path) -> WebServer {
        let port = free_port();
        let server = deploy_doc_server_block()
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
            .replace("root /srv/distributary/app-db;", &format!("root {};", folder.display()));
        assert!(server.contains(&format!("127.0.0.1:{port}")) && server.contains(&folder.display().to_string()));
        let prefix = work.join("nginx");
        let requests_log = prefix.join("access.log");
        let config = nginx::Config {
            error_level: "",
            main: "events { worker_connections 64; }",
            http: &format!("access_log {};", requests_log.display()),
        };
        let process = nginx::start("nginx", work, &prefix, &server, &config);
        WebServer::ready(WebServer { _process: process, port, requests_log, request_marker: "\" " })
    }

    fn ready(mut server: WebServer) -> WebServer {
        server._process.wait_listening(server.port);
        server
    }

    /// `http://127.0.0.1:PORT`: the folder's root.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests it has answered so far.
    pub fn requests(&self) -> usize {
        let log = std::fs::read_to_string(&self.requests_log).unwrap_or_default();
        log.lines().filter(|line| line.contains(" HTTP/1.") && line.contains(self.request_marker)).count()
    }

    /// Its log of requests, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.requests_log).unwrap_or_default()
    }
}

/// The first ```` ```nginx ```` block of `docs/DEPLOY.md`.
pub fn deploy_doc_server_block() -> String {
    nginx::deploy_doc_block(None)
}
