//! Azure Blob Storage (`abs://container/prefix?account=NAME`), through
//! object_store's Azure client.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`AbsStore`], its options and credentials, the [`Store`] methods |
//! | `blocks.rs` | large file payloads: staged blocks and a conditional commit |
//! | `errors.rs` | Azure failures as [`StoreError`]s, retryable or permanent |
//!
//! Writes are block blobs. Create-if-absent is `If-None-Match: *` and
//! compare-and-swap `If-Match: <etag>`, both evaluated by Azure on the one
//! request that makes the object visible (Put Blob, or Put Block List for
//! files larger than a block), so they hold for objects of any size.
//!
//! object_store retries on its own; it is kept short here (two retries
//! within 15 s) so a dead store surfaces in seconds as a retryable
//! [`StoreError::Backend`] and the callers' policy ([`crate::retry`])
//! decides what happens next.

mod blocks;
mod errors;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::azure::{AzureAccessKey, AzureCredential, MicrosoftAzure, MicrosoftAzureBuilder, split_sas};
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    StaticCredentialProvider, UpdateVersion,
};

use self::blocks::BlockClient;
use self::errors::{Failure, backend, container_missing};
use super::types::{ByteRange, ETag, GetOptions, GetResult, ObjectMeta, Payload, PutMode, StoreError};
use super::{Store, name_refused_range, validate_key, validate_prefix};
use crate::errors::error_chain;

/// Bytes per staged block, and the largest file sent as one Put Blob
/// (read into memory whole). 16 MiB keeps a large upload's memory small
/// while 50,000 blocks (Azure's limit) still reach 781 GiB.
pub const DEFAULT_BLOCK_SIZE: usize = 16 << 20;

/// Where an [`AbsStore`] is and how it signs in: what `abs://` URLs and
/// the primary's `type: abs` configuration both map onto.
#[derive(Clone, Debug)]
pub struct AbsOptions {
    /// Storage account name.
    pub account: String,
    /// Container name (3 to 63 lowercase letters, digits and hyphens).
    pub container: String,
    /// Key prefix inside the container, without leading or trailing `/`
    /// (empty for the container's root).
    pub prefix: String,
    /// Blob service endpoint, e.g. `http://127.0.0.1:10000/devstoreaccount1`
    /// for Azurite; `https://<account>.blob.core.windows.net` when `None`.
    pub endpoint: Option<String>,
    /// How requests are signed.
    pub credential: AbsCredential,
}

/// How requests to Azure are authorised.
#[derive(Clone, PartialEq, Eq)]
pub enum AbsCredential {
    /// The storage account's shared key (base64, as the portal shows it).
    AccountKey(String),
    /// A shared access signature: the query string the portal or
    /// `az storage container generate-sas` gives, with or without `?`.
    SasToken(String),
}

// Never print a secret, not even in debug output.
impl fmt::Debug for AbsCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbsCredential::AccountKey(_) => f.write_str("AccountKey(<redacted>)"),
            AbsCredential::SasToken(_) => f.write_str("SasToken(<redacted>)"),
        }
    }
}

impl AbsCredential {
    /// The credential in the environment: `AZURE_STORAGE_ACCOUNT_KEY` (or
    /// `AZURE_STORAGE_KEY`, the Azure CLI's name), else
    /// `AZURE_STORAGE_SAS_TOKEN`.
    pub fn from_env() -> Option<AbsCredential> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        var("AZURE_STORAGE_ACCOUNT_KEY")
            .or_else(|| var("AZURE_STORAGE_KEY"))
            .map(AbsCredential::AccountKey)
            .or_else(|| var("AZURE_STORAGE_SAS_TOKEN").map(AbsCredential::SasToken))
    }

    /// object_store's form of the credential.
    fn to_azure(&self) -> Result<AzureCredential, String> {
        match self {
            AbsCredential::AccountKey(key) => {
                AzureAccessKey::try_new(key.trim()).map(AzureCredential::AccessKey).map_err(|e| {
                    format!("the account key is not valid base64 ({e}): copy it from the storage account's Access keys")
                })
            }
            AbsCredential::SasToken(token) => split_sas(token.trim())
                .map(AzureCredential::SASToken)
                .map_err(|e| format!("the SAS token is not a query string of name=value pairs ({e})")),
        }
    }
}

