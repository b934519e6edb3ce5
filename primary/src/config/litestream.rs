//! What each key of the file becomes: mapped to one of our settings,
//! answered with a notice (it has no effect here, and the notice says what
//! does the job instead), or refused with the nearest working alternative
//! (it would change where or how data is stored, so it must not be
//! dropped). `docs/REPLICATE.md` has the same decisions as a table.
//!
//! Litestream's rules are followed where they decide something: a replica
//! without `url` or `type` is a folder; a replica's own settings win over
//! the top level's; a field wins over the same part of a URL.

mod replica;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use self::replica::{answer_settings, resolve_replica};
use super::compaction::{CompactionKey, CompactionSettings};
use super::schema::{FileConfig, FileDb, FileLogging, ReplicaSettings};
use super::units::{format_duration, parse_duration, parse_size};
use super::{CompactionMode, Config, DbConfig, DbFolder, LogFormat, LogLevel, Logging};
use crate::replicator::CheckpointPolicy;

pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Litestream counts checkpoint thresholds in pages, we count WAL bytes,
/// and the page size is only known once the database is open: the
/// thresholds are converted for 4096-byte pages, SQLite's default (a WAL
/// frame is a 24-byte header and a page, after a 32-byte file header).
const ASSUMED_PAGE_SIZE: u64 = 4096;

fn wal_bytes(pages: u64) -> u64 {
    pages.saturating_mul(ASSUMED_PAGE_SIZE + 24).saturating_add(32)
}

/// What replaces Litestream's periodic restore-and-compare.
const VALIDATION_ANSWER: &str = "stores are not restored and compared automatically: run `distributary verify \
                                 STORE_URL` on a schedule (it reads the store and changes nothing)";

/// Replica settings that change nothing here, with what does the job.
pub(super) const BEHAVIOUR_KEYS: &[(&str, &str)] = &[
    (
        "auto-recover",
        "lost WAL continuity is always repaired with a catch-up segment, without resetting anything \
         (docs/REPLICATE.md, Lost continuity)",
    ),
    ("sign-payload", "S3 requests are signed by the AWS SDK; there is nothing to choose"),
    ("require-content-md5", "segments carry their own checksums; no Content-MD5 header is sent"),
    ("part-size", "each object is uploaded with one PUT; there are no multipart parts to size"),
    ("concurrency", "each object is uploaded with one PUT; there are no multipart parts to upload at once"),
    ("validation-interval", VALIDATION_ANSWER),
    (
        "concurrent-writes",
        "uploads to a store go one object at a time, each written to a temp name and renamed into place",
    ),
];

/// Why `skip-verify: true` is refused, and what to do instead.
pub(super) const SKIP_VERIFY_REFUSAL: &str =
    "skip-verify is not supported: add the endpoint's CA to the trust store (AWS_CA_BUNDLE / SSL_CERT_FILE)";

/// Server-side encryption keys: refused, because dropping one would store
/// data without the encryption it asks for.
const SERVER_SIDE_ENCRYPTION_KEYS: &[&str] =
    &["sse-customer-algorithm", "sse-customer-key", "sse-customer-key-path", "sse-kms-key-id"];

/// Settings of the backends we refuse, with those backends.
const OTHER_BACKEND_KEYS: &[(&str, &str)] = &[
    ("webdav-url", "webdav"),
    ("webdav-username", "webdav"),
    ("webdav-password", "webdav"),
    ("jwt", "nats"),
    ("seed", "nats"),
    ("creds", "nats"),
    ("nkey", "nats"),
    ("username", "nats"),
    ("token", "nats"),
    ("tls", "nats"),
    ("root-cas", "nats"),
    ("client-cert", "nats"),
    ("client-key", "nats"),
    ("max-reconnects", "nats"),
    ("reconnect-wait", "nats"),
    ("timeout", "nats"),
];

/// Settings that only S3 replicas use.
const S3_KEYS: &[&str] =
    &["access-key-id", "secret-access-key", "region", "bucket", "endpoint", "force-path-style", "skip-verify"];

