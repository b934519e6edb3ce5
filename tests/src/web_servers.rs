//! Real static web servers on loopback that publish a store folder, as
//! users do (issue #22): Python's `http.server` (Last-Modified only: no
//! ETag, no Range) and nginx running the server block of `docs/DEPLOY.md`
//! (ETag, Range, gzip). Each counts the requests it answered, from its own
//! log, and is stopped when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::moto::free_port;
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
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed: run scripts/setup.sh (apt-get install nginx-light)");
        let port = free_port();
        let server = deploy_doc_server_block()
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
            .replace("root /srv/distributary/app-db;", &format!("root {};", folder.display()));
        assert!(server.contains(&format!("127.0.0.1:{port}")) && server.contains(&folder.display().to_string()));
        let prefix = work.join("nginx");
        std::fs::create_dir_all(prefix.join("temp")).unwrap();
        let temp = prefix.join("temp");
        let requests_log = prefix.join("access.log");
        std::fs::write(prefix.join("server.conf"), server).unwrap();
        std::fs::write(
            prefix.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log {log};\n  client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n  \
                 fastcgi_temp_path {temp}/fastcgi;\n  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n  \
                 include {prefix}/server.conf;\n}}\n",
                prefix = prefix.display(),
                log = requests_log.display(),
                temp = temp.display(),
            ),
        )
        .unwrap();
        let process = Process::spawn(
            "nginx",
            work,
            Command::new(nginx)
                .args(["-p", prefix.to_str().unwrap(), "-e", prefix.join("error.log").to_str().unwrap()])
                .args(["-c", prefix.join("nginx.conf").to_str().unwrap()]),
        );
        WebServer::ready(WebServer { _process: process, port, requests_log, request_marker: "\" " })
    }

    fn ready(mut server: WebServer) -> WebServer {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", server.port)).is_err() {
            server._process.assert_running();
            assert!(Instant::now() < deadline, "{} did not start listening", server._process.name);
            std::thread::sleep(Duration::from_millis(50));
        }
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
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/DEPLOY.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let start = text.find("```nginx\n").expect("docs/DEPLOY.md has an nginx block") + "```nginx\n".len();
    let end = start + text[start..].find("\n```").unwrap();
    text[start..end].to_string()
}
