//! A store seen through a prefix of another ([`PrefixedStore`]): every
//! database of a folder shares its store's client (and connections) under
//! a prefix of its own.

use std::sync::Arc;

use super::{GetOptions, GetResult, ObjectMeta, Payload, PutMode, Store, StoreError, validate_key};

/// The URL of a database's prefix inside a folder's store URL, before any
/// query string: `s3://b/p?region=x` and `app.db` give `s3://b/p/app.db?region=x`.
pub fn child_url(url: &str, relative: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let joined = format!("{}/{relative}", base.trim_end_matches('/'));
    match query {
        Some(query) => format!("{joined}?{query}"),
        None => joined,
    }
}

/// A store seen through a prefix of another: every database of a folder
/// shares its store's client (and connections) under its own prefix.
#[derive(Debug)]
pub struct PrefixedStore {
    inner: Arc<dyn Store>,
    prefix: String,
    url: String,
}

impl PrefixedStore {
    /// `inner` under `prefix` (a valid key).
    pub fn new(inner: Arc<dyn Store>, prefix: &str) -> PrefixedStore {
        let url = child_url(inner.url(), prefix);
        PrefixedStore { inner, prefix: format!("{}/", prefix.trim_end_matches('/')), url }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Store for PrefixedStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        validate_key(key)?;
        let mut result = self.inner.get(&self.key(key), options).await?;
        result.meta.key = key.to_string();
        Ok(result)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let mut meta = self.inner.head(&self.key(key)).await?;
        meta.key = key.to_string();
        Ok(meta)
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let mut meta = self.inner.put(&self.key(key), payload, mode).await?;
        meta.key = key.to_string();
        Ok(meta)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            validate_key(key)?;
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.inner.delete(&keys).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut objects = self.inner.list(&self.key(prefix)).await?;
        for object in &mut objects {
            object.key = object.key[self.prefix.len()..].to_string();
        }
        Ok(objects)
    }

    fn url(&self) -> &str {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_child_url_goes_before_the_query_string() {
        assert_eq!(child_url("file:///store", "app.db"), "file:///store/app.db");
        assert_eq!(child_url("s3://b/p/?region=x", "t/app.db"), "s3://b/p/t/app.db?region=x");
    }

    #[tokio::test]
    async fn keys_live_under_the_prefix_and_read_back_relative() {
        let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let store = PrefixedStore::new(inner.clone(), "t1/app.db");
        store.put("manifest.json", Payload::from(bytes::Bytes::from_static(b"{}")), PutMode::Create).await.unwrap();
        assert_eq!(inner.head("t1/app.db/manifest.json").await.unwrap().size, 2);
        assert_eq!(store.head("manifest.json").await.unwrap().key, "manifest.json");
        let listed: Vec<String> = store.list("").await.unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(listed, ["manifest.json"]);
        store.delete(&["manifest.json".to_string()]).await.unwrap();
        assert!(matches!(inner.head("t1/app.db/manifest.json").await, Err(StoreError::NotFound { .. })));
    }
}
