//! Replication settings: from the command line for one database, or from a
//! YAML file for many. The file takes our keys and every key of
//! Litestream's 0.3 and 0.5 configuration files, so a `litestream.yml` works
//! unmodified:
//!
//! ```yaml
//! metrics-addr: 127.0.0.1:9090          # optional (Litestream: addr)
//! dbs:
//!   - path: /var/lib/app/app.db
//!     checkpoint-frames: 1000           # optional: PASSIVE checkpoint threshold
//!     truncate-size: 64MiB              # optional: TRUNCATE checkpoint threshold
//!     replicas:                         # or one `replica:`
//!       - url: s3://my-bucket/app-db?region=us-east-1
//!         sync-interval: 1s             # optional, 100ms at least
//!         encryption-key-file: /etc/distributary/key   # optional
//!         compression: lz4              # optional: lz4 (default), zstd or zstd:LEVEL
//!       - type: s3                      # or spelled out, Litestream-style
//!         bucket: my-bucket
//!         path: app-db-copy
//!         region: eu-west-1
//!         endpoint: ${S3_ENDPOINT}      # ${VAR} and $VAR expand from the environment
//!       - type: file
//!         path: /mnt/backup/app-db
//! ```
//!
//! Every key is used, or answered: a key with no equivalent here becomes a
//! notice that `replicate` logs once at start ([`Config::notices`]), and a
//! backend or feature we do not support is refused with the nearest working
//! alternative. Unknown keys are errors that name the key and its line.
//! `docs/REPLICATE.md` has the table of every key.
//!
//! | module | what |
//! |---|---|
//! | `schema` | the file's keys as serde structs: ours and Litestream's |
//! | `litestream` | what each key becomes: mapping, refusals, notices |
//! | `s3_url` | an S3 replica's store URL, from Litestream's URL forms and fields |
//! | `remote_urls` | an SFTP or Azure replica's store URL and secret, likewise |
//! | [`compaction`] | compactor settings, and what to set on the Lambda |
//! | `expand` | `${VAR}`, `$VAR` and `$PID` |
//! | `units` | durations and sizes |

pub mod compaction;
mod expand;
mod litestream;
mod remote_urls;
mod s3_url;
mod schema;
mod units;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use distributary_core::format::Compression;
use distributary_core::store::{self, AbsCredential, AbsStore, S3Store, SftpStore, Store, StoreUrl};

pub use self::compaction::{CompactionKey, CompactionMode, CompactionSettings, lambda_instructions};
pub use self::units::{format_duration, parse_duration, parse_size};

/// The smallest sync interval accepted.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// The default sync interval.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Address of the metrics and status endpoint, if enabled.
    pub metrics_addr: Option<String>,
    /// The app to run and supervise (`--exec` wins over it).
    pub exec: Option<String>,
    /// Log level and format (command-line flags and `DISTRIBUTARY_LOG` win).
    pub logging: Logging,
    /// The databases.
    pub dbs: Vec<DbConfig>,
    /// One line for each key that was accepted but has no effect here, or
    /// whose meaning differs from Litestream's: `replicate` logs them at
    /// start, so no key is ignored silently.
    pub notices: Vec<String>,
}

/// `logging:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Logging {
    /// The level, if given.
    pub level: Option<LogLevel>,
    /// The format, if given.
    pub format: Option<LogFormat>,
}

/// A log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// The default.
    Info,
    /// Problems only.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// Parses Litestream's names, in any case (`WARNING` too).
    pub fn parse(text: &str) -> Result<LogLevel> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => bail!("invalid log level {text:?} (expected debug, info, warn or error)"),
        })
    }

    /// The level as a `tracing` filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// A log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbConfig {
    /// The database file; for a folder entry ([`DbConfig::folder`]), the folder.
    pub path: PathBuf,
    /// `Some` when the entry names a folder of databases (`dir:`), which
    /// `replicate` does not support yet.
    pub folder: Option<DbFolder>,
    /// PASSIVE checkpoint threshold in WAL frames.
    pub checkpoint_frames: u64,
    /// TRUNCATE checkpoint threshold in bytes of WAL.
    pub truncate_bytes: u64,
    /// Its stores.
    pub replicas: Vec<ReplicaConfig>,
    /// Its compactor's settings.
    pub compaction: CompactionSettings,
}