/// The storage account named in the environment: `AZURE_STORAGE_ACCOUNT_NAME`,
/// else `AZURE_STORAGE_ACCOUNT` (the Azure CLI's name).
pub fn account_from_env() -> Option<String> {
    ["AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The options a parsed `abs://` URL names: the account from `?account=`
/// or the environment ([`account_from_env`]); `credential`, else the one in
/// the environment ([`AbsCredential::from_env`]).
pub fn options_from_url(
    url: &str,
    parsed: super::StoreUrl,
    credential: Option<AbsCredential>,
) -> Result<AbsOptions, StoreError> {
    let no = |reason: &str| StoreError::InvalidUrl {
        url: url.to_string(),
        reason: reason.into(),
        example: super::url::ABS_EXAMPLE,
    };
    let super::StoreUrl::Abs { container, prefix, account, endpoint } = parsed else {
        return Err(no("not an abs:// URL"));
    };
    let account = account
        .or_else(account_from_env)
        .ok_or_else(|| no("no storage account: add ?account=NAME to the URL or set AZURE_STORAGE_ACCOUNT_NAME"))?;
    let credential = credential.or_else(AbsCredential::from_env).ok_or_else(|| {
        no("no Azure credentials: set AZURE_STORAGE_ACCOUNT_KEY (the account key) or AZURE_STORAGE_SAS_TOKEN")
    })?;
    Ok(AbsOptions { account, container, prefix, endpoint, credential })
}

/// A container and key prefix on Azure Blob Storage (or Azurite).
#[derive(Debug, Clone)]
pub struct AbsStore {
    client: Arc<MicrosoftAzure>,
    blocks: Arc<BlockClient>,
    container: String,
    prefix: String,
    url: String,
    /// Set once the container is known to exist: a HEAD's 404 carries no
    /// body, so the first one is checked against the container (see
    /// [`AbsStore::not_found`]).
    container_seen: Arc<AtomicBool>,
}

impl AbsStore {
    /// Builds the client; no request is made until the first operation.
    /// Errors: an invalid container name, endpoint or credential.
    pub fn connect(options: AbsOptions) -> Result<AbsStore, StoreError> {
        let AbsOptions { account, container, prefix, endpoint, credential } = options;
        let prefix = prefix.trim_matches('/').to_string();
        let url = match &endpoint {
            Some(endpoint) => format!("abs://{container}/{prefix}?account={account}&endpoint={endpoint}"),
            None => format!("abs://{container}/{prefix}?account={account}"),
        };
        let invalid =
            |reason: String| StoreError::Backend { op: "connect", key: url.clone(), message: reason, retryable: false };
        if let Some(problem) = super::url::container_name_problem(&container) {
            return Err(invalid(problem));
        }
        if !prefix.is_empty() {
            validate_key(&prefix).map_err(|e| invalid(format!("prefix: {e}")))?;
        }
        let endpoint = endpoint
            .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
            .trim_end_matches('/')
            .to_string();
        let options = ClientOptions::new()
            .with_allow_http(endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(10))
            // No limit on a whole request (a 16 MiB block on a slow link),
            // but a stalled connection fails.
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs(60));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(15),
        };
        let client = MicrosoftAzureBuilder::new()
            .with_account(&account)
            .with_container_name(&container)
            .with_endpoint(endpoint.clone())
            .with_credentials(Arc::new(StaticCredentialProvider::new(credential.to_azure().map_err(invalid)?)))
            .with_client_options(options.clone())
            .with_retry(retry)
            .build()
            .map_err(|e| invalid(error_chain(&e)))?;
        let http = ReqwestConnector::default().connect(&options).map_err(|e| invalid(error_chain(&e)))?;
        let blocks = BlockClient {
            http,
            // object_store's credential is not Clone: one for each client.
            credential: Arc::new(credential.to_azure().map_err(invalid)?),
            account,
            container: container.clone(),
            container_url: format!("{endpoint}/{container}"),
            block_size: DEFAULT_BLOCK_SIZE,
        };
        Ok(AbsStore {
            client: Arc::new(client),
            blocks: Arc::new(blocks),
            container,
            prefix,
            url,
            container_seen: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The same store with another block size: files larger than it are
    /// uploaded in blocks of it (tests use a small one to exercise that).
    pub fn with_block_size(mut self, bytes: usize) -> AbsStore {
        self.blocks = Arc::new(BlockClient { block_size: bytes.max(1), ..(*self.blocks).clone() });
        self
    }

    /// Creates the container if it does not exist (tests, and tools that
    /// set a store up).
    pub async fn create_container(&self) -> Result<(), StoreError> {
        self.blocks.create_container().await
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) })
    }

    fn path(&self, key: &str) -> Result<(String, Path), StoreError> {
        let full = self.full_key(key)?;
        let path =
            Path::parse(&full).map_err(|e| StoreError::InvalidKey { key: key.to_string(), reason: error_chain(&e) })?;
        Ok((full, path))
    }

    fn relative_key<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix).and_then(|k| k.strip_prefix('/')).unwrap_or(full)
        }
    }

    /// A read's 404: the object's, unless the container itself is missing.
    /// A HEAD's 404 has no body to tell them apart, so until the container
    /// has been seen once this lists one (non-existent) name in it.
    async fn not_found(&self, op: &'static str, key: &str, failure: &Failure) -> StoreError {
        if failure.container_missing() {
            return backend(op, key, &self.container, failure);
        }
        if !self.container_seen.load(Ordering::Relaxed) {
            let probe = Path::from("distributary-container-probe");
            if let Err(e) = self.client.list_with_delimiter(Some(&probe)).await {
                let probe = Failure::of(&e);
                if probe.container_missing() || probe.status == Some(404) {
                    return StoreError::Backend {
                        op,
                        key: key.to_string(),
                        message: container_missing(&self.container),
                        retryable: false,
                    };
                }
            }
            // Seen, or not provable (a SAS without list permission): the
            // 404 is the object's from now on.
            self.container_seen.store(true, Ordering::Relaxed);
        }
        StoreError::NotFound { op, key: key.to_string() }
    }

    /// A read's failure (get, head).
    async fn read_error(&self, op: &'static str, key: &str, error: object_store::Error) -> StoreError {
        let failure = Failure::of(&error);
        match error {
            object_store::Error::NotFound { .. } => self.not_found(op, key, &failure).await,
            object_store::Error::NotModified { .. } => StoreError::NotModified { key: key.to_string() },
            _ => backend(op, key, &self.container, &failure),
        }
    }

    async fn put_bytes(
        &self,
        key: &str,
        path: &Path,
        bytes: Bytes,
        mode: &PutMode,
    ) -> Result<Option<ETag>, StoreError> {
        let object_mode = match mode {
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Update(etag) => {
                object_store::PutMode::Update(UpdateVersion { e_tag: Some(etag.0.clone()), version: None })
            }
        };
        let options = object_store::PutOptions { mode: object_mode, ..Default::default() };
        match self.client.put_opts(path, PutPayload::from(bytes), options).await {
            Ok(result) => Ok(result.e_tag.map(ETag)),
            Err(error) => {
                let failure = Failure::of(&error);
                let key = key.to_string();
                Err(match (error, mode) {
                    // object_store reports Azurite's 409 as AlreadyExists and
                    // Azure's 412 as one or the other depending on the mode.
                    (
                        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
                        PutMode::Create,
                    ) => StoreError::AlreadyExists { key },
                    (
                        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
                        PutMode::Update(_),
                    ) => StoreError::PreconditionFailed { key },
                    // If-Match on a blob that is gone.
                    (object_store::Error::NotFound { .. }, PutMode::Update(_)) if !failure.container_missing() => {
                        StoreError::PreconditionFailed { key }
                    }
                    _ => backend("put", &key, &self.container, &failure),
                })
            }
        }
    }
}

