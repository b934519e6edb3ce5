//! A read-only HTTP(S) origin (`https://host/prefix`): a CDN, a public
//! bucket, or a proxy that presigns. Object `key` is fetched from
//! `<base>/<key>`, with the store URL's query string (a shared token)
//! appended. Writes, deletes and listing are refused.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RANGE,
};

use super::origin::{self, Conditional};
use super::types::{Body, ByteRange, GetOptions, GetResult, ObjectMeta, Payload, PutMode, StoreError};
use super::{Store, validate_key, validate_prefix};

/// Attempts per request for transport errors, 5xx and 429.
const MAX_ATTEMPTS: u32 = 4;

/// The most a response without a Content-Length (compressed on the fly)
/// may hold: it is read into memory to learn its size.
const UNKNOWN_LENGTH_MAX_BYTES: u64 = 64 << 20;

const READ_ONLY_HINT: &str = "HTTP stores are for readers; write through an s3:// or file:// URL";

/// A read-only store over plain HTTP(S) GETs.
#[derive(Debug, Clone)]
pub struct HttpStore {
    client: reqwest::Client,
    base: String,
    query: Option<String>,
    url: String,
}

impl HttpStore {
    /// A store reading `<base>/<key>?<query>`.
    pub fn new(base: String, query: Option<String>) -> Result<HttpStore, StoreError> {
        // reqwest takes rustls' process-wide provider when one is installed
        // and falls back to aws-lc-rs (the `http` feature) otherwise; a
        // build with only `http-ring` has no fallback, so ring is installed
        // first. An `Err` means a provider is already installed: reqwest
        // uses that one, which is as good.
        #[cfg(all(feature = "http-ring", not(feature = "http"), not(target_arch = "wasm32")))]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder();
        #[cfg(not(target_arch = "wasm32"))]
        let builder = builder.connect_timeout(Duration::from_secs(10)).read_timeout(Duration::from_secs(60));
        let client = builder.build().map_err(|e| StoreError::InvalidUrl {
            url: base.clone(),
            reason: format!("cannot build an HTTP client: {e}"),
            example: "https://cdn.example.com/app-db",
        })?;
        Ok(HttpStore { client, url: base.clone(), base, query })
    }

    fn object_url(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(match &self.query {
            Some(query) => format!("{}/{key}?{query}", self.base),
            None => format!("{}/{key}", self.base),
        })
    }