/// Settings that only SFTP replicas use.
const SFTP_KEYS: &[&str] = &["host", "user", "password", "key-path", "host-key"];

/// Settings that only Azure Blob Storage replicas use (`bucket` and
/// `endpoint` too, which S3 replicas share).
const ABS_KEYS: &[&str] = &["account-name", "account-key", "sas-token"];

/// The backends whose settings `key` is, for a notice when a replica of
/// another backend is given it.
fn settings_of(key: &str) -> Option<&'static str> {
    let of = |keys: &[&str]| keys.contains(&key);
    match (of(S3_KEYS), of(SFTP_KEYS), of(ABS_KEYS)) {
        (true, ..) if matches!(key, "bucket" | "endpoint") => Some("s3 and abs"),
        (true, ..) => Some("s3"),
        (_, true, _) => Some("sftp"),
        (.., true) => Some("abs"),
        _ => None,
    }
}

/// Maps a parsed file to our configuration.
pub(super) fn resolve(file: FileConfig, env: Env) -> Result<Config> {
    let mut notices = Vec::new();
    let metrics_addr = file.metrics_addr.as_deref().filter(|a| !a.is_empty()).map(|a| metrics_addr(a, &mut notices));
    let logging = logging(file.logging.as_ref(), &mut notices)?;
    answer_globals(&file, &mut notices);
    let compaction = global_compaction(&file, &mut notices)?;
    let mut defaults = file.replica_settings();
    answer_settings(&defaults, "", None, &mut notices)?;
    credentials_from_litestream_env(&mut defaults, env, &mut notices);
    if file.dbs.is_empty() {
        bail!("no databases: add at least one entry under `dbs:`");
    }
    let mut dbs = Vec::with_capacity(file.dbs.len());
    for (index, db) in file.dbs.into_iter().enumerate() {
        dbs.push(resolve_db(index, db, &defaults, &compaction, env, &mut notices)?);
    }
    let exec = file.exec.filter(|command| !command.trim().is_empty());
    Ok(Config { metrics_addr, exec, logging, dbs, notices })
}

/// Go listens on every interface for `:9090`; Rust needs the host spelt out.
fn metrics_addr(addr: &str, notices: &mut Vec<String>) -> String {
    match addr.strip_prefix(':') {
        Some(port) => {
            let all = format!("0.0.0.0:{port}");
            notices.push(format!(
                "addr {addr:?}: serving metrics on {all} (every interface, as Litestream does); \
                 write 127.0.0.1:{port} for this machine only"
            ));
            all
        }
        None => addr.to_string(),
    }
}

fn logging(section: Option<&FileLogging>, notices: &mut Vec<String>) -> Result<Logging> {
    let Some(section) = section else { return Ok(Logging::default()) };
    let level = match section.level.as_deref() {
        None | Some("") => None,
        Some(text) => Some(LogLevel::parse(text).context("logging.level")?),
    };
    let format = match section.kind.as_deref() {
        None | Some("") => None,
        Some("text") => Some(LogFormat::Text),
        Some("json") => Some(LogFormat::Json),
        Some(other) => bail!("logging.type: invalid log type {other:?} (expected text or json)"),
    };
    if section.stderr == Some(false) {
        notices.push("logging.stderr: false: logs always go to standard error here".into());
    }
    Ok(Logging { level, format })
}

/// The keys of a group that were given, as one name (`a, b`).
fn given_keys(keys: &[(bool, &str)]) -> Option<String> {
    let given: Vec<&str> = keys.iter().filter_map(|&(given, key)| given.then_some(key)).collect();
    (!given.is_empty()).then(|| given.join(", "))
}

