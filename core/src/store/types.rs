//! The values that cross the [`super::Store`] interface.

use std::fmt;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// An entity tag: changes whenever the object's content changes. Opaque.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key, relative to the store's prefix.
    pub key: String,
    /// Size of the whole object in bytes.
    pub size: u64,
    /// The object's current ETag, when the backend has one.
    pub etag: Option<ETag>,
}

/// A byte range to read. Offsets are from the object's start; `end` is
/// exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `[start, end)`, clipped to the object's size.
    Bounded {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// From `start` to the end.
    From(u64),
    /// The last `n` bytes (the whole object if it is shorter).
    Suffix(u64),
}

impl ByteRange {
    /// The concrete `[start, end)` for an object of `size` bytes, or `None`
    /// if the range selects no byte (empty, or starting past the end).
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        let (start, end) = match self {
            ByteRange::Bounded { start, end } => (start, end.min(size)),
            ByteRange::From(start) => (start, size),
            ByteRange::Suffix(n) => (size.saturating_sub(n), size),
        };
        // Like HTTP, a range that selects no byte is unsatisfiable.
        (start < end).then_some(start..end)
    }

    /// The value of an HTTP `Range` header for this range.
    pub fn to_http_header(self) -> String {
        match self {
            ByteRange::Bounded { start, end } => format!("bytes={start}-{}", end.saturating_sub(1)),
            ByteRange::From(start) => format!("bytes={start}-"),
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// Options for [`super::Store::get`].
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    /// Read only this range.
    pub range: Option<ByteRange>,
    /// Fail with [`StoreError::NotModified`] if the object still has this
    /// ETag (the cheap conditional poll of a manifest).
    pub if_none_match: Option<ETag>,
}

impl GetOptions {
    /// What a backend with the object's metadata in hand answers: the byte
    /// range to send; [`StoreError::NotModified`] if `if_none_match` is the
    /// object's ETag; [`StoreError::InvalidRange`] if the range selects no
    /// byte of it.
    pub fn range_of(&self, meta: &ObjectMeta) -> Result<std::ops::Range<u64>, StoreError> {
        if self.if_none_match.is_some() && self.if_none_match == meta.etag {
            return Err(StoreError::NotModified { key: meta.key.clone() });
        }
        match self.range {
            None => Ok(0..meta.size),
            Some(range) => range.resolve(meta.size).ok_or_else(|| StoreError::InvalidRange {
                key: meta.key.clone(),
                range: range.to_http_header(),
                size: meta.size,
            }),
        }
    }
}

/// A stream of body chunks.
#[cfg(not(target_arch = "wasm32"))]
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;
/// A stream of body chunks.
#[cfg(target_arch = "wasm32")]
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>>>>;

/// The result of a successful get: metadata of the whole object, the range
/// actually returned, and the body as a stream of chunks.
pub struct GetResult {
    /// Metadata of the whole object (its `size` is the full size).
    pub meta: ObjectMeta,
    /// The byte range of the object the body holds.
    pub range: std::ops::Range<u64>,
    /// The bytes, in chunks.
    pub body: Body,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult").field("meta", &self.meta).field("range", &self.range).finish_non_exhaustive()
    }
}

impl GetResult {
    /// Collects the body into one buffer, checking it has the announced
    /// length (a connection cut mid-body is an error, not a short object).
    pub async fn bytes(mut self) -> Result<Bytes, StoreError> {
        let expected = self.range.end - self.range.start;
        let mut buf = BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0).min(64 << 20));
        while let Some(chunk) = self.body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        if buf.len() as u64 != expected {
            return Err(StoreError::Backend {
                op: "get",
                key: self.meta.key.clone(),
                message: format!("body ended after {} of {expected} bytes", buf.len()),
                retryable: true,
            });
        }
        Ok(buf.freeze())
    }
}

/// What to write.
#[derive(Clone, Debug)]
pub enum Payload {
    /// Bytes in memory.
    Bytes(Bytes),
    /// The contents of a local file, streamed (for segments too large to
    /// hold in memory). The file is not modified or removed.
    #[cfg(not(target_arch = "wasm32"))]
    File(std::path::PathBuf),
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Bytes(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Bytes(bytes.into())
    }
}

/// The condition a write must meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Only if no object exists under the key (`If-None-Match: *`). Every
    /// object but the manifest is written this way.
    Create,
    /// Only if the object's current ETag is this one (`If-Match`):
    /// compare-and-swap, for the manifest and the snapshot index.
    Update(ETag),
}

/// Errors of every store operation. Each names the operation and the key (or
/// URL) it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object does not exist.
    #[error("{op} {key}: not found")]
    NotFound {
        /// The operation: "get", "head", ...
        op: &'static str,
        /// The key.
        key: String,
    },
    /// A create-if-absent found the key taken.
    #[error("create {key}: already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// A compare-and-swap found another ETag (or no object).
    #[error("update {key}: precondition failed (the object changed since it was read)")]
    PreconditionFailed {
        /// The key.
        key: String,
    },
    /// A conditional get found the object unchanged.
    #[error("get {key}: not modified")]
    NotModified {
        /// The key.
        key: String,
    },
    /// The range starts past the object's end.
    #[error("get {key}: range {range} is outside the object of {size} bytes")]
    InvalidRange {
        /// The key.
        key: String,
        /// The requested range.
        range: String,
        /// The object's size.
        size: u64,
    },
    /// The store cannot be written through this URL.
    #[error("{op} {key}: {url} is read-only ({hint})")]
    ReadOnly {
        /// The operation refused.
        op: &'static str,
        /// The key.
        key: String,
        /// The store's URL.
        url: String,
        /// What to use instead.
        hint: &'static str,
    },
    /// The backend cannot do this operation at all.
    #[error("{op}: not supported by {url}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The store's URL.
        url: String,
    },
    /// The store URL is malformed.
    #[error("invalid store URL {url:?}: {reason} (for example: {example})")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
        /// A valid URL of the intended kind.
        example: &'static str,
    },
    /// The key is not one any backend can store.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local filesystem operation failed.
    #[error("{op} {key}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The key (or path).
        key: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The remote store failed (network, authentication, throttling or
    /// server errors that persisted through the backend's retries).
    #[error("{op} {key}: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
        /// The backend's description, including its error code.
        message: String,
        /// Whether trying again later may succeed (network, 5xx, throttling).
        retryable: bool,
    },
}

impl StoreError {
    /// Whether the error is [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether trying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Backend { retryable, .. } => *retryable,
            StoreError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidData
            ),
            _ => false,
        }
    }
}
