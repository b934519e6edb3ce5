//! The HTTP store's transport over the JavaScript host's `fetch`: core's
//! `HttpStore` (the protocol, as native readers run it over reqwest) with
//! none of reqwest's URL and HTTP machinery in the .wasm.
//!
//! `fetch` and `Request` are globals that browsers, Node (18 and later) and
//! workerd all have.

use bytes::Bytes;
use distributary_core::store::http::{Request as HttpRequest, Response as HttpResponse, Transport};
use distributary_core::store::{HttpStore, StoreError, StoreUrl};
use js_sys::{Function, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCache, RequestInit, Response};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_request(request: &Request) -> Promise;
}

/// The read-only store at `url` (`http(s)://host/prefix`, optionally with a
/// query string sent with every request), fetching through `fetch`
/// (`options.fetch`: a persistent cache, added headers, a counting
/// wrapper) or the global one.
pub fn open(url: &str, fetch: Option<Function>) -> Result<HttpStore, StoreError> {
    let (base, query) = StoreUrl::parse_http(url)?;
    Ok(HttpStore::with_transport(base, query, Box::new(Fetch(fetch))))
}

/// GETs through `fetch`: the function given, or the global one.
#[derive(Debug)]
struct Fetch(Option<Function>);

#[async_trait::async_trait(?Send)]
impl Transport for Fetch {
    async fn get(&self, request: &HttpRequest<'_>) -> Result<HttpResponse, String> {
        let response = fetch_once(self.0.as_ref(), request).await?;
        let headers = response.headers();
        let header = |name| header(&headers, name);
        let (etag, last_modified, date, content_range) =
            (header("etag"), header("last-modified"), header("date"), header("content-range"));
        // The body is read here, whole: its length is the decompressed
        // one, where Content-Length gives the length on the wire.
        let body = body_bytes(&response).await.map_err(|message| StoreError::Backend {
            op: "get",
            key: request.key.to_string(),
            message: format!("body interrupted: {message}"),
            retryable: true,
        });
        let length = body.as_ref().ok().map(|bytes| bytes.len() as u64);
        let body = Box::pin(futures::stream::once(async move { body }));
        Ok(HttpResponse { status: response.status(), etag, last_modified, date, content_range, length, body })
    }
}

/// A response header's value. Not inlined: one copy for the four headers
/// read keeps the .wasm smaller.
#[inline(never)]
fn header(headers: &web_sys::Headers, name: &str) -> Option<String> {
    headers.get(name).ok().flatten()
}

async fn body_bytes(response: &Response) -> Result<Bytes, String> {
    let buffer = JsFuture::from(response.array_buffer().map_err(describe)?).await.map_err(describe)?;
    Ok(Bytes::from(Uint8Array::new(&buffer).to_vec()))
}

/// One `fetch`. Mutable documents are revalidated with the origin on every
/// read: a browser's heuristic cache would otherwise serve an old manifest
/// and the replica would stop following. Segments are immutable and may
/// come from any cache.
async fn fetch_once(fetch: Option<&Function>, request: &HttpRequest<'_>) -> Result<Response, String> {
    let init = RequestInit::new();
    init.set_method("GET");
    let headers = web_sys::Headers::new().map_err(describe)?;
    if let Some(range) = &request.range {
        headers.set("Range", range).map_err(describe)?;
    }
    if let Some((name, value)) = request.conditional {
        headers.set(name, value).map_err(describe)?;
    }
    init.set_headers(&headers);
    let url = request.url;
    let js_request = if request.revalidate {
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
            fetch.call1(&JsValue::NULL, &js_request).map_err(describe)?.dyn_into::<Promise>().map_err(describe)?
        }
        None => fetch_request(&js_request),
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
