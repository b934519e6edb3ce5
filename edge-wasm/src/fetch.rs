//! A read-only [`Store`] over the JavaScript host's `fetch`: the same
//! contract and messages as core's `HttpStore` (which uses reqwest), with
//! none of reqwest's URL and HTTP machinery in the .wasm. Object `key` is
//! fetched from `<base>/<key>`, with the store URL's query string (a shared
//! token) appended; writes, deletes and listing are refused.
//!
//! `fetch`, `Request` and `setTimeout` are the globals that browsers, Node
//! (18 and later) and workerd all have.

use std::time::Duration;

use bytes::Bytes;
use distributary_core::store::origin::{self, Conditional};
use distributary_core::store::{GetOptions, GetResult, ObjectMeta, Payload, PutMode, Store, StoreError, validate_key};
use js_sys::{Function, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCache, RequestInit, Response};

/// Attempts per request for network errors, 5xx and 429 (as `HttpStore`).
const MAX_ATTEMPTS: u32 = 4;

const READ_ONLY_HINT: &str = "HTTP stores are for readers; write through an s3:// or file:// URL";

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_request(request: &Request) -> Promise;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &Function, ms: i32) -> JsValue;
}

/// A read-only store over plain HTTP(S) GETs through `fetch`.
#[derive(Debug, Clone)]
pub struct FetchStore {
    base: String,
    query: Option<String>,
    /// The `fetch` to call instead of the global one (`options.fetch`: a
    /// persistent cache, added headers, a counting wrapper).
    fetch: Option<Function>,
}

impl FetchStore {
    /// A store reading `<url>/<key>`; `url` is `http(s)://host/prefix`,
    /// optionally with a query string sent with every request.
    pub fn new(url: &str) -> Result<FetchStore, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
            example: "https://cdn.example.com/app-db",
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "the wasm reader reads http:// and https:// stores (put a CDN, a public bucket or a presigning proxy in front of S3)",
            ));
        }
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query.to_string()).filter(|q| !q.is_empty())),
            None => (url, None),
        };
        let base = base.trim_end_matches('/').to_string();
        if base.split('/').count() < 3 || base.ends_with("//") {
            return Err(invalid("no host"));
        }
        Ok(FetchStore { base, query, fetch: None })
    }

    /// The same store, fetching through `fetch` (`(Request) => Promise<Response>`).
    pub fn with_fetch(self, fetch: Option<Function>) -> FetchStore {
        FetchStore { fetch, ..self }
    }

    fn object_url(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(match &self.query {
            Some(query) => format!("{}/{key}?{query}", self.base),
            None => format!("{}/{key}", self.base),
        })
    }

    /// Sends a GET, retrying network failures, 5xx and 429 with backoff.
    async fn send(&self, key: &str, options: &GetOptions) -> Result<Response, StoreError> {
        let url = self.object_url(key)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = fetch_once(self.fetch.as_ref(), &url, key, options).await;
            let retry = match &result {
                Ok(response) => response.status() >= 500 || response.status() == 429,
                Err(_) => true,
            };
            if !retry || attempt >= MAX_ATTEMPTS {
                return match result {
                    Ok(response) => check_status(key, response),
                    Err(message) => Err(StoreError::Backend {
                        op: "get",
                        key: key.to_string(),
                        message: format!("store unreachable: {message}"),
                        retryable: true,
                    }),
                };
            }
            sleep(Duration::from_millis(100 << attempt)).await;
        }
    }
}

/// One `fetch`. Mutable documents (`manifest.json`, the snapshot index)
/// are revalidated with the origin on every read: a browser's heuristic
/// cache would otherwise serve an old manifest and the replica would stop
/// following. Segments are immutable and may come from any cache.
async fn fetch_once(fetch: Option<&Function>, url: &str, key: &str, options: &GetOptions) -> Result<Response, String> {
    let init = RequestInit::new();
    init.set_method("GET");
    let headers = web_sys::Headers::new().map_err(describe)?;
    if let Some(range) = options.range {
        headers.set("Range", &range.to_http_header()).map_err(describe)?;
    }
    match options.if_none_match.as_ref().map(origin::conditional) {
        Some(Conditional::IfNoneMatch(etag)) => headers.set("If-None-Match", etag).map_err(describe)?,
        Some(Conditional::IfModifiedSince(date)) => headers.set("If-Modified-Since", date).map_err(describe)?,
        Some(Conditional::CompareContent) | None => {}
    }
    init.set_headers(&headers);
    let request = if key.ends_with(".json") {
        init.set_cache(RequestCache::NoCache);
        // workerd refuses the `cache` field; its fetch has no HTTP cache to
        // bypass anyway.
        Request::new_with_str_and_init(url, &init).or_else(|_| {
            let plain = RequestInit::new();
            plain.set_method("GET");
            plain.set_headers(&headers);
            Request::new_with_str_and_init(url, &plain)
        })
    } else {
        Request::new_with_str_and_init(url, &init)
    }
    .map_err(describe)?;
    let promise = match fetch {
        Some(fetch) => {
            fetch.call1(&JsValue::NULL, &request).map_err(describe)?.dyn_into::<Promise>().map_err(describe)?
        }
        None => fetch_request(&request),
    };
    let response = JsFuture::from(promise).await.map_err(describe)?;
    response.dyn_into::<Response>().map_err(|_| "fetch did not return a Response".to_string())
}

