//! Replication settings: from the command line for one database, or from a
//! YAML file for many, with Litestream-style keys so a `litestream.yml`
//! user feels at home:
//!
//! ```yaml
//! metrics-addr: 127.0.0.1:9090          # optional
//! dbs:
//!   - path: /var/lib/app/app.db
//!     checkpoint-frames: 1000           # optional: PASSIVE checkpoint threshold
//!     truncate-size: 64MiB              # optional: TRUNCATE checkpoint threshold
//!     replicas:
//!       - url: s3://my-bucket/app-db?region=us-east-1
//!         sync-interval: 1s             # optional, 100ms at least
//!         encryption-key-file: /etc/distributary/key   # optional
//!       - type: s3                      # or spelled out, Litestream-style
//!         bucket: my-bucket
//!         path: app-db-copy
//!         region: eu-west-1
//!         endpoint: ${S3_ENDPOINT}      # ${VAR} expands from the environment
//!       - type: file
//!         path: /mnt/backup/app-db
//! ```
//!
//! Unknown keys are errors that name the key and its line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The smallest sync interval accepted.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// The default sync interval.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address of the metrics and status endpoint, if enabled.
    pub metrics_addr: Option<String>,
    /// The databases.
    pub dbs: Vec<DbConfig>,
}

/// One database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbConfig {
    /// The database file.
    pub path: PathBuf,
    /// PASSIVE checkpoint threshold in WAL frames.
    pub checkpoint_frames: u64,
    /// TRUNCATE checkpoint threshold in bytes of WAL.
    pub truncate_bytes: u64,
    /// Its stores.
    pub replicas: Vec<ReplicaConfig>,
}

/// One store of a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The store URL.
    pub url: String,
    /// Upload interval.
    pub sync_interval: Duration,
    /// File holding the encryption key.
    pub encryption_key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(default, alias = "addr")]
    metrics_addr: Option<String>,
    dbs: Vec<FileDb>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileDb {
    path: PathBuf,
    #[serde(default)]
    checkpoint_frames: Option<u64>,
    #[serde(default)]
    truncate_size: Option<String>,
    replicas: Vec<FileReplica>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileReplica {
    #[serde(default)]
    url: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    force_path_style: Option<bool>,
    #[serde(default)]
    sync_interval: Option<String>,
    #[serde(default)]
    encryption_key_file: Option<PathBuf>,
}

impl Config {
    /// Reads and validates a YAML configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses YAML configuration text, expanding `${VAR}` first.
    pub fn parse(text: &str) -> Result<Config> {
        let expanded = expand_env(text)?;
        let file: FileConfig = serde_yaml_ng::from_str(&expanded).map_err(|e| anyhow::anyhow!("{e}"))?;
        if file.dbs.is_empty() {
            bail!("no databases: add at least one entry under `dbs:`");
        }
        let defaults = crate::replicator::CheckpointPolicy::default();
        let mut dbs = Vec::with_capacity(file.dbs.len());
        for (i, db) in file.dbs.into_iter().enumerate() {
            let label = format!("dbs[{i}] ({})", db.path.display());
            if db.replicas.is_empty() {
                bail!("{label}: no replicas: add at least one entry under `replicas:`");
            }
            let mut replicas = Vec::with_capacity(db.replicas.len());
            for (j, replica) in db.replicas.into_iter().enumerate() {
                let label = format!("{label}.replicas[{j}]");
                replicas.push(replica.resolve().with_context(|| label.clone())?);
            }
            let truncate_bytes = match db.truncate_size {
                Some(size) => parse_size(&size).with_context(|| format!("{label}.truncate-size"))?,
                None => defaults.truncate_bytes,
            };
            dbs.push(DbConfig {
                path: db.path,
                checkpoint_frames: db.checkpoint_frames.unwrap_or(defaults.passive_frames),
                truncate_bytes,
                replicas,
            });
        }
        Ok(Config { metrics_addr: file.metrics_addr, dbs })
    }
}

impl FileReplica {
    fn resolve(self) -> Result<ReplicaConfig> {
        let url = match (self.url, self.kind.as_deref()) {
            (Some(url), None) => {
                if self.bucket.is_some() || self.path.is_some() || self.region.is_some() || self.endpoint.is_some() {
                    bail!("give either `url` or `type` with `bucket`/`path`/`region`/`endpoint`, not both");
                }
                url
            }
            (Some(_), Some(_)) => bail!("give either `url` or `type`, not both"),
            (None, Some("s3")) => {
                let bucket = self.bucket.context("`type: s3` needs `bucket`")?;
                let mut query = Vec::new();
                if let Some(region) = self.region {
                    query.push(format!("region={region}"));
                }
                if let Some(endpoint) = self.endpoint {
                    query.push(format!("endpoint={endpoint}"));
                }
                if let Some(path_style) = self.force_path_style {
                    query.push(format!("path-style={path_style}"));
                }
                let path = self.path.unwrap_or_default();
                let mut url = format!("s3://{bucket}/{}", path.trim_matches('/'));
                if !query.is_empty() {
                    url = format!("{url}?{}", query.join("&"));
                }
                url
            }
            (None, Some("file")) => {
                let path = self.path.context("`type: file` needs `path`")?;
                if !path.starts_with('/') {
                    bail!("`path` of a file replica must be absolute, got {path:?}");
                }
                format!("file://{path}")
            }
            (None, Some(other)) => bail!("unknown replica type {other:?} (expected s3 or file, or give a `url`)"),
            (None, None) => bail!("a replica needs `url` (or `type` with its settings)"),
        };
        distributary_core::store::StoreUrl::parse(&url)?;
        let sync_interval = match self.sync_interval {
            Some(text) => parse_duration(&text).context("sync-interval")?,
            None => DEFAULT_SYNC_INTERVAL,
        };
        check_sync_interval(sync_interval)?;
        Ok(ReplicaConfig { url, sync_interval, encryption_key_file: self.encryption_key_file })
    }
}

/// Refuses intervals below [`MIN_SYNC_INTERVAL`].
pub fn check_sync_interval(interval: Duration) -> Result<()> {
    if interval < MIN_SYNC_INTERVAL {
        bail!("sync interval {interval:?} is below the minimum of 100ms");
    }
    Ok(())
}

/// Parses `100ms`, `1s`, `1.5s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().with_context(|| format!("invalid duration {text:?} (examples: 100ms, 1s, 5m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("invalid duration unit {other:?} in {text:?} (use ms, s, m or h)"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `1048576`, `64MiB`, `1GiB`, `500KiB` (also MB/GB as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().with_context(|| format!("invalid size {text:?} (examples: 64MiB, 1GiB)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => bail!("invalid size unit {other:?} in {text:?} (use KiB, MiB or GiB)"),
    };
    value.checked_mul(multiplier).with_context(|| format!("size {text:?} is too large"))
}

