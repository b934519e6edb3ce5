//! nginx as the CDN stand-in (issue #18): a caching reverse proxy on
//! loopback running the CDN block of `docs/DEPLOY.md` ("Readers behind a
//! CDN") in front of an origin, with an access log that records, per
//! request, whether the cache answered it or the origin did.
//!
//! The block is the one place the cache policy is written: the docs show
//! it, this harness runs it with only its `listen`, cache path and origin
//! replaced, so the numbers in `docs/BENCHMARKS.md` are those of the
//! documented configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::moto::free_port;
use crate::nginx;
use crate::process::Process;

/// The documented origin the harness replaces (the doc's placeholder bucket).
const DOC_ORIGIN: &str = "proxy_pass https://my-bucket.s3.us-east-1.amazonaws.com;";
/// The documented cache folder the harness replaces.
const DOC_CACHE_PATH: &str = "proxy_cache_path /var/cache/nginx/distributary ";
/// The documented listen address the harness replaces.
const DOC_LISTEN: &str = "listen 8080;";

/// The access log's format: fields separated by spaces, the upstream
/// address last because nginx writes a list (`a, b`) when it retried.
const LOG_FORMAT: &str =
    "$msec $status $upstream_cache_status $request_method $uri $connection_requests $upstream_addr";

/// nginx caching in front of an origin; stopped when dropped.
pub struct Cdn {
    process: Process,
    port: u16,
    access_log: PathBuf,
}

/// One request as the CDN's access log recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// When it was answered, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The HTTP status sent to the reader.
    pub status: u16,
    /// `$upstream_cache_status`: HIT, MISS, EXPIRED, UPDATING, STALE,
    /// REVALIDATED, BYPASS, or `-` (the cache was not involved).
    pub cache: String,
    /// The object's path.
    pub uri: String,
    /// Whether nginx sent a request to the origin for it.
    pub went_to_origin: bool,
}

impl Served {
    /// Answered from the cache without asking the origin (a REVALIDATED
    /// answer asked it, conditionally).
    pub fn is_hit(&self) -> bool {
        matches!(self.cache.as_str(), "HIT" | "STALE" | "UPDATING")
    }
}

/// What the log says of a time window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheStats {
    /// Requests readers sent to the CDN.
    pub requests: u64,
    /// Of those, answered from the cache alone.
    pub hits: u64,
    /// Requests the CDN sent to the origin.
    pub origin_requests: u64,
}

impl CacheStats {
    /// Hits over requests (0 without requests).
    pub fn hit_ratio(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.hits as f64 / self.requests as f64 }
    }
}