/// Top-level keys that have no equivalent here.
fn answer_globals(file: &FileConfig, notices: &mut Vec<String>) {
    let validation = file.validation.as_ref().is_some_and(|v| v.interval.is_some());
    let answers = [
        (
            given_keys(&[(file.mcp_addr.is_some(), "mcp-addr")]),
            "there is no MCP server here; replication status is JSON at /status on the metrics address (addr)",
        ),
        (
            given_keys(&[(file.socket.is_some(), "socket")]),
            "there is no control socket here; the databases are the ones in this file (restart to change them)",
        ),
        (given_keys(&[(validation, "validation.interval")]), VALIDATION_ANSWER),
        (
            given_keys(&[(file.l0_retention_check_interval.is_some(), "l0-retention-check-interval")]),
            "the compactor applies L0 retention on every run; there is no separate check to schedule",
        ),
        (
            given_keys(&[(file.verify_compaction.is_some(), "verify-compaction")]),
            "there is no such switch here; `distributary verify STORE_URL` checks a store's chains, checksums \
             and manifest",
        ),
        (
            given_keys(&[
                (file.heartbeat_url.is_some(), "heartbeat-url"),
                (file.heartbeat_interval.is_some(), "heartbeat-interval"),
            ]),
            "no heartbeat pings are sent; watch /status or the Prometheus metrics instead",
        ),
        (
            given_keys(&[
                (file.shutdown_sync_timeout.is_some(), "shutdown-sync-timeout"),
                (file.shutdown_sync_interval.is_some(), "shutdown-sync-interval"),
            ]),
            "on SIGINT or SIGTERM the replicator uploads everything captured before it exits; a second signal \
             exits at once",
        ),
    ];
    for (keys, answer) in answers {
        if let Some(keys) = keys {
            notices.push(format!("{keys}: {answer}"));
        }
    }
}

/// The compactor settings of the top level (Litestream 0.5), defaults for
/// every database.
fn global_compaction(file: &FileConfig, notices: &mut Vec<String>) -> Result<CompactionSettings> {
    let mut settings = CompactionSettings { mode: file.compaction.unwrap_or_default(), ..Default::default() };
    if let Some(levels) = &file.levels {
        if let Some(first) = levels.first() {
            let key = "levels[0].interval";
            settings.set(CompactionKey::L1Window, positive_duration(&first.interval, key)?, key.into());
        }
        if levels.len() > 1 {
            let rest: Vec<&str> = levels[1..].iter().map(|level| level.interval.as_str()).collect();
            notices.push(format!(
                "levels[1..] ({}): compaction here has one level, L1 (levels[0]), under snapshots \
                 (snapshot.interval), which take the place of the higher levels",
                rest.join(", ")
            ));
        }
    }
    let snapshot = file.snapshot.as_ref();
    for (text, key, name) in [
        (snapshot.and_then(|s| s.interval.as_ref()), CompactionKey::SnapshotInterval, "snapshot.interval"),
        (snapshot.and_then(|s| s.retention.as_ref()), CompactionKey::SnapshotRetention, "snapshot.retention"),
        (file.l0_retention.as_ref(), CompactionKey::L0Retention, "l0-retention"),
    ] {
        if let Some(text) = text {
            settings.set(key, positive_duration(text, name)?, name.into());
        }
    }
    Ok(settings)
}

/// Litestream reads these when the file has no keys; so do we, for S3
/// replicas, unless the AWS variables (which the SDK reads) are set.
fn credentials_from_litestream_env(defaults: &mut ReplicaSettings, env: Env, notices: &mut Vec<String>) {
    if defaults.access_key_id.is_some() || defaults.secret_access_key.is_some() || env("AWS_ACCESS_KEY_ID").is_some() {
        return;
    }
    if let (Some(id), Some(secret)) = (env("LITESTREAM_ACCESS_KEY_ID"), env("LITESTREAM_SECRET_ACCESS_KEY")) {
        defaults.access_key_id = Some(id);
        defaults.secret_access_key = Some(secret);
        notices.push(
            "LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY: used for S3 replicas without keys of \
             their own, as Litestream does"
                .into(),
        );
    }
}