impl AbsStore {
    /// The last `n` bytes. Azure has no suffix ranges (`x-ms-range` needs a
    /// start), so this reads the size with a HEAD and then the bounded range
    /// with `If-Match` on the HEAD's ETag: a write in between fails the read
    /// instead of mixing two versions, and the pair is tried again.
    async fn get_suffix(
        &self,
        key: &str,
        path: &Path,
        options: &GetOptions,
    ) -> Result<object_store::GetResult, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let object = match self.client.head(path).await {
                Ok(object) => object,
                Err(e) => return Err(self.read_error("get", key, e).await),
            };
            let range = options.range_of(&meta(key, &object))?;
            let request = object_store::GetOptions {
                if_match: object.e_tag.clone(),
                range: Some(GetRange::Bounded(range)),
                ..Default::default()
            };
            match self.client.get_opts(path, request).await {
                Ok(result) => return Ok(result),
                Err(object_store::Error::Precondition { .. }) if attempts < 3 => continue,
                Err(e) => return Err(self.read_error("get", key, e).await),
            }
        }
    }
}

fn object_range(range: ByteRange) -> GetRange {
    match range {
        ByteRange::Bounded { start, end } => GetRange::Bounded(start..end),
        ByteRange::From(start) => GetRange::Offset(start),
        ByteRange::Suffix(n) => GetRange::Suffix(n),
    }
}

