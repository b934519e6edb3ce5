//! The configuration file's keys as serde structs: ours, and every key of
//! Litestream 0.3's and 0.5's documented schema (plus the few more their
//! code reads), so that a `litestream.yml` parses unmodified while a
//! misspelt key is still an error naming it and its line.
//!
//! Nothing is decided here: [`super::litestream`] maps each key or answers
//! it. Keys that are only answered, never used, keep their raw YAML value
//! ([`Value`]), so any value Litestream takes is taken.

use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::compaction::CompactionMode;

/// The replica settings, listed once and passed to `$then!` after its own
/// input. Litestream 0.5 takes every one of them at the top level as well,
/// as a default for each replica; the top-level section and the replica
/// section both embed the list this way because serde's `flatten` cannot
/// be combined with `deny_unknown_fields` (and loses line numbers).
macro_rules! replica_settings {
    ($then:ident! { $($input:tt)* }) => {
        $then! {
            { $($input)* }
            /// Upload cadence (0.3, 0.5).
            sync_interval: String,
            /// Restore-and-compare cadence (0.3, 0.5): answered, never run.
            validation_interval: String,
            /// S3 static credentials (0.3, 0.5).
            access_key_id: String,
            /// S3 static credentials (0.3, 0.5); never logged.
            secret_access_key: String,
            /// S3 region (0.3, 0.5).
            region: String,
            /// S3 bucket (0.3, 0.5); the container of abs, and the bucket of nats.
            bucket: String,
            /// S3-compatible endpoint (0.3, 0.5).
            endpoint: String,
            /// S3 path-style addressing (0.3, 0.5).
            force_path_style: bool,
            /// Disable TLS verification (0.3, 0.5): refused when true.
            skip_verify: bool,
            /// age encryption (0.3.10+): refused.
            age: Age,
            // S3 client behaviour with no equivalent here (0.5): answered.
            auto_recover: Value,
            sign_payload: Value,
            require_content_md5: Value,
            part_size: Value,
            concurrency: Value,
            // S3 server-side encryption (0.5): refused, never dropped.
            sse_customer_algorithm: Value,
            sse_customer_key: Value,
            sse_customer_key_path: Value,
            sse_kms_key_id: Value,
            // Azure Blob Storage (0.3, 0.5); the key and token never logged.
            account_name: String,
            account_key: String,
            sas_token: String,
            // SFTP (0.3, 0.5); the password never logged.
            host: String,
            user: String,
            password: String,
            key_path: String,
            /// Answered: uploads to a store go one at a time.
            concurrent_writes: Value,
            host_key: String,
            // WebDAV (0.5).
            webdav_url: Value,
            webdav_username: Value,
            webdav_password: Value,
            // NATS JetStream (0.5).
            jwt: Value,
            seed: Value,
            creds: Value,
            nkey: Value,
            username: Value,
            token: Value,
            tls: Value,
            root_cas: Value,
            client_cert: Value,
            client_key: Value,
            max_reconnects: Value,
            reconnect_wait: Value,
            timeout: Value,
        }
    };
}