fn resolve_db(
    index: usize,
    db: FileDb,
    defaults: &ReplicaSettings,
    global: &CompactionSettings,
    env: Env,
    notices: &mut Vec<String>,
) -> Result<DbConfig> {
    let (path, folder) = source(index, &db, env)?;
    let label = format!("dbs[{index}] ({})", path.display());
    answer_db(&db, &label, &path, notices)?;
    let policy = CheckpointPolicy::default();
    let checkpoint_frames = match (db.checkpoint_frames, db.min_checkpoint_page_count) {
        (Some(_), Some(_)) => {
            bail!("{label}: give checkpoint-frames or min-checkpoint-page-count, not both (they are one setting)")
        }
        (Some(frames), None) | (None, Some(frames)) => frames,
        (None, None) => policy.passive_frames,
    };
    let truncate_bytes = truncate_bytes(&db, &label, policy.truncate_bytes, notices)?;

    let stores = match (db.replica, db.replicas) {
        (Some(_), Some(_)) => bail!("{label}: give `replica` (one store) or `replicas` (a list), not both"),
        (Some(replica), None) => vec![("replica".to_string(), replica)],
        (None, Some(replicas)) => {
            replicas.into_iter().enumerate().map(|(j, replica)| (format!("replicas[{j}]"), replica)).collect()
        }
        (None, None) => bail!("{label}: no store: add `replica:` (one) or `replicas:` (a list)"),
    };
    if stores.is_empty() {
        bail!("{label}: no replicas: add at least one entry under `replicas:`");
    }
    let mut replicas = Vec::with_capacity(stores.len());
    let mut compaction = CompactionSettings::default();
    for (at, replica) in stores {
        let name = replica.name.clone().filter(|n| !n.is_empty());
        let replica_label = match name {
            Some(name) => format!("{label}.{at} ({name})"),
            None => format!("{label}.{at}"),
        };
        let key_path = format!("dbs[{index}].{at}");
        let (resolved, theirs) = resolve_replica(replica, &key_path, &replica_label, defaults, env, notices)
            .with_context(|| replica_label.clone())?;
        for conflict in compaction.merge_store(&theirs) {
            notices.push(format!("{label}: {conflict}"));
        }
        replicas.push(resolved);
    }
    let mut compaction = compaction.or(global);
    compaction.mode = db.compaction.unwrap_or(global.mode);
    if compaction.mode == CompactionMode::Lambda
        && let Some(interval) = compaction.interval
    {
        notices.push(format!(
            "{}: {}: the Lambda compacts on every upload, so it has no interval to set; the value applies to \
             `compaction: local` and `distributary compact --watch --interval`",
            compaction.from[&CompactionKey::Interval],
            format_duration(interval),
        ));
    }
    Ok(DbConfig { path, folder, checkpoint_frames, truncate_bytes, replicas, compaction })
}

/// The database file, or a folder of databases.
fn source(index: usize, db: &FileDb, env: Env) -> Result<(PathBuf, Option<DbFolder>)> {
    match (&db.path, &db.dir) {
        (Some(_), Some(_)) => bail!("dbs[{index}]: give `path` (one database) or `dir` (a folder of them), not both"),
        (Some(path), None) => {
            if db.pattern.is_some() || db.recursive.is_some() || db.watch.is_some() {
                bail!("dbs[{index}] ({path}): `pattern`, `recursive` and `watch` go with `dir`, not `path`");
            }
            // Litestream 0.5 takes connection strings as paths.
            let path = path.strip_prefix("sqlite3://").or_else(|| path.strip_prefix("sqlite://")).unwrap_or(path);
            Ok((home(path, env)?, None))
        }
        (None, Some(dir)) => {
            let pattern = db.pattern.clone().filter(|p| !p.is_empty()).with_context(|| {
                format!("dbs[{index}] ({dir}): `dir` needs `pattern`, the files to replicate (such as *.db)")
            })?;
            let folder =
                DbFolder { pattern, recursive: db.recursive.unwrap_or(false), watch: db.watch.unwrap_or(true) };
            Ok((home(dir, env)?, Some(folder)))
        }
        (None, None) => bail!("dbs[{index}]: give `path` (the database file) or `dir` with `pattern`"),
    }
}

/// `~/x` as Litestream reads it: in the home folder.
pub(super) fn home(path: &str, env: Env) -> Result<PathBuf> {
    match path.strip_prefix("~/").or(if path == "~" { Some("") } else { None }) {
        Some(rest) => {
            let home = env("HOME").filter(|h| !h.is_empty()).context("`~` in a path needs HOME to be set")?;
            Ok(PathBuf::from(home).join(rest))
        }
        None => Ok(PathBuf::from(path)),
    }
}