fn meta(key: &str, meta: &object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta { key: key.to_string(), size: meta.size, etag: meta.e_tag.clone().map(ETag) }
}

#[async_trait::async_trait]
impl Store for AbsStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let (_, path) = self.path(key)?;
        let result = match options.range {
            Some(ByteRange::Suffix(_)) => self.get_suffix(key, &path, &options).await?,
            range => {
                let request = object_store::GetOptions {
                    if_none_match: options.if_none_match.map(|etag| etag.0),
                    range: range.map(object_range),
                    ..Default::default()
                };
                match self.client.get_opts(&path, request).await {
                    Ok(result) => result,
                    Err(e) => return Err(name_refused_range(self.read_error("get", key, e).await, range)),
                }
            }
        };
        let meta = meta(key, &result.meta);
        let range = result.range.clone();
        let key = key.to_string();
        let body = result.into_stream().map_err(move |e| StoreError::Backend {
            op: "get",
            key: key.clone(),
            message: format!("body interrupted: {}", error_chain(&e)),
            retryable: true,
        });
        Ok(GetResult { meta, range, body: Box::pin(body) })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let (_, path) = self.path(key)?;
        match self.client.head(&path).await {
            Ok(object) => Ok(meta(key, &object)),
            Err(e) => Err(self.read_error("head", key, e).await),
        }
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        let (full, path) = self.path(key)?;
        let (size, etag) = match payload {
            Payload::Bytes(bytes) => (bytes.len() as u64, self.put_bytes(key, &path, bytes, &mode).await?),
            Payload::File(file) => {
                let io = |source| StoreError::Io { op: "put", key: file.display().to_string(), source };
                let size = tokio::fs::metadata(&file).await.map_err(io)?.len();
                if size <= self.blocks.block_size as u64 {
                    let bytes = Bytes::from(tokio::fs::read(&file).await.map_err(io)?);
                    (bytes.len() as u64, self.put_bytes(key, &path, bytes, &mode).await?)
                } else {
                    self.blocks.put_file(key, &full, &file, &mode).await?
                }
            }
        };
        Ok(ObjectMeta { key: key.to_string(), size, etag })
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut paths = Vec::with_capacity(keys.len());
        for key in keys {
            paths.push(Ok(self.path(key)?.1));
        }
        // Batched (256 keys a request) by object_store.
        let mut results = self.client.delete_stream(futures::stream::iter(paths).boxed());
        while let Some(result) = results.next().await {
            let error = match result {
                Ok(_) => continue,
                Err(error) => error,
            };
            let failure = Failure::of(&error);
            let key = match &error {
                object_store::Error::NotFound { path, .. } => self.relative_key(path).to_string(),
                _ => keys.first().cloned().unwrap_or_default(),
            };
            match error {
                // Deleting is idempotent: a missing blob is done.
                object_store::Error::NotFound { .. } if !failure.container_missing() => {}
                _ => return Err(backend("delete", &key, &self.container, &failure)),
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let full_prefix = if self.prefix.is_empty() { prefix.to_string() } else { format!("{}/{prefix}", self.prefix) };
        // object_store lists whole path segments: list the folder the
        // prefix ends in and keep the keys that start with it.
        let folder = full_prefix.rsplit_once('/').map(|(folder, _)| Path::from(folder));
        let mut objects = self.client.list(folder.as_ref());
        let mut out = Vec::new();
        while let Some(object) = objects.next().await {
            let object = object.map_err(|e| backend("list", prefix, &self.container, &Failure::of(&e)))?;
            let full: &str = object.location.as_ref();
            if full.starts_with(&full_prefix) {
                out.push(meta(self.relative_key(full), &object));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn url(&self) -> &str {
        &self.url
    }
}
