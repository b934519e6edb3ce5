//! Large file payloads as a block blob: each block staged with Put Block,
//! then one Put Block List that commits them under the write's condition.
//!
//! Why not object_store's multipart upload: it commits without a condition
//! (`PutMultipartOptions` has no mode), which would let two creators of one
//! key both "win". Azure evaluates `If-None-Match: *` / `If-Match` on the
//! Put Block List itself, and staged blocks stay invisible until a commit,
//! so the object appears whole or not at all and create-if-absent holds for
//! any size. The requests are signed by object_store's [`AzureAuthorizer`]
//! (no hand-written signing) and sent through its HTTP client; memory holds
//! one block at a time.

use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::azure::{AzureAuthorizer, AzureCredential};
use object_store::client::{HttpClient, HttpRequest, HttpResponse};
use tokio::io::AsyncReadExt;

use super::errors::{Failure, backend};
use crate::errors::error_chain;
use crate::store::{ETag, PutMode, StoreError};

/// What a block upload needs: object_store's HTTP client and credential.
#[derive(Clone, Debug)]
pub(super) struct BlockClient {
    pub http: HttpClient,
    pub credential: Arc<AzureCredential>,
    pub account: String,
    pub container: String,
    /// `https://account.blob.core.windows.net/container` (or the custom
    /// endpoint's equivalent), without a trailing `/`.
    pub container_url: String,
    /// Bytes per block (and the largest file sent in one Put Blob).
    pub block_size: usize,
}

impl BlockClient {
    /// Uploads the file at `path` to `full` (the key inside the container)
    /// and commits it under `mode`. Returns its size and new ETag; `key`
    /// (relative to the store's prefix) names the object in errors.
    pub async fn put_file(
        &self,
        key: &str,
        full: &str,
        path: &Path,
        mode: &PutMode,
    ) -> Result<(u64, Option<ETag>), StoreError> {
        let io = |source: std::io::Error| StoreError::Io { op: "put", key: path.display().to_string(), source };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        // One upload's block IDs share a random nonce: racing writers of
        // one key stage their blocks side by side without mixing them up.
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let nonce = u64::from_le_bytes(nonce);
        let mut ids = Vec::new();
        let mut size = 0u64;
        loop {
            let block = read_block(&mut file, self.block_size).await.map_err(io)?;
            let last = block.len() < self.block_size;
            if block.is_empty() && !ids.is_empty() {
                break;
            }
            size += block.len() as u64;
            // Same-length IDs, as Azure requires within a blob.
            let id = base64_id(&format!("{nonce:016x}-{:08x}", ids.len()));
            self.stage(&id, full, block).await.map_err(|f| backend("put", key, &self.container, &f))?;
            ids.push(id);
            if last {
                break;
            }
        }
        let etag = self.commit(key, full, &ids, mode).await?;
        Ok((size, etag))
    }

    fn blob_url(&self, full: &str) -> String {
        let parts: Vec<String> =
            full.split('/').map(|part| percent_encoding::utf8_percent_encode(part, COMPONENT).to_string()).collect();
        format!("{}/{}", self.container_url, parts.join("/"))
    }

    /// Put Block: stages one block, invisible until a commit names it.
    async fn stage(&self, id: &str, full: &str, block: Bytes) -> Result<(), Failure> {
        let id = percent_encoding::utf8_percent_encode(id, COMPONENT);
        let url = format!("{}?comp=block&blockid={id}", self.blob_url(full));
        let request = http::Request::put(url).header(http::header::CONTENT_LENGTH, block.len()).body(block.into());
        self.send(request).await.map(|_| ())
    }

    /// Put Block List under `mode`'s condition.
    async fn commit(&self, key: &str, full: &str, ids: &[String], mode: &PutMode) -> Result<Option<ETag>, StoreError> {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in ids {
            xml.push_str(&format!("<Latest>{id}</Latest>"));
        }
        xml.push_str("</BlockList>");
        let url = format!("{}?comp=blocklist", self.blob_url(full));
        let request = http::Request::put(url).header(http::header::CONTENT_LENGTH, xml.len());
        let request = match mode {
            PutMode::Create => request.header(http::header::IF_NONE_MATCH, "*"),
            PutMode::Update(etag) => request.header(http::header::IF_MATCH, etag.0.as_str()),
        };
        let failure = match self.send(request.body(xml.into())).await {
            Ok(response) => {
                let etag = response.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok());
                return Ok(etag.map(|v| ETag(v.to_string())));
            }
            Err(failure) => failure,
        };
        let condition_failed = || match mode {
            PutMode::Create => StoreError::AlreadyExists { key: key.to_string() },
            PutMode::Update(_) => StoreError::PreconditionFailed { key: key.to_string() },
        };
        match (failure.status, failure.code.as_deref()) {
            // Committing a blob discards every uncommitted block of it: a
            // writer that committed while this one staged took the key.
            (_, Some("InvalidBlockList")) => Err(condition_failed()),
            // Azure answers 412; Azurite 409 to a create of an existing blob.
            (Some(409 | 412), _) => Err(condition_failed()),
            // If-Match on a blob that no longer exists.
            (Some(404), Some("BlobNotFound")) if matches!(mode, PutMode::Update(_)) => Err(condition_failed()),
            _ => Err(backend("put", key, &self.container, &failure)),
        }
    }

    /// Create Container; one that exists already is not an error.
    pub async fn create_container(&self) -> Result<(), StoreError> {
        let url = format!("{}?restype=container", self.container_url);
        let request = http::Request::put(url).header(http::header::CONTENT_LENGTH, 0).body(Bytes::new().into());
        match self.send(request).await {
            Ok(_) => Ok(()),
            Err(failure) if failure.code.as_deref() == Some("ContainerAlreadyExists") => Ok(()),
            Err(failure) => Err(backend("create container", &self.container, &self.container, &failure)),
        }
    }

    /// Signs and sends one request; a non-2xx answer is a [`Failure`] with
    /// its status and Azure's error code from the body.
    async fn send(&self, request: Result<HttpRequest, http::Error>) -> Result<HttpResponse, Failure> {
        let local = |chain: String| Failure { status: None, code: None, chain, transport: false };
        let mut request = request.map_err(|e| local(format!("build request: {e}")))?;
        AzureAuthorizer::new(&self.credential, &self.account)
            .try_authorize(&mut request)
            .map_err(|e| local(format!("sign request: {}", error_chain(&e))))?;
        let response = self.http.execute(request).await.map_err(|e| Failure {
            status: None,
            code: None,
            chain: error_chain(&e),
            transport: true,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.into_body().bytes().await.unwrap_or_default();
        let body = String::from_utf8_lossy(&body).into_owned();
        Err(Failure::from_response(status.as_u16(), &body))
    }
}

/// Reads up to `size` bytes (fewer only at the end of the file).
async fn read_block(file: &mut tokio::fs::File, size: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(size);
    let mut filled = 0;
    while filled < size {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

fn base64_id(id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(id)
}

/// Characters escaped in a URL path component or query value: all but
/// RFC 3986's unreserved ones.
const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
