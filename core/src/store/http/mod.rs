//! A read-only HTTP(S) origin (`https://host/prefix`): a CDN, a public
//! bucket, or a proxy that presigns. Object `key` is fetched from
//! `<base>/<key>`, with the store URL's query string (a shared token)
//! appended. Writes, deletes and listing are refused.
//!
//! The protocol (which requests, status mapping, retries, Content-Range,
//! validators) is here once; a [`Transport`] sends the GETs: reqwest
//! natively ([`HttpStore::new`]), the JavaScript host's `fetch` in the wasm
//! reader (edge-wasm).

#[cfg(any(feature = "http", feature = "http-ring"))]
mod reqwest;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::origin::{self, Conditional};
use super::types::{Body, ByteRange, GetOptions, GetResult, ObjectMeta, Payload, PutMode, StoreError};
use super::{Store, name_refused_range, validate_key};
use crate::retry::{Backoff, retry};

/// Transport failures, 5xx and 429: 0.2 s, 0.4 s, 0.8 s apart, four
/// attempts in all.
const SEND_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(200),
    cap: Duration::from_millis(800),
    jitter_percent: 0,
    attempts: Some(4),
};

/// The most a response without a Content-Length (compressed on the fly)
/// may hold: it is read into memory to learn its size.
const UNKNOWN_LENGTH_MAX_BYTES: u64 = 64 << 20;

const READ_ONLY_HINT: &str = "HTTP stores are for readers; write through an s3:// or file:// URL";

/// One GET, as the protocol asks a [`Transport`] to send it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The object's URL.
    pub url: &'a str,
    /// The object's key, for error messages.
    pub key: &'a str,
    /// The `Range` header to send.
    pub range: Option<String>,
    /// The conditional header to send: `If-None-Match` or
    /// `If-Modified-Since`, and its value.
    pub conditional: Option<(&'static str, &'a str)>,
    /// A mutable document (`manifest.json`, the snapshot index): a
    /// transport with a local HTTP cache (a browser's) must revalidate it
    /// with the origin, or a reader would follow an old manifest.
    pub revalidate: bool,
}

/// What a [`Transport`] received: the status, the headers the protocol
/// reads, and the body.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// `Date`.
    pub date: Option<String>,
    /// `Content-Range`.
    pub content_range: Option<String>,
    /// The body's length in bytes, where known before reading it: the
    /// `Content-Length`, or the length of a body the transport has already
    /// read (after the host decompressed it).
    pub length: Option<u64>,
    /// The body; its errors name the object (`body interrupted: ...`).
    pub body: Body,
}

