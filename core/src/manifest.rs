//! The manifest and the snapshot index: small JSON documents, the only
//! objects updated in place, always by compare-and-swap.
//!
//! The manifest stays O(1) in size however long the history: it names the
//! current generation, the newest snapshot, the compacted L1 chain and where
//! the L0 chain continues. The history of snapshots lives in the
//! generation's `snapshots/index.json`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::format::KeyCheck;
use crate::ids::{Checksum, GenerationId, TxId};
use crate::layout::{MANIFEST_KEY, snapshot_index_key};
use crate::retry::Backoff;
use crate::store::{ETag, PutMode, Store, StoreError};

/// The manifest format this code writes; it reads this one only.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Attempts of a compare-and-swap before giving up on a contended document.
const CAS_ATTEMPTS: u32 = 20;

/// Errors reading or updating the manifest or snapshot index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The document is not valid JSON of the expected shape.
    #[error("read {key}: invalid document: {reason}")]
    Invalid {
        /// The document's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The document was written by a newer version.
    #[error(
        "read {key}: format version {found} is newer than this build understands ({MANIFEST_FORMAT_VERSION}); upgrade Distributary"
    )]
    TooNew {
        /// The document's key.
        key: String,
        /// The version found.
        found: u32,
    },
    /// Other writers kept changing the document.
    #[error("update {key}: still contended after {attempts} attempts")]
    Contended {
        /// The document's key.
        key: String,
        /// How many compare-and-swaps were tried.
        attempts: u32,
    },
    /// The update function refused the change (for example, it would move
    /// the manifest backwards).
    #[error("update {key}: {reason}")]
    Rejected {
        /// The document's key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// A position in the log: a TXID, when it was committed, and the database's
/// rolling checksum there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// The transaction.
    pub txid: TxId,
    /// Commit time in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Rolling checksum of the database after `txid`.
    pub checksum: Checksum,
}

/// A snapshot: `snapshots/<txid>.seg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRef {
    /// The snapshot's `max_txid` (its name).
    pub txid: TxId,
    /// Commit time of `txid`, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Size of the object in bytes.
    pub size: u64,
    /// Database size in pages.
    pub commit: u32,
    /// Rolling checksum of the database at `txid`.
    pub checksum: Checksum,
}

/// A contiguous chain of segments of one level, by TXID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// `min_txid` of the first segment.
    pub min_txid: TxId,
    /// `max_txid` of the last segment.
    pub max_txid: TxId,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u32,
    /// The current generation.
    pub generation: GenerationId,
    /// SQLite page size of the database, in bytes.
    pub page_size: u32,
    /// Key check of the encryption key (absent when not encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "key_check_hex")]
    pub key_check: Option<KeyCheck>,
    /// The newest transaction known to be in the store.
    pub newest: Position,
    /// The newest snapshot.
    pub snapshot: Option<SnapshotRef>,
    /// The L1 chain kept, if any.
    pub l1: Option<Chain>,
    /// First TXID of the L0 chain not yet covered by L1: readers past the
    /// L1 chain continue with `l0/{that}` and probe by name.
    pub l0_min_txid: TxId,
    /// Compactor bookkeeping, ignored by readers: first TXID of the oldest
    /// L0 segment not yet deleted by L0 retention (always the start of an
    /// L1 segment, at most `l0_min_txid`). Absent until the compactor first
    /// deletes L0 segments; then `l1.min_txid` is where they start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l0_kept_min_txid: Option<TxId>,
    /// When the manifest was last written, milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// `<generation>/snapshots/index.json`: every kept snapshot, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotIndex {
    /// [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u32,
    /// The generation whose snapshots these are.
    pub generation: GenerationId,
    /// The snapshots, by ascending TXID.
    pub snapshots: Vec<SnapshotRef>,
}

/// A JSON document in the store with a format version.
pub trait Document: Serialize + DeserializeOwned {
    /// The document's format version.
    fn format_version(&self) -> u32;
}

impl Document for Manifest {
    fn format_version(&self) -> u32 {
        self.format_version
    }
}

impl Document for SnapshotIndex {
    fn format_version(&self) -> u32 {
        self.format_version
    }
}

/// A document with the ETag it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The document.
    pub value: T,
    /// Its ETag, for the next compare-and-swap.
    pub etag: ETag,
}

/// Parses a document, refusing versions from the future before anything else
/// (a newer version may have fields this one would reject as unknown).
pub fn parse_document<T: Document>(key: &str, bytes: &[u8]) -> Result<T, ManifestError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        format_version: u32,
    }
    let invalid = |e: serde_json::Error| ManifestError::Invalid { key: key.to_string(), reason: e.to_string() };
    let version: VersionOnly = serde_json::from_slice(bytes).map_err(invalid)?;
    if version.format_version > MANIFEST_FORMAT_VERSION {
        return Err(ManifestError::TooNew { key: key.to_string(), found: version.format_version });
    }
    serde_json::from_slice(bytes).map_err(invalid)
}