/// Database keys that have no equivalent here.
fn answer_db(db: &FileDb, label: &str, path: &std::path::Path, notices: &mut Vec<String>) -> Result<()> {
    if db.restore_if_db_not_exists == Some(true) {
        bail!(
            "{label}: restore-if-db-not-exists is not supported: run `distributary restore --config FILE \
             --if-db-not-exists --if-replica-exists -o DB DB` before `replicate` (ExecStartPre= in systemd)"
        );
    }
    let not_by_time = "not needed: the replicator never takes the app's write lock in steady state, and it \
                       checkpoints by WAL size (checkpoint-frames, truncate-size), not by time";
    let metadata = format!(
        "the replicator keeps its metadata beside the database, in {}-distributary/; this key is not used",
        path.display()
    );
    let answers = [
        (given_keys(&[(db.meta_path.is_some(), "meta-path"), (db.meta_dir.is_some(), "meta-dir")]), metadata.as_str()),
        (
            given_keys(&[
                (db.monitor_interval.is_some(), "monitor-interval"),
                (db.monitor_delay_interval.is_some(), "monitor-delay-interval"),
            ]),
            "commits are noticed by asking SQLite (PRAGMA data_version) every 20 ms; there is nothing to set",
        ),
        (
            given_keys(&[
                (db.checkpoint_interval.is_some(), "checkpoint-interval"),
                (db.busy_timeout.is_some(), "busy-timeout"),
            ]),
            not_by_time,
        ),
        (
            given_keys(&[(db.shadow_retention_count.is_some(), "shadow-retention-count")]),
            "there is no shadow WAL here: frames are read from the WAL itself",
        ),
    ];
    for (keys, answer) in answers {
        if let Some(keys) = keys {
            notices.push(format!("{label}: {keys}: {answer}"));
        }
    }
    Ok(())
}

/// The TRUNCATE threshold: ours in bytes, or Litestream's in pages.
fn truncate_bytes(db: &FileDb, label: &str, default: u64, notices: &mut Vec<String>) -> Result<u64> {
    let given: Vec<&str> = [
        (db.truncate_size.is_some(), "truncate-size"),
        (db.max_checkpoint_page_count.is_some(), "max-checkpoint-page-count"),
        (db.truncate_page_n.is_some(), "truncate-page-n"),
    ]
    .into_iter()
    .filter_map(|(given, key)| given.then_some(key))
    .collect();
    if given.len() > 1 {
        bail!("{label}: give one of {} (they are one setting)", given.join(", "));
    }
    if let Some(size) = &db.truncate_size {
        return parse_size(size).with_context(|| format!("{label}.truncate-size"));
    }
    let Some((key, pages)) = db
        .max_checkpoint_page_count
        .map(|pages| ("max-checkpoint-page-count", pages))
        .or(db.truncate_page_n.map(|pages| ("truncate-page-n", pages)))
    else {
        return Ok(default);
    };
    if pages == 0 {
        notices.push(format!(
            "{label}: {key}: 0: the TRUNCATE checkpoint cannot be turned off here (it keeps the WAL bounded); \
             keeping truncate-size {}MiB",
            default >> 20
        ));
        return Ok(default);
    }
    let bytes = wal_bytes(pages);
    notices.push(format!(
        "{label}: {key}: {pages} pages: TRUNCATE checkpoint once the WAL is {bytes} bytes, the size of {pages} \
         frames of 4096-byte pages (write truncate-size for another page size); unlike Litestream's forced \
         checkpoint, it waits for the app to be idle"
    ));
    Ok(bytes)
}

pub(super) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// A compactor duration: positive, as Litestream requires.
fn positive_duration(text: &str, key: &str) -> Result<Duration> {
    let duration = parse_duration(text).with_context(|| key.to_string())?;
    if duration.is_zero() {
        bail!("{key}: must be greater than 0");
    }
    Ok(duration)
}