/// The message of a JavaScript exception (`TypeError: fetch failed` and its
/// cause, where the host gives one).
fn describe(error: JsValue) -> String {
    let Some(error) = error.dyn_ref::<js_sys::Error>() else {
        return error.as_string().unwrap_or_else(|| format!("{error:?}"));
    };
    let mut message = String::from(error.message());
    let cause = error.cause();
    if let Some(cause) = cause.dyn_ref::<js_sys::Error>() {
        message.push_str(": ");
        message.push_str(&String::from(cause.message()));
    }
    message
}

/// Maps an HTTP status to the store's error contract, as `HttpStore` does.
fn check_status(key: &str, response: Response) -> Result<Response, StoreError> {
    let status = response.status();
    let key = key.to_string();
    match status {
        200..=299 => Ok(response),
        404 => Err(StoreError::NotFound { op: "get", key }),
        304 => Err(StoreError::NotModified { key }),
        416 => Err(StoreError::InvalidRange { key, range: "requested".into(), size: 0 }),
        401 | 403 => Err(StoreError::Backend {
            op: "get",
            key,
            message: format!(
                "HTTP {status}: access denied (a bucket without list permission also answers 403 for missing objects; grant s3:ListBucket or map 403 to 404 at the CDN)"
            ),
            retryable: false,
        }),
        s => Err(StoreError::Backend { op: "get", key, message: format!("HTTP {s}"), retryable: s >= 500 || s == 429 }),
    }
}

/// Sleeps on the host's timer.
async fn sleep(duration: Duration) {
    let ms = i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
    let promise = Promise::new(&mut |resolve, _reject| {
        set_timeout(&resolve, ms);
    });
    // A timer promise never rejects.
    let _ = JsFuture::from(promise).await;
}

/// Parses `bytes start-end/total` into `(start, end_exclusive, total)`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
    Some((start, end + 1, total.parse().ok()?))
}

#[async_trait::async_trait(?Send)]
impl Store for FetchStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let response = self.send(key, &options).await.map_err(|e| match e {
            StoreError::InvalidRange { key, .. } => StoreError::InvalidRange {
                key,
                range: options.range.map(|r| r.to_http_header()).unwrap_or_default(),
                size: 0,
            },
            other => other,
        })?;
        let headers = response.headers();
        let header = |name: &str| headers.get(name).ok().flatten();
        let token = origin::token_from_headers(
            header("etag").as_deref(),
            header("last-modified").as_deref(),
            header("date").as_deref(),
        );
        let content_range = header("content-range").and_then(|v| parse_content_range(&v));
        let ignored_range = content_range.is_none() && response.status() == 200 && options.range.is_some();
        let body_error = |e: JsValue| StoreError::Backend {
            op: "get",
            key: key.to_string(),
            message: format!("body interrupted: {}", describe(e)),
            retryable: true,
        };
        let buffer = JsFuture::from(response.array_buffer().map_err(body_error)?).await.map_err(body_error)?;
        let mut bytes = Bytes::from(Uint8Array::new(&buffer).to_vec());
        let (range, size) = match (content_range, options.range) {
            (Some((start, end, total)), _) => (start..end, total),
            (None, Some(asked)) if ignored_range => {
                // The origin ignored Range (a plain static file server) and
                // sent the whole object: keep the asked bytes.
                let size = bytes.len() as u64;
                let range = asked.resolve(size).ok_or_else(|| StoreError::InvalidRange {
                    key: key.to_string(),
                    range: asked.to_http_header(),
                    size,
                })?;
                bytes = bytes.slice(range.start as usize..range.end as usize);
                (range, size)
            }
            // The body's own length: a transparently decompressed body has
            // another length than Content-Length says.
            (None, _) => (0..bytes.len() as u64, bytes.len() as u64),
        };
        // A whole small object with no validator from the server (a
        // manifest) is versioned by its content.
        let whole = range == (0..size);
        let etag = match token {
            None if whole && size <= origin::CONTENT_TOKEN_MAX_BYTES => Some(origin::content_token(&bytes)),
            token => token,
        };
        // Also for a server (or cache) that ignores conditional requests and
        // answers 200 with the same validator.
        if origin::unchanged(options.if_none_match.as_ref(), etag.as_ref()) {
            return Err(StoreError::NotModified { key: key.to_string() });
        }
        let meta = ObjectMeta { key: key.to_string(), size, etag };
        let body = futures::stream::once(async move { Ok(bytes) });
        Ok(GetResult { meta, range, body: Box::pin(body) })
    }

    /// A one-byte ranged GET rather than HEAD, as `HttpStore` (presigned
    /// URLs are signed for one method).
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let first_byte = GetOptions {
            range: Some(distributary_core::store::ByteRange::Bounded { start: 0, end: 1 }),
            if_none_match: None,
        };
        match self.get(key, first_byte).await {
            Ok(result) => Ok(result.meta),
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

    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Err(StoreError::Unsupported { op: "list", url: self.base.clone() })
    }

    fn url(&self) -> &str {
        &self.base
    }
}