/// Expands `${VAR}` from the environment; an unset variable is an error
/// naming it and its line. Comments are left as they are: a `${VAR}` in a
/// comment is not a setting (and an unset one there must not fail).
fn expand_env(text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let (mut rest, comment) = line.split_at(yaml_comment_start(line).unwrap_or(line.len()));
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else {
                bail!("line {}: unterminated ${{ in {:?}", number + 1, line.trim_end());
            };
            let name = &rest[start + 2..start + end];
            let value = std::env::var(name)
                .with_context(|| format!("line {}: environment variable {name} is not set", number + 1))?;
            out.push_str(&value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a YAML comment starts on `line`: a `#` at the start of the line or
/// after whitespace, outside quoted scalars.
fn yaml_comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return Some(index),
            None => {}
        }
        previous = c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_litestream_style_configs() {
        // SAFETY: this test alone reads the variable.
        unsafe { std::env::set_var("DISTRIBUTARY_TEST_ENDPOINT", "http://127.0.0.1:9000") };
        let config = Config::parse(
            "dbs:\n  - path: /tmp/app.db\n    replicas:\n      - url: file:///tmp/store\n        sync-interval: 250ms\n      - type: s3\n        bucket: my-bucket\n        path: /app/\n        endpoint: ${DISTRIBUTARY_TEST_ENDPOINT}\n",
        )
        .unwrap();
        let db = &config.dbs[0];
        assert_eq!(db.replicas[0].sync_interval, Duration::from_millis(250));
        assert_eq!(db.replicas[1].url, "s3://my-bucket/app?endpoint=http://127.0.0.1:9000");
        assert_eq!(db.replicas[1].sync_interval, DEFAULT_SYNC_INTERVAL);
    }

    #[test]
    fn variables_in_comments_are_not_expanded() {
        // Regression: `${VAR}` inside a comment was expanded, and failed
        // when the variable was unset.
        let config = Config::parse(
            "# endpoint: ${DISTRIBUTARY_SURELY_UNSET}\ndbs:\n  - path: /tmp/a.db # was ${DISTRIBUTARY_SURELY_UNSET}\n    replicas:\n      - url: \"file:///tmp/a#${DISTRIBUTARY_TEST_HOME}\"  # ${DISTRIBUTARY_SURELY_UNSET}\n",
        );
        // The quoted `#` is not a comment: that variable is still expanded.
        let err = format!("{:#}", config.unwrap_err());
        assert!(err.contains("DISTRIBUTARY_TEST_HOME is not set") && err.contains("line 5"), "{err}");
        let config = Config::parse(
            "# ${DISTRIBUTARY_SURELY_UNSET}\ndbs:\n  - path: /tmp/a#b.db # ${DISTRIBUTARY_SURELY_UNSET}\n    replicas:\n      - url: file:///tmp/a  # ${DISTRIBUTARY_SURELY_UNSET}\n",
        )
        .unwrap();
        // A `#` inside a word is not a comment either.
        assert_eq!(config.dbs[0].path, std::path::Path::new("/tmp/a#b.db"));
        assert_eq!(config.dbs[0].replicas[0].url, "file:///tmp/a");
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let err = Config::parse("dbs:\n  - path: /tmp/a.db\n    replicaz: []\n").unwrap_err().to_string();
        assert!(err.contains("replicaz") && err.contains("line 3"), "{err}");
        let err = format!(
            "{:#}",
            Config::parse(
                "dbs:\n  - path: /tmp/a.db\n    replicas:\n      - url: file:///x\n        sync-intervall: 1s\n"
            )
            .unwrap_err()
        );
        assert!(err.contains("sync-intervall") && err.contains("line 5"), "{err}");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = format!(
            "{:#}",
            Config::parse(
                "dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///x\n        sync-interval: 10ms\n"
            )
            .unwrap_err()
        );
        assert!(err.contains("below the minimum"), "{err}");
        let err = format!(
            "{:#}",
            Config::parse("dbs:\n  - path: /a.db\n    replicas:\n      - url: ${DISTRIBUTARY_SURELY_UNSET}\n")
                .unwrap_err()
        );
        assert!(err.contains("DISTRIBUTARY_SURELY_UNSET is not set") && err.contains("line 4"), "{err}");
        let err =
            format!("{:#}", Config::parse("dbs:\n  - path: /a.db\n    replicas:\n      - type: ftp\n").unwrap_err());
        assert!(err.contains("unknown replica type"), "{err}");
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }
}