/// Reads a document; `None` if it does not exist.
pub async fn read_document<T: Document>(store: &dyn Store, key: &str) -> Result<Option<Versioned<T>>, ManifestError> {
    match store.get_bytes(key).await {
        Ok((bytes, meta)) => {
            let etag = meta.etag.ok_or_else(|| ManifestError::Invalid {
                key: key.to_string(),
                reason: "the store returned no ETag, which compare-and-swap needs".into(),
            })?;
            Ok(Some(Versioned { value: parse_document(key, &bytes)?, etag }))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the manifest; `None` for an empty prefix.
pub async fn read_manifest(store: &dyn Store) -> Result<Option<Versioned<Manifest>>, ManifestError> {
    read_document(store, MANIFEST_KEY).await
}

/// Reads a generation's snapshot index; `None` if it has none yet.
pub async fn read_snapshot_index(
    store: &dyn Store,
    generation: GenerationId,
) -> Result<Option<Versioned<SnapshotIndex>>, ManifestError> {
    read_document(store, &snapshot_index_key(generation)).await
}

/// Updates a document by compare-and-swap: reads it, calls `change` with
/// the current value (`None` if absent), and writes the result conditioned
/// on the ETag read (or on absence). On a conflict it re-reads and calls
/// `change` again, with backoff. `change` returning `Ok(None)` leaves the
/// document as it is. Returns the document as finally stored.
pub async fn update_document<T, F>(
    store: &dyn Store,
    key: &str,
    change: F,
) -> Result<Option<Versioned<T>>, ManifestError>
where
    T: Document + Clone,
    F: FnMut(Option<&T>) -> Result<Option<T>, ManifestError>,
{
    update_document_from(store, key, None, change).await
}

/// [`update_document`] starting from a version the caller already holds
/// (read or written by it a moment ago) instead of reading it again: the
/// write is conditioned on that version's ETag, so a stale one only costs
/// the conflict, after which the document is read as usual. Saves a GET
/// per update for a process that keeps the document between updates.
pub async fn update_document_from<T, F>(
    store: &dyn Store,
    key: &str,
    known: Option<Versioned<T>>,
    mut change: F,
) -> Result<Option<Versioned<T>>, ManifestError>
where
    T: Document + Clone,
    F: FnMut(Option<&T>) -> Result<Option<T>, ManifestError>,
{
    let mut known = known;
    for attempt in 0..CAS_ATTEMPTS {
        let current = match known.take() {
            Some(known) => Some(known),
            None => read_document::<T>(store, key).await?,
        };
        let Some(next) = change(current.as_ref().map(|c| &c.value))? else {
            return Ok(current);
        };
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| ManifestError::Invalid { key: key.to_string(), reason: e.to_string() })?;
        let mode = match &current {
            Some(current) => PutMode::Update(current.etag.clone()),
            None => PutMode::Create,
        };
        match store.put(key, bytes.into(), mode).await {
            Ok(meta) => {
                let etag = meta.etag.ok_or_else(|| ManifestError::Invalid {
                    key: key.to_string(),
                    reason: "the store returned no ETag after a write".into(),
                })?;
                return Ok(Some(Versioned { value: next, etag }));
            }
            Err(StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists { .. }) => {
                crate::clock::sleep(CAS_BACKOFF.delay(attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ManifestError::Contended { key: key.to_string(), attempts: CAS_ATTEMPTS })
}

/// Updates the manifest by compare-and-swap (see [`update_document`]),
/// refusing any change that would move it backwards within a generation.
pub async fn update_manifest<F>(store: &dyn Store, change: F) -> Result<Option<Versioned<Manifest>>, ManifestError>
where
    F: FnMut(Option<&Manifest>) -> Result<Option<Manifest>, ManifestError>,
{
    update_manifest_from(store, None, change).await
}

/// [`update_manifest`] from a version already held ([`update_document_from`]).
pub async fn update_manifest_from<F>(
    store: &dyn Store,
    known: Option<Versioned<Manifest>>,
    mut change: F,
) -> Result<Option<Versioned<Manifest>>, ManifestError>
where
    F: FnMut(Option<&Manifest>) -> Result<Option<Manifest>, ManifestError>,
{
    update_document_from(store, MANIFEST_KEY, known, |current: Option<&Manifest>| {
        let next = change(current)?;
        if let (Some(current), Some(next)) = (current, &next) {
            if next.generation == current.generation && next.newest.txid < current.newest.txid {
                return Err(ManifestError::Rejected {
                    key: MANIFEST_KEY.to_string(),
                    reason: format!(
                        "would move the newest TXID backwards from {} to {}",
                        current.newest.txid, next.newest.txid
                    ),
                });
            }
            if next.generation < current.generation {
                return Err(ManifestError::Rejected {
                    key: MANIFEST_KEY.to_string(),
                    reason: format!(
                        "would switch to generation {} older than the current {}",
                        next.generation, current.generation
                    ),
                });
            }
        }
        Ok(next)
    })
    .await
}

/// Waits between compare-and-swap attempts: 10 ms doubling to 1 s, with
/// up to as much again at random so contending writers spread out.
const CAS_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(10),
    cap: Duration::from_secs(1),
    jitter_percent: 100,
    attempts: Some(CAS_ATTEMPTS),
};

mod key_check_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::format::KeyCheck;

    pub fn serialize<S: Serializer>(value: &Option<KeyCheck>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(check) => serializer.serialize_str(&check.to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<KeyCheck>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| {
            u64::from_str_radix(&t, 16)
                .map(KeyCheck)
                .map_err(|_| serde::de::Error::custom(format!("invalid key_check {t:?}: expected 16 hex digits")))
        })
        .transpose()
    }
}
