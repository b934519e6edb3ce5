//! nginx as tests run it: one process in the foreground (stopped with the
//! test), unprivileged, every file under a prefix folder of its own, around
//! a server block taken from `docs/DEPLOY.md` (so the documented
//! configuration is the one tested). Used by [`crate::web_servers`] (the
//! static server) and [`crate::cdn`] (the CDN).

use std::path::Path;
use std::process::Command;

use crate::process::Process;

/// What goes into nginx.conf around the server block.
pub struct Config<'a> {
    /// `error_log`'s level, or "" for nginx's default.
    pub error_level: &'a str,
    /// Lines at the top level after the error log (`events { ... }` at least).
    pub main: &'a str,
    /// Lines inside `http { }` before the server block (`access_log` ...).
    pub http: &'a str,
}

/// Writes `prefix/nginx.conf` (the server block as `prefix/server.conf`)
/// and starts nginx on it; its stderr goes to `work/<name>.log`. Panics
/// with the fix if nginx is not installed.
pub fn start(name: &str, work: &Path, prefix: &Path, server: &str, config: &Config) -> Process {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: run scripts/setup.sh (apt-get install nginx-light)");
    let temp = prefix.join("temp");
    std::fs::create_dir_all(&temp).unwrap();
    std::fs::write(prefix.join("server.conf"), server).unwrap();
    let level = if config.error_level.is_empty() { String::new() } else { format!(" {}", config.error_level) };
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log{level};\n{main}\n\
             http {{\n  {http}\n  client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n  \
             fastcgi_temp_path {temp}/fastcgi;\n  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n  \
             include {prefix}/server.conf;\n}}\n",
            prefix = prefix.display(),
            temp = temp.display(),
            main = config.main,
            http = config.http,
        ),
    )
    .unwrap();
    Process::spawn(
        name,
        work,
        Command::new(nginx)
            .args(["-p", prefix.to_str().unwrap(), "-e", prefix.join("error.log").to_str().unwrap()])
            .args(["-c", prefix.join("nginx.conf").to_str().unwrap()]),
    )
}

/// The first ```` ```nginx ```` block of `docs/DEPLOY.md` after the line
/// `heading` (from the top when it is None).
pub fn deploy_doc_block(heading: Option<&str>) -> String {
    let doc = crate::bins::workspace().join("docs/DEPLOY.md");
    let mut text = std::fs::read_to_string(&doc).unwrap();
    if let Some(heading) = heading {
        let section =
            text.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("docs/DEPLOY.md has no line {heading:?}"));
        text.drain(..section);
    }
    let start = text.find("```nginx\n").expect("docs/DEPLOY.md has an nginx block there") + "```nginx\n".len();
    let end = start + text[start..].find("\n```").unwrap();
    text[start..end].to_string()
}
