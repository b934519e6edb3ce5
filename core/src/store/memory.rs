//! An in-memory store for unit tests: the full contract, no persistence.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::types::{ETag, GetOptions, GetResult, ObjectMeta, Payload, PutMode, StoreError};
use super::{Store, validate_key, validate_prefix};

/// A store in a map. ETags are content hashes, like S3's for plain PUTs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // A std mutex: it is never held across an await.
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every mutation is a single insert or remove), so poison is moot.
        self.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) fn content_etag(bytes: &[u8]) -> ETag {
    ETag(format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(bytes)))
}

fn meta(key: &str, bytes: &Bytes) -> ObjectMeta {
    ObjectMeta { key: key.to_string(), size: bytes.len() as u64, etag: Some(content_etag(bytes)) }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Store for MemoryStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        validate_key(key)?;
        let bytes =
            self.objects().get(key).cloned().ok_or_else(|| StoreError::NotFound { op: "get", key: key.to_string() })?;
        let meta = meta(key, &bytes);
        let range = options.range_of(&meta)?;
        let body = bytes.slice(range.start as usize..range.end as usize);
        Ok(GetResult { meta, range, body: Box::pin(futures::stream::once(async move { Ok(body) })) })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let objects = self.objects();
        let bytes = objects.get(key).ok_or_else(|| StoreError::NotFound { op: "head", key: key.to_string() })?;
        Ok(meta(key, bytes))
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let bytes = match payload {
            Payload::Bytes(bytes) => bytes,
            #[cfg(not(target_arch = "wasm32"))]
            Payload::File(path) => std::fs::read(&path)
                .map_err(|source| StoreError::Io { op: "read", key: path.display().to_string(), source })?
                .into(),
        };
        let mut objects = self.objects();
        match (&mode, objects.get(key)) {
            (PutMode::Create, Some(_)) => {
                return Err(StoreError::AlreadyExists { key: key.to_string() });
            }
            (PutMode::Update(etag), Some(current)) if content_etag(current) != *etag => {
                return Err(StoreError::PreconditionFailed { key: key.to_string() });
            }
            (PutMode::Update(_), None) => {
                return Err(StoreError::PreconditionFailed { key: key.to_string() });
            }
            _ => {}
        }
        let meta = meta(key, &bytes);
        objects.insert(key.to_string(), bytes);
        Ok(meta)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            validate_key(key)?;
        }
        let mut objects = self.objects();
        for key in keys {
            objects.remove(key);
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| meta(k, v))
            .collect())
    }

    fn url(&self) -> &str {
        "memory://"
    }
}