/// A folder of databases (Litestream 0.5's `dir`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbFolder {
    /// Which files are databases (a glob such as `*.db`).
    pub pattern: String,
    /// Whether subfolders are scanned.
    pub recursive: bool,
    /// Whether databases created later are picked up.
    pub watch: bool,
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
    /// The secret the file gives for the store (S3 keys instead of the
    /// SDK's chain, an SFTP password, an Azure key), never in the URL.
    pub credentials: Option<Credentials>,
    /// How pages are compressed in the segments written to this store.
    pub compression: Compression,
}

/// A store's secret from the configuration file. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Static S3 keys.
    S3 {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: String,
    },
    /// An SFTP password (a key file, when given, is named in the URL).
    SftpPassword(String),
    /// An Azure storage account key or SAS token.
    Abs(AbsCredential),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::S3 { access_key_id, .. } => f
                .debug_struct("S3")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish(),
            Credentials::SftpPassword(_) => f.write_str("SftpPassword(<redacted>)"),
            Credentials::Abs(credential) => f.debug_tuple("Abs").field(credential).finish(),
        }
    }
}

impl Config {
    /// Reads and validates a YAML configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses YAML configuration text, expanding variables from the
    /// environment first.
    pub fn parse(text: &str) -> Result<Config> {
        Config::parse_with_env(text, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::parse`], reading variables through `env`.
    pub fn parse_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let expanded = expand::expand(text, env)?;
        let file: schema::FileConfig = serde_yaml_ng::from_str(&expanded).map_err(|e| yaml_error(&e))?;
        litestream::resolve(file, env)
    }

    /// What to set on the Lambda, one line per distinct set of values (see
    /// [`lambda_instructions`]).
    pub fn lambda_instructions(&self) -> Vec<String> {
        lambda_instructions(&self.dbs)
    }
}

/// serde's message without its list of expected keys: with Litestream's
/// schema that list is dozens of names long and hides the key and line.
fn yaml_error(error: &serde_yaml_ng::Error) -> anyhow::Error {
    let message = error.to_string();
    match (message.find(", expected one of"), message.rfind(" at line ")) {
        (Some(start), Some(end)) if start < end => {
            anyhow::anyhow!("{}{}", &message[..start], &message[end..])
        }
        _ => anyhow::anyhow!(message),
    }
}

impl ReplicaConfig {
    /// Opens the store, with the configured static credentials if any.
    pub async fn open_store(&self) -> Result<Arc<dyn Store>> {
        match (&self.credentials, StoreUrl::parse(&self.url)?) {
            (
                Some(Credentials::S3 { access_key_id, secret_access_key }),
                StoreUrl::S3 { bucket, prefix, endpoint, region, path_style },
            ) => {
                let keys = Some((access_key_id.clone(), secret_access_key.clone()));
                Ok(Arc::new(S3Store::connect_with(bucket, prefix, endpoint, region, path_style, keys).await?))
            }
            (Some(Credentials::SftpPassword(password)), parsed @ StoreUrl::Sftp { .. }) => {
                let options = store::sftp::options_from_url(&self.url, parsed, Some(password.clone()))?;
                Ok(Arc::new(SftpStore::new(options)?))
            }
            (Some(Credentials::Abs(credential)), parsed @ StoreUrl::Abs { .. }) => {
                let options = store::abs::options_from_url(&self.url, parsed, Some(credential.clone()))?;
                Ok(Arc::new(AbsStore::connect(options)?))
            }
            _ => Ok(store::open(&self.url).await?),
        }
    }
}

/// Refuses intervals below [`MIN_SYNC_INTERVAL`].
pub fn check_sync_interval(interval: Duration) -> Result<()> {
    if interval < MIN_SYNC_INTERVAL {
        bail!("sync interval {interval:?} is below the minimum of 100ms");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
