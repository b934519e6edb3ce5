//! One replica of the file: which backend it names (or why it is refused),
//! its URL, its credentials and its own settings over the top level's, and
//! the notices its keys get.

use anyhow::{Context, Result, bail};
use distributary_core::format::Compression;
use distributary_core::store::StoreUrl;

use super::super::compaction::{CompactionKey, CompactionSettings};
use super::super::remote_urls::{abs_url, sftp_url};
use super::super::s3_url::s3_url;
use super::super::schema::{FileReplica, ReplicaSettings};
use super::super::units::parse_duration;
use super::super::{Credentials, DEFAULT_SYNC_INTERVAL, ReplicaConfig, check_sync_interval};
use super::*;

/// The backends a replica can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backend {
    S3,
    File,
    Sftp,
    Abs,
    /// Another URL scheme: [`StoreUrl`] decides (http(s) stores are read-only).
    OtherUrl,
}

impl Backend {
    /// The backend a `type` or URL scheme names.
    fn named(kind: &str) -> Option<Backend> {
        match kind {
            "s3" => Some(Backend::S3),
            "file" => Some(Backend::File),
            "sftp" => Some(Backend::Sftp),
            "abs" => Some(Backend::Abs),
            _ => None,
        }
    }

    /// The `type` that names it, for messages.
    fn name(self) -> &'static str {
        match self {
            Backend::S3 => "s3",
            Backend::File => "file",
            Backend::Sftp => "sftp",
            Backend::Abs => "abs",
            Backend::OtherUrl => "url",
        }
    }
}

/// A replica's backend: from its URL's scheme, else its `type`, else a
/// folder (Litestream's rule). Backends we do not support are refused here.
fn backend(replica: &FileReplica) -> Result<Backend> {
    let scheme = replica.url.as_deref().and_then(|url| url.split_once("://")).map(|(s, _)| s.to_ascii_lowercase());
    let from_type = match replica.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => None,
        Some(kind) if Backend::named(kind).is_some() => Backend::named(kind),
        Some(other) => match refusal(other) {
            Some(refusal) => bail!("{refusal}"),
            None => bail!("unknown replica type {other:?} (expected s3, file, sftp or abs, or give a `url`)"),
        },
    };
    let from_scheme = match scheme.as_deref() {
        None => None,
        Some(kind) if Backend::named(kind).is_some() => Backend::named(kind),
        Some(other) => match refusal(other) {
            Some(refusal) => bail!("{refusal}"),
            None => Some(Backend::OtherUrl),
        },
    };
    match (from_type, from_scheme) {
        (Some(kind), Some(scheme_kind)) if kind != scheme_kind => bail!(
            "`type: {}` does not match the url's scheme {}://",
            replica.kind.as_deref().unwrap_or_default(),
            scheme.unwrap_or_default()
        ),
        (_, Some(kind)) | (Some(kind), None) => Ok(kind),
        (None, None) => Ok(Backend::File),
    }
}

/// Why a backend (a `type` or a URL scheme) is refused, and what to use
/// instead; `None` for names that are not Litestream backends.
fn refusal(kind: &str) -> Option<String> {
    let (what, instead) = match kind {
        "gs" | "gcs" => (
            "Google Cloud Storage",
            "use type s3 with endpoint https://storage.googleapis.com and HMAC keys \
             (access-key-id/secret-access-key)",
        ),
        "webdav" | "webdavs" => (
            "WebDAV",
            "mount the share (davfs2, rclone mount) and use type file with its path, or use an \
             S3-compatible endpoint (type s3 with endpoint)",
        ),
        "nats" => (
            "NATS JetStream object stores",
            "use an S3-compatible store (type s3 with endpoint), or a folder (type file)",
        ),
        "oss" => (
            "Alibaba Cloud OSS",
            "use type s3 with OSS's S3-compatible endpoint (endpoint https://oss-<region>.aliyuncs.com) and \
             access-key-id/secret-access-key",
        ),
        _ => return None,
    };
    Some(format!("replica type {kind} ({what}) is not supported: {instead}"))
}