impl Cdn {
    /// nginx on a free loopback port with the `docs/DEPLOY.md` CDN block,
    /// proxying to `origin` (plain HTTP, path-style: readers put the bucket
    /// in their path), its files under `work/cdn`. `connections` bounds the
    /// connections readers may hold open at once. Panics with the fix if
    /// nginx is not installed.
    pub fn start(origin: SocketAddr, work: &Path, connections: usize) -> Cdn {
        let port = free_port();
        let prefix = work.join("cdn");
        let cache = prefix.join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let block = deploy_doc_cdn_block();
        for placeholder in [DOC_ORIGIN, DOC_CACHE_PATH, DOC_LISTEN] {
            assert!(block.contains(placeholder), "the CDN block of docs/DEPLOY.md lost {placeholder:?}");
        }
        // One connection per origin request is what makes the origin-side
        // count exact (see `OriginCounter`); keepalive would merge them.
        let directives = block.lines().map(|l| l.split('#').next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
        assert!(
            !directives.contains("keepalive") && !directives.contains("proxy_http_version"),
            "the CDN block must not keep origin connections alive"
        );
        let block = block
            .replace(DOC_ORIGIN, &format!("proxy_pass http://{origin};"))
            .replace(DOC_CACHE_PATH, &format!("proxy_cache_path {} ", cache.display()))
            .replace(DOC_LISTEN, &format!("listen 127.0.0.1:{port} backlog=4096;"));
        let access_log = prefix.join("access.log");
        // The log is buffered: nginx writes it at the latest when it shuts
        // down, which `Cdn::stop` waits for.
        let config = nginx::Config {
            error_level: "warn",
            main: &format!(
                "worker_rlimit_nofile {files};\nevents {{ worker_connections {connections}; }}",
                // Each reader connection may need one to the origin too.
                files = connections * 2 + 64,
            ),
            http: &format!(
                "log_format cdn '{LOG_FORMAT}';\n  access_log {} cdn buffer=256k flush=5s;\n  keepalive_requests 100000;",
                access_log.display()
            ),
        };
        let mut process = nginx::start("cdn-nginx", work, &prefix, &block, &config);
        process.wait_listening(port);
        Cdn { process, port, access_log }
    }

    /// `http://127.0.0.1:PORT`: the origin's root through the cache.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The nginx process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops nginx (SIGTERM: it writes out its buffered log on the way)
    /// and returns every request it logged, in order.
    pub fn stop(mut self) -> Vec<Served> {
        let status = self.process.terminate();
        assert!(status.success() || status.code().is_none(), "nginx (CDN) exited with {status}");
        let log = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        log.lines().filter_map(parse_line).collect()
    }
}

/// Counts `served` answered in `[from_ms, to_ms)`.
pub fn stats_between(served: &[Served], from_ms: u64, to_ms: u64) -> CacheStats {
    let mut stats = CacheStats::default();
    for request in served.iter().filter(|r| (from_ms..to_ms).contains(&r.at_ms)) {
        stats.requests += 1;
        stats.hits += u64::from(request.is_hit());
        stats.origin_requests += u64::from(request.went_to_origin);
    }
    stats
}

/// Parses one line of [`LOG_FORMAT`].
fn parse_line(line: &str) -> Option<Served> {
    let mut fields = line.splitn(7, ' ');
    let msec = fields.next()?;
    let status = fields.next()?.parse().ok()?;
    let cache = fields.next()?.to_string();
    let _method = fields.next()?;
    let uri = fields.next()?.to_string();
    let _connection_requests = fields.next()?;
    let upstream = fields.next().unwrap_or("-").trim();
    let (seconds, millis) = msec.split_once('.')?;
    let at_ms = seconds.parse::<u64>().ok()? * 1000 + millis.parse::<u64>().ok()?;
    Some(Served { at_ms, status, cache, uri, went_to_origin: upstream != "-" && !upstream.is_empty() })
}

/// The ```` ```nginx ```` block under "### Readers behind a CDN" in
/// `docs/DEPLOY.md` (the first nginx block of the file is the static
/// server's, see [`crate::web_servers::deploy_doc_server_block`]).
pub fn deploy_doc_cdn_block() -> String {
    nginx::deploy_doc_block(Some("### Readers behind a CDN"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_access_log() {
        let hit = parse_line("1796630400.123 206 HIT GET /b/app/x/l0/1.seg 1 -").unwrap();
        assert_eq!((hit.at_ms, hit.status, hit.is_hit(), hit.went_to_origin), (1_796_630_400_123, 206, true, false));
        let miss = parse_line("1796630400.500 404 MISS GET /b/app/x/l0/2.seg 3 127.0.0.1:9000").unwrap();
        assert!(!miss.is_hit() && miss.went_to_origin && miss.at_ms == 1_796_630_400_500);
        let retried = parse_line("1796630401.000 200 EXPIRED GET /b/m.json 1 127.0.0.1:1, 127.0.0.1:2").unwrap();
        assert!(retried.went_to_origin);
    }

    #[test]
    fn the_doc_block_has_what_the_harness_replaces() {
        let block = deploy_doc_cdn_block();
        for needle in [DOC_ORIGIN, DOC_CACHE_PATH, DOC_LISTEN, "proxy_cache_lock on;", "404 1s;"] {
            assert!(block.contains(needle), "{needle}");
        }
    }
}
