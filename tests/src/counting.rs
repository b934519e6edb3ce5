//! A [`Store`] wrapper that counts requests by kind, to prove what a reader
//! costs (one GET per object applied, a constant few more, no LIST).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use distributary_core::layout::MANIFEST_KEY;
use distributary_core::store::{GetOptions, GetResult, ObjectMeta, Payload, PutMode, Store, StoreError};

/// Counts each kind of request made through it.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn Store>,
    /// GETs (whole or ranged), including those that found nothing.
    pub gets: AtomicU64,
    /// GETs of the manifest (counted in `gets` too): what proves a pass
    /// reads it once and hands it on.
    pub manifest_gets: AtomicU64,
    /// HEADs.
    pub heads: AtomicU64,
    /// PUTs.
    pub puts: AtomicU64,
    /// DELETEs.
    pub deletes: AtomicU64,
    /// LISTs.
    pub lists: AtomicU64,
}

impl CountingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> CountingStore {
        CountingStore {
            inner,
            gets: AtomicU64::new(0),
            manifest_gets: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            lists: AtomicU64::new(0),
        }
    }

    /// Sets every counter to zero.
    pub fn reset(&self) {
        for counter in [&self.gets, &self.manifest_gets, &self.heads, &self.puts, &self.deletes, &self.lists] {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// Every request counted.
    pub fn total(&self) -> u64 {
        [&self.gets, &self.heads, &self.puts, &self.deletes, &self.lists].iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if key == MANIFEST_KEY {
            self.manifest_gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(key, options).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.heads.fetch_add(1, Ordering::SeqCst);
        self.inner.head(key).await
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, payload, mode).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(keys).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix).await
    }

    fn url(&self) -> &str {
        self.inner.url()
    }
}