pub(super) fn resolve_replica(
    replica: FileReplica,
    key_path: &str,
    label: &str,
    defaults: &ReplicaSettings,
    env: Env,
    notices: &mut Vec<String>,
) -> Result<(ReplicaConfig, CompactionSettings)> {
    let backend = backend(&replica)?;
    let own = replica.replica_settings();
    answer_settings(&own, label, Some(backend), notices)?;
    let settings = own.clone().or(defaults);
    let (url, credentials) = match backend {
        Backend::S3 => (s3_url(&replica, &own, &settings, label, notices)?, credentials(&settings)?),
        Backend::File => (file_url(&replica, env)?, None),
        Backend::Sftp => sftp_url(&replica, &settings, env)?,
        Backend::Abs => abs_url(&replica, &settings, env, &at(label), notices)?,
        Backend::OtherUrl => (replica.url.clone().unwrap_or_default(), None),
    };
    StoreUrl::parse(&url)?;
    let sync_interval = match non_empty(&settings.sync_interval) {
        Some(text) => parse_duration(text).context("sync-interval")?,
        None => DEFAULT_SYNC_INTERVAL,
    };
    check_sync_interval(sync_interval)?;
    let mut compaction = CompactionSettings::default();
    for (text, key, name) in [
        (&replica.retention, CompactionKey::SnapshotRetention, "retention"),
        (&replica.retention_check_interval, CompactionKey::Interval, "retention-check-interval"),
        (&replica.snapshot_interval, CompactionKey::SnapshotInterval, "snapshot-interval"),
    ] {
        if let Some(text) = text {
            compaction.set(key, positive_duration(text, name)?, format!("{key_path}.{name}"));
        }
    }
    let compression = match &replica.compression {
        Some(text) => Compression::parse(text).map_err(|e| anyhow::anyhow!("{key_path}.compression: {e}"))?,
        None => Compression::default(),
    };
    let replica = ReplicaConfig {
        url,
        sync_interval,
        encryption_key_file: replica.encryption_key_file,
        credentials,
        compression,
    };
    Ok((replica, compaction))
}

/// `label: `, the start of a message about a section (nothing for the top level).
fn at(label: &str) -> String {
    if label.is_empty() { String::new() } else { format!("{label}: ") }
}

/// Refuses what must not be dropped, and answers what has no effect, in one
/// section's own replica settings (the top level's, or a replica's).
pub(super) fn answer_settings(
    settings: &ReplicaSettings,
    label: &str,
    backend: Option<Backend>,
    notices: &mut Vec<String>,
) -> Result<()> {
    let at = at(label);
    if let Some(age) = &settings.age
        && !(age.identities.is_empty() && age.recipients.is_empty())
    {
        bail!("{at}age encryption is not supported: use encryption-key-file (AES-256-GCM), see docs/REPLICATE.md");
    }
    if settings.skip_verify == Some(true) {
        bail!("{at}{SKIP_VERIFY_REFUSAL}");
    }
    // The keys of each backend we refuse, to answer in one line.
    let mut other_backends: Vec<(&str, Vec<String>)> = Vec::new();
    for key in settings.given() {
        let key = key.as_str();
        if SERVER_SIDE_ENCRYPTION_KEYS.contains(&key) {
            bail!(
                "{at}{key}: S3 server-side encryption with your own keys is not supported: make it the bucket's \
                 default encryption instead, or seal pages before upload with encryption-key-file (AES-256-GCM)"
            );
        }
        if let Some((_, answer)) = BEHAVIOUR_KEYS.iter().find(|(k, _)| *k == key) {
            notices.push(format!("{at}{key}: {answer}"));
        }
        if let Some((_, backends)) = OTHER_BACKEND_KEYS.iter().find(|(k, _)| *k == key) {
            match other_backends.iter_mut().find(|(b, _)| b == backends) {
                Some((_, keys)) => keys.push(key.to_string()),
                None => other_backends.push((backends, vec![key.to_string()])),
            }
        }
        if let (Some(backend), Some(owners)) = (backend, settings_of(key))
            && !owners.split(" and ").any(|owner| owner == backend.name())
            && backend != Backend::OtherUrl
        {
            notices.push(format!(
                "{at}{key}: a setting of {owners} replicas; this one is {}, so it has no effect",
                backend.name()
            ));
        }
    }
    for (backends, keys) in other_backends {
        notices.push(format!(
            "{at}{}: settings of {backends} replicas, which are not supported; no effect",
            keys.join(", ")
        ));
    }
    Ok(())
}

/// The store URL of a folder replica.
fn file_url(replica: &FileReplica, env: Env) -> Result<String> {
    match (&replica.url, replica.path.as_deref().filter(|p| !p.is_empty())) {
        (Some(_), Some(_)) => bail!("give either `url` or `path` for a file replica, not both"),
        (Some(url), None) => Ok(url.clone()),
        (None, Some(path)) => {
            let path = home(path, env)?;
            if !path.is_absolute() {
                bail!("`path` of a file replica must be absolute, got {:?}", path.display().to_string());
            }
            Ok(format!("file://{}", path.display()))
        }
        (None, None) => bail!("`type: file` needs `path`"),
    }
}

/// Static credentials, when both halves are given.
fn credentials(settings: &ReplicaSettings) -> Result<Option<Credentials>> {
    match (non_empty(&settings.access_key_id), non_empty(&settings.secret_access_key)) {
        (Some(id), Some(secret)) => {
            Ok(Some(Credentials::S3 { access_key_id: id.to_string(), secret_access_key: secret.to_string() }))
        }
        (None, None) => Ok(None),
        (Some(_), None) => bail!("access-key-id is given without secret-access-key"),
        (None, Some(_)) => bail!("secret-access-key is given without access-key-id"),
    }
}