/// Declares a section struct: its own fields, then every replica setting
/// (as `Option`), and `replica_settings()` to read the latter.
macro_rules! section {
    (
        { $(#[$attr:meta])* struct $name:ident { $($(#[$fattr:meta])* $field:ident: $fty:ty,)* } }
        $($(#[$kattr:meta])* $key:ident: $kty:ty,)*
    ) => {
        $(#[$attr])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
        pub(super) struct $name {
            $($(#[$fattr])* pub $field: $fty,)*
            $($(#[$kattr])* pub $key: Option<$kty>,)*
        }

        impl $name {
            /// The replica settings given in this section.
            pub fn replica_settings(&self) -> ReplicaSettings {
                ReplicaSettings { $($key: self.$key.clone(),)* }
            }
        }
    };
}

/// Declares [`ReplicaSettings`] from the list.
macro_rules! settings {
    ({} $($(#[$kattr:meta])* $key:ident: $kty:ty,)*) => {
        /// The replica settings of one section (a replica, or the top level).
        #[derive(Clone, Debug, Default)]
        pub(super) struct ReplicaSettings {
            $($(#[$kattr])* pub $key: Option<$kty>,)*
        }

        impl ReplicaSettings {
            /// `self`, with the settings it lacks taken from `defaults`
            /// (a replica's own win over the top level's).
            pub fn or(self, defaults: &ReplicaSettings) -> ReplicaSettings {
                ReplicaSettings { $($key: self.$key.or_else(|| defaults.$key.clone()),)* }
            }

            /// The keys given, as written in the file.
            pub fn given(&self) -> Vec<String> {
                let mut keys = Vec::new();
                $(if self.$key.is_some() {
                    keys.push(stringify!($key).replace('_', "-"));
                })*
                keys
            }
        }
    };
}

replica_settings!(settings! {});

replica_settings!(section! {
    /// The whole file.
    struct FileConfig {
        /// Ours; Litestream's `addr` (0.3, 0.5) is the same setting.
        #[serde(alias = "addr")]
        metrics_addr: Option<String>,
        /// Ours: where compaction runs, for every database (`lambda` or `local`).
        compaction: Option<CompactionMode>,
        /// The databases (0.3, 0.5).
        dbs: Vec<FileDb>,
        /// The app to supervise, like `--exec` (0.3, 0.5).
        exec: Option<String>,
        /// Log level and format (0.3.12+).
        logging: Option<FileLogging>,
        /// Model Context Protocol server (0.5): answered.
        mcp_addr: Option<Value>,
        /// Control socket (0.5): answered.
        socket: Option<Value>,
        /// Compaction levels L1, L2, ... (0.5).
        levels: Option<Vec<FileLevel>>,
        /// Snapshot interval and retention (0.5).
        snapshot: Option<FileSnapshot>,
        /// Validation cadence (0.5 code): answered.
        validation: Option<FileValidation>,
        /// L0 retention (0.5).
        l0_retention: Option<String>,
        /// L0 retention check cadence (0.5): answered.
        l0_retention_check_interval: Option<Value>,
        /// TXID checks after compaction (0.5 code): answered.
        verify_compaction: Option<Value>,
        /// Dead man's switch pings (0.5 code): answered.
        heartbeat_url: Option<Value>,
        heartbeat_interval: Option<Value>,
        /// Sync retries at shutdown (0.5 code): answered.
        shutdown_sync_timeout: Option<Value>,
        shutdown_sync_interval: Option<Value>,
    }
});

replica_settings!(section! {
    /// One store of a database (`replica:` or an entry of `replicas:`).
    struct FileReplica {
        /// A store URL: ours, or Litestream's (0.3, 0.5).
        url: Option<String>,
        /// The backend (0.3, 0.5); from the URL's scheme, else `file`, when absent.
        #[serde(rename = "type")]
        kind: Option<String>,
        /// A label (0.3): used in messages.
        name: Option<String>,
        /// Prefix in the bucket, or folder of a file replica (0.3, 0.5).
        path: Option<String>,
        /// Snapshot retention (0.3).
        retention: Option<String>,
        /// Retention enforcement cadence (0.3).
        retention_check_interval: Option<String>,
        /// Snapshot cadence (0.3).
        snapshot_interval: Option<String>,
        /// Ours: the file holding the AES-256-GCM key.
        encryption_key_file: Option<PathBuf>,
        /// Ours: how pages are compressed (`lz4`, `zstd`, `zstd:LEVEL`).
        compression: Option<String>,
    }
});

/// One database, or a folder of them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub(super) struct FileDb {
    /// The database file (0.3, 0.5; `sqlite://` and `sqlite3://` prefixes taken off, as 0.5 does).
    pub path: Option<String>,
    /// A folder of databases (0.5), with `pattern`, `recursive` and `watch`.
    pub dir: Option<String>,
    pub pattern: Option<String>,
    pub recursive: Option<bool>,
    pub watch: Option<bool>,
    /// Where Litestream keeps its local state (0.3, 0.5; `meta-dir` in some 0.5 docs): answered.
    pub meta_path: Option<Value>,
    pub meta_dir: Option<Value>,
    /// WAL polling cadence (0.3, 0.5; `monitor-delay-interval` in early 0.3): answered.
    pub monitor_interval: Option<Value>,
    pub monitor_delay_interval: Option<Value>,
    /// Time-based checkpoints and the checkpoint connection's busy timeout (0.3, 0.5): answered.
    pub checkpoint_interval: Option<Value>,
    pub busy_timeout: Option<Value>,
    /// PASSIVE checkpoint threshold in pages (0.3, 0.5).
    pub min_checkpoint_page_count: Option<u64>,
    /// Forced checkpoint threshold in pages (0.3).
    pub max_checkpoint_page_count: Option<u64>,
    /// TRUNCATE checkpoint threshold in pages (0.5; 0 disables it there).
    pub truncate_page_n: Option<u64>,
    /// Shadow WAL files kept (early 0.3): answered.
    pub shadow_retention_count: Option<Value>,
    /// Restore before replicating when the file is missing (0.5 code).
    pub restore_if_db_not_exists: Option<bool>,
    /// The single store (0.5).
    pub replica: Option<FileReplica>,
    /// The stores (0.3; deprecated in 0.5).
    pub replicas: Option<Vec<FileReplica>>,
    /// Ours: PASSIVE checkpoint threshold in WAL frames.
    pub checkpoint_frames: Option<u64>,
    /// Ours: TRUNCATE checkpoint threshold (`64MiB`).
    pub truncate_size: Option<String>,
    /// Ours: where compaction runs for this database.
    pub compaction: Option<CompactionMode>,
}

/// `logging:` (0.3.12+).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub(super) struct FileLogging {
    pub level: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub stderr: Option<bool>,
}

/// An entry of `levels:` (0.5).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct FileLevel {
    pub interval: String,
}

/// `snapshot:` (0.5).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub(super) struct FileSnapshot {
    pub interval: Option<String>,
    pub retention: Option<String>,
}

/// `validation:` (0.5 code).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub(super) struct FileValidation {
    pub interval: Option<Value>,
}

/// `age:` (0.3.10+): client-side encryption with age keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub(super) struct Age {
    pub identities: Vec<String>,
    pub recipients: Vec<String>,
}
