//! Object stores: the [`Store`] trait every backend implements, its error
//! contract, and [`open`], the one place store URLs are parsed.
//!
//! | URL | backend | writes |
//! |---|---|---|
//! | `file:///abs/path` | [`FileStore`] | yes |
//! | `s3://bucket/prefix?endpoint=..&region=..` | [`S3Store`] | yes |
//! | `abs://container/prefix?account=..&endpoint=..` | [`AbsStore`] (Azure Blob Storage) | yes |
//! | `http(s)://host/prefix` | [`HttpStore`] | no (read-only) |
//! | `sftp://user@host:port/path?key-path=..` | [`SftpStore`] | yes |
//!
//! [`MemoryStore`] (tests) has no URL: data written to it would be lost
//! when the program exits, so no command can be pointed at one.

pub mod origin;
mod prefixed;
mod types;
mod url;

#[cfg(feature = "abs")]
pub mod abs;
#[cfg(feature = "file")]
mod file;
pub mod http;
mod memory;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "sftp")]
pub mod sftp;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use self::prefixed::{PrefixedStore, child_url};
pub use self::types::{Body, ByteRange, ETag, GetOptions, GetResult, ObjectMeta, Payload, PutMode, StoreError};
pub use self::url::{StoreUrl, open};
#[cfg(feature = "abs")]
pub use abs::{AbsCredential, AbsOptions, AbsStore};
#[cfg(feature = "file")]
pub use file::FileStore;
pub use http::HttpStore;
pub use memory::MemoryStore;
#[cfg(feature = "s3")]
pub use s3::S3Store;
#[cfg(feature = "sftp")]
pub use sftp::{HostKeyCheck, SftpAuth, SftpOptions, SftpStore};

use bytes::Bytes;

/// An object store holding one replica prefix: keys are relative to the
/// prefix given in the store's URL (`manifest.json`, `<gen>/l0/...`).
///
/// Guarantees every backend keeps (the conformance suite checks them):
/// - a successful `put` is atomic: readers see the whole new object or the
///   old state, never a part;
/// - [`PutMode::Create`] succeeds for exactly one of any number of
///   concurrent writers of a key; the others get [`StoreError::AlreadyExists`];
/// - [`PutMode::Update`] succeeds only if the object's current ETag is the
///   one given, otherwise [`StoreError::PreconditionFailed`] (also when the
///   object no longer exists);
/// - a missing object is [`StoreError::NotFound`], and only that.
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait Store: std::fmt::Debug + Send + Sync {
    /// Reads an object, or the byte range `options.range` of it.
    ///
    /// Errors: [`StoreError::NotFound`] if the object does not exist;
    /// [`StoreError::NotModified`] if `options.if_none_match` is its current
    /// ETag; [`StoreError::InvalidRange`] if the range starts past the end.
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError>;

    /// Reads an object's metadata. Errors: [`StoreError::NotFound`].
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;

    /// Writes an object atomically under `mode`'s condition and returns its
    /// new metadata. Errors: [`StoreError::AlreadyExists`] (create),
    /// [`StoreError::PreconditionFailed`] (update), [`StoreError::ReadOnly`].
    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError>;

    /// Deletes objects. Keys that do not exist are not an error (deleting is
    /// idempotent). Errors: [`StoreError::ReadOnly`], backend failures.
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError>;

    /// Lists every object whose key starts with `prefix`, sorted by key.
    ///
    /// For repair and inspection tools only: replication, compaction and
    /// reading find objects by name and through the manifest (no LIST in
    /// steady state). Errors: [`StoreError::Unsupported`] on backends that
    /// cannot list (HTTP).
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// The store's URL, for messages (credentials never appear in it).
    fn url(&self) -> &str;

    /// Reads a whole object into memory. Errors as [`Store::get`].
    async fn get_bytes(&self, key: &str) -> Result<(Bytes, ObjectMeta), StoreError> {
        let result = self.get(key, GetOptions::default()).await?;
        let meta = result.meta.clone();
        Ok((result.bytes().await?, meta))
    }

    /// Reads a byte range of an object into memory. Errors as [`Store::get`].
    async fn get_range(&self, key: &str, range: ByteRange) -> Result<Bytes, StoreError> {
        self.get(key, GetOptions { range: Some(range), if_none_match: None }).await?.bytes().await
    }
}

/// Checks that `key` is a relative object key every backend can store:
/// non-empty `/`-separated components, none empty, `.`, `..` or starting
/// with `.` (backends keep their temp and lock files there).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        Some("empty key")
    } else if key.starts_with('/') {
        Some("keys are relative to the store's prefix and must not start with '/'")
    } else if key.contains('\\') || key.contains('\0') {
        Some("backslashes and NUL bytes are not allowed")
    } else if key.split('/').any(|part| part.is_empty() || part.starts_with('.')) {
        Some("every path component must be non-empty and must not start with '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidKey { key: key.to_string(), reason: reason.to_string() }),
        None => Ok(()),
    }
}

/// Validates a list prefix: empty (everything) or a valid key prefix.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_key(prefix.trim_end_matches('/'))
}

/// `error` with the range a get asked for named in it, if it is
/// [`StoreError::InvalidRange`] (backends learn that the range was refused,
/// not which).
pub(crate) fn name_refused_range(error: StoreError, range: Option<ByteRange>) -> StoreError {
    match error {
        StoreError::InvalidRange { key, .. } => {
            StoreError::InvalidRange { key, range: range.map(|r| r.to_http_header()).unwrap_or_default(), size: 0 }
        }
        other => other,
    }
}
