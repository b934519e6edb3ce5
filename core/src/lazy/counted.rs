//! The store a lazy replica reads through, counting requests and bytes:
//! the figures its benchmark and `stats()` report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{GetOptions, GetResult, ObjectMeta, Payload, PutMode, Store, StoreError};

/// A store that counts what is read through it.
pub(super) struct Counted {
    inner: Arc<dyn Store>,
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.inner.url())
    }
}

impl Counted {
    pub(super) fn new(inner: Arc<dyn Store>) -> Counted {
        Counted { inner, requests: AtomicU64::new(0), bytes: AtomicU64::new(0) }
    }

    /// Requests made and body bytes received so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Store for Counted {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.get(key, options).await?;
        // The body's length as announced: what the response carries.
        self.bytes.fetch_add(result.range.end - result.range.start, Ordering::Relaxed);
        Ok(result)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.head(key).await
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        self.inner.put(key, payload, mode).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        self.inner.delete(keys).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }

    fn url(&self) -> &str {
        self.inner.url()
    }
}