    /// Sends a request built by `build`, retrying transport failures, 5xx
    /// and 429 with exponential backoff.
    async fn send(
        &self,
        op: &'static str,
        key: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = build().send().await;
            let retry = match &result {
                Ok(response) => {
                    response.status().is_server_error() || response.status() == StatusCode::TOO_MANY_REQUESTS
                }
                Err(_) => true,
            };
            if !retry || attempt >= MAX_ATTEMPTS {
                return match result {
                    Ok(response) => check_status(op, key, response),
                    Err(e) => Err(StoreError::Backend {
                        op,
                        key: key.to_string(),
                        message: format!("store unreachable: {}", error_chain(&e)),
                        retryable: true,
                    }),
                };
            }
            sleep(Duration::from_millis(100 << attempt)).await;
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

#[cfg(target_arch = "wasm32")]
async fn sleep(_duration: Duration) {
    // No timer without a JS runtime binding; retry at once.
}

fn error_chain(err: &dyn std::error::Error) -> String {
    crate::errors::error_chain(err)
}

fn check_status(op: &'static str, key: &str, response: reqwest::Response) -> Result<reqwest::Response, StoreError> {
    let status = response.status();
    let key = key.to_string();
    match status {
        s if s.is_success() => Ok(response),
        StatusCode::NOT_FOUND => Err(StoreError::NotFound { op, key }),
        StatusCode::NOT_MODIFIED => Err(StoreError::NotModified { key }),
        StatusCode::RANGE_NOT_SATISFIABLE => Err(StoreError::InvalidRange { key, range: "requested".into(), size: 0 }),
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(StoreError::Backend {
            op,
            key,
            message: format!(
                "HTTP {status}: access denied (a bucket without list permission also answers 403 for missing objects; grant s3:ListBucket or map 403 to 404 at the CDN)"
            ),
            retryable: false,
        }),
        s => Err(StoreError::Backend {
            op,
            key,
            message: format!("HTTP {s}"),
            retryable: s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS,
        }),
    }
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<&str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The response's body as the store's chunk stream; a connection cut
/// mid-body is a retryable error naming the object.
fn body_stream(key: &str, response: reqwest::Response) -> Body {
    let key = key.to_string();
    Box::pin(response.bytes_stream().map(move |chunk| {
        chunk.map_err(|e| StoreError::Backend {
            op: "get",
            key: key.clone(),
            message: format!("body interrupted: {}", error_chain(&e)),
            retryable: true,
        })
    }))
}

/// The bytes `range` of a body that holds the whole object.
fn cut(body: Body, range: std::ops::Range<u64>) -> Body {
    let state = (body, 0u64);
    Box::pin(futures::stream::unfold(state, move |(mut body, mut offset)| {
        let range = range.clone();
        async move {
            while offset < range.end {
                let chunk = match body.next().await? {
                    Ok(chunk) => chunk,
                    Err(e) => return Some((Err(e), (body, range.end))),
                };
                let (start, end) = (offset, offset + chunk.len() as u64);
                offset = end;
                if end <= range.start {
                    continue;
                }
                let from = range.start.saturating_sub(start) as usize;
                let to = (range.end.min(end) - start) as usize;
                return Some((Ok(chunk.slice(from..to)), (body, offset)));
            }
            // Past the range: the rest is dropped, unread.
            None
        }
    }))
}

/// Reads a body of at most `length` bytes (or, without a Content-Length,
/// of at most [`UNKNOWN_LENGTH_MAX_BYTES`]) into memory.
async fn read_whole(key: &str, mut body: Body, length: Option<u64>) -> Result<Bytes, StoreError> {
    let mut bytes = Vec::with_capacity(length.unwrap_or(0) as usize);
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
        if length.is_none() && bytes.len() as u64 > UNKNOWN_LENGTH_MAX_BYTES {
            return Err(StoreError::Backend {
                op: "get",
                key: key.to_string(),
                message: format!(
                    "the server sent more than {UNKNOWN_LENGTH_MAX_BYTES} bytes without a Content-Length (turn off on-the-fly compression for segments)"
                ),
                retryable: false,
            });
        }
    }
    if let Some(length) = length.filter(|&l| l != bytes.len() as u64) {
        return Err(StoreError::Backend {
            op: "get",
            key: key.to_string(),
            message: format!("body ended after {} of {length} bytes", bytes.len()),
            retryable: true,
        });
    }
    Ok(Bytes::from(bytes))
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Store for HttpStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let url = self.object_url(key)?;
        let conditional = options.if_none_match.as_ref().map(origin::conditional);
        let response = self
            .send("get", key, || {
                let mut request = self.client.get(&url);
                if let Some(range) = options.range {
                    request = request.header(RANGE, range.to_http_header());
                }
                match conditional {
                    Some(Conditional::IfNoneMatch(etag)) => request.header(IF_NONE_MATCH, etag),
                    Some(Conditional::IfModifiedSince(date)) => request.header(IF_MODIFIED_SINCE, date),
                    Some(Conditional::CompareContent) | None => request,
                }
            })
            .await
            .map_err(|e| match e {
                StoreError::InvalidRange { key, .. } => StoreError::InvalidRange {
                    key,
                    range: options.range.map(|r| r.to_http_header()).unwrap_or_default(),
                    size: 0,
                },
                other => other,
            })?;
        let length: Option<u64> = header(&response, CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let token = origin::token_from_headers(
            header(&response, ETAG),
            header(&response, LAST_MODIFIED),
            header(&response, DATE),
        );
        let content_range = header(&response, CONTENT_RANGE).and_then(parse_content_range);
        let ignored_range = content_range.is_none() && response.status() == StatusCode::OK && options.range.is_some();
        let body = body_stream(key, response);
        let (range, size, body, token) = match (content_range, options.range) {
            (Some((start, end, total)), _) => (start..end, total, body, token),
            (None, Some(asked)) if ignored_range => {
                // The origin ignored Range (a plain static file server) and
                // sends the whole object: keep the asked bytes, drop the rest.
                let size = length.ok_or_else(|| StoreError::Backend {
                    op: "get",
                    key: key.to_string(),
                    message: "the server ignored the Range header and sent no Content-Length".into(),
                    retryable: false,
                })?;
                let range = asked.resolve(size).ok_or_else(|| StoreError::InvalidRange {
                    key: key.to_string(),
                    range: asked.to_http_header(),
                    size,
                })?;
                (range.clone(), size, cut(body, range), token)
            }
            (None, _) => match length {
                Some(size) if token.is_some() || size > origin::CONTENT_TOKEN_MAX_BYTES => (0..size, size, body, token),
                _ => {
                    // A small object the server gives no validator for (a
                    // manifest) is versioned by its content; a body of
                    // unknown length (compressed on the fly) is sized by
                    // reading it.
                    let bytes = read_whole(key, body, length).await?;
                    let token = token.unwrap_or_else(|| origin::content_token(&bytes));
                    let size = bytes.len() as u64;
                    (0..size, size, Box::pin(futures::stream::once(async move { Ok(bytes) })) as Body, Some(token))
                }
            },
        };
        // Also for a server that ignores conditional requests and answers
        // 200 with the same validator.
        if origin::unchanged(options.if_none_match.as_ref(), token.as_ref()) {
            return Err(StoreError::NotModified { key: key.to_string() });
        }
        Ok(GetResult { meta: ObjectMeta { key: key.to_string(), size, etag: token }, range, body })
    }

    /// A one-byte ranged GET rather than HEAD: presigned URLs are signed for
    /// one method (GET), and some origins answer HEAD differently from GET.
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let first_byte = GetOptions { range: Some(ByteRange::Bounded { start: 0, end: 1 }), if_none_match: None };
        match self.get(key, first_byte).await {
            Ok(result) => Ok(result.meta),
            // An empty object has no first byte.
            Err(StoreError::InvalidRange { .. }) => Ok(self.get(key, GetOptions::default()).await?.meta),
            Err(StoreError::NotFound { key, .. }) => Err(StoreError::NotFound { op: "head", key }),
            Err(e) => Err(e),
        }
    }

    async fn put(&self, key: &str, _payload: Payload, _mode: PutMode) -> Result<ObjectMeta, StoreError> {
        Err(StoreError::ReadOnly { op: "put", key: key.to_string(), url: self.url.clone(), hint: READ_ONLY_HINT })
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let key = keys.first().cloned().unwrap_or_default();
        Err(StoreError::ReadOnly { op: "delete", key, url: self.url.clone(), hint: READ_ONLY_HINT })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        Err(StoreError::Unsupported { op: "list", url: self.url.clone() })
    }

    fn url(&self) -> &str {
        &self.url
    }
}

/// Parses `bytes start-end/total` into `(start, end_exclusive, total)`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
    Some((start, end + 1, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_content_range() {
        assert_eq!(super::parse_content_range("bytes 0-99/1234"), Some((0, 100, 1234)));
        assert_eq!(super::parse_content_range("bytes */1234"), None);
    }
}