/// Sends a GET: the one thing the HTTP store needs from an HTTP client.
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait Transport: std::fmt::Debug + Send + Sync {
    /// Sends `request`; an error is why no response came (the server could
    /// not be reached, the connection failed), as a message.
    async fn get(&self, request: &Request<'_>) -> Result<Response, String>;
}

/// A read-only store over plain HTTP(S) GETs.
#[derive(Debug)]
pub struct HttpStore {
    transport: Box<dyn Transport>,
    base: String,
    query: Option<String>,
}

impl HttpStore {
    /// A store reading `<base>/<key>?<query>` through `transport`.
    pub fn with_transport(base: String, query: Option<String>, transport: Box<dyn Transport>) -> HttpStore {
        HttpStore { transport, base, query }
    }

    fn object_url(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(match &self.query {
            Some(query) => format!("{}/{key}?{query}", self.base),
            None => format!("{}/{key}", self.base),
        })
    }

    /// Sends `request`, retrying transport failures, 5xx and 429 with
    /// backoff, and maps the final status to the store's errors.
    async fn send(&self, request: &Request<'_>) -> Result<Response, StoreError> {
        let key = request.key;
        retry(
            &SEND_BACKOFF,
            // What `check_status` and an unreachable server say is worth
            // another try (the transient class of these errors).
            |e: &StoreError| matches!(e, StoreError::Backend { retryable: true, .. }),
            || async {
                match self.transport.get(request).await {
                    Ok(response) => check_status(key, response),
                    Err(message) => Err(StoreError::Backend {
                        op: "get",
                        key: key.to_string(),
                        message: format!("store unreachable: {message}"),
                        retryable: true,
                    }),
                }
            },
        )
        .await
    }
}

fn check_status(key: &str, response: Response) -> Result<Response, StoreError> {
    let status = response.status;
    let (op, key) = ("get", key.to_string());
    match status {
        200..=299 => Ok(response),
        404 => Err(StoreError::NotFound { op, key }),
        304 => Err(StoreError::NotModified { key }),
        416 => Err(StoreError::InvalidRange { key, range: "requested".into(), size: 0 }),
        401 | 403 => Err(StoreError::Backend {
            op,
            key,
            message: format!(
                "HTTP {status}: access denied (a bucket without list permission also answers 403 for missing objects; grant s3:ListBucket or map 403 to 404 at the CDN)"
            ),
            retryable: false,
        }),
        s => Err(StoreError::Backend { op, key, message: format!("HTTP {s}"), retryable: s >= 500 || s == 429 }),
    }
}

/// The bytes `range` of a body that holds the whole object; what follows
/// the range is dropped unread.
struct Cut {
    body: Body,
    range: std::ops::Range<u64>,
    /// Where the body's next chunk starts in the object.
    offset: u64,
}

// A stream written out rather than `stream::unfold`: about half the code in
// the wasm reader, which counts its bytes.
impl futures::Stream for Cut {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while self.offset < self.range.end {
            let chunk = match std::task::ready!(self.body.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    self.offset = self.range.end;
                    return Poll::Ready(Some(Err(e)));
                }
                None => break,
            };
            let (start, end) = (self.offset, self.offset + chunk.len() as u64);
            self.offset = end;
            if end > self.range.start {
                let from = self.range.start.saturating_sub(start) as usize;
                let to = (self.range.end.min(end) - start) as usize;
                return Poll::Ready(Some(Ok(chunk.slice(from..to))));
            }
        }
        Poll::Ready(None)
    }
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
        let conditional = match options.if_none_match.as_ref().map(origin::conditional) {
            Some(Conditional::IfNoneMatch(etag)) => Some(("If-None-Match", etag)),
            Some(Conditional::IfModifiedSince(date)) => Some(("If-Modified-Since", date)),
            Some(Conditional::CompareContent) | None => None,
        };
        let range = options.range.map(|r| r.to_http_header());
        let request = Request { url: &url, key, range, conditional, revalidate: key.ends_with(".json") };
        let response = self.send(&request).await.map_err(|e| name_refused_range(e, options.range))?;
        let token = origin::token_from_headers(
            response.etag.as_deref(),
            response.last_modified.as_deref(),
            response.date.as_deref(),
        );
        let content_range = response.content_range.as_deref().and_then(parse_content_range);
        let ignored_range = content_range.is_none() && response.status == 200 && options.range.is_some();
        let (length, body) = (response.length, response.body);
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
                (range.clone(), size, Box::pin(Cut { body, range, offset: 0 }) as Body, token)
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
        Err(StoreError::ReadOnly { op: "put", key: key.to_string(), url: self.base.clone(), hint: READ_ONLY_HINT })
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let key = keys.first().cloned().unwrap_or_default();
        Err(StoreError::ReadOnly { op: "delete", key, url: self.base.clone(), hint: READ_ONLY_HINT })
    }

    /// Unsupported whatever the prefix: HTTP has no listing, so a bad
    /// prefix changes nothing (the wasm copy of this store did not check
    /// it, the native one did; the check cost the .wasm bytes for nothing).
    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Err(StoreError::Unsupported { op: "list", url: self.base.clone() })
    }

    fn url(&self) -> &str {
        &self.base
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
    use super::*;

    /// A transport for checks that must not reach it.
    #[derive(Debug)]
    struct Unreachable;

    #[async_trait::async_trait]
    impl Transport for Unreachable {
        async fn get(&self, _request: &Request<'_>) -> Result<Response, String> {
            Err("no network in this test".into())
        }
    }

    /// The native and wasm copies of this store disagreed on a bad list
    /// prefix (InvalidKey and Unsupported): listing is unsupported, whatever
    /// the prefix.
    #[tokio::test]
    async fn listing_is_unsupported_whatever_the_prefix() {
        let store = HttpStore::with_transport("https://cdn.example.com/db".into(), None, Box::new(Unreachable));
        for prefix in ["", "segments/", "../escape"] {
            let error = store.list(prefix).await.unwrap_err();
            assert!(matches!(error, StoreError::Unsupported { op: "list", .. }), "{prefix}: {error:?}");
        }
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(super::parse_content_range("bytes 0-99/1234"), Some((0, 100, 1234)));
        assert_eq!(super::parse_content_range("bytes */1234"), None);
    }
}
