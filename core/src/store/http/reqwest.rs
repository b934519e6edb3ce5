//! The native [`Transport`]: reqwest over rustls.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG, HeaderName, LAST_MODIFIED, RANGE};

use super::{HttpStore, Request, Response, Transport};
use crate::errors::error_chain;
use crate::store::StoreError;

/// GETs through a reqwest client (connection pooling, TLS, timeouts).
#[derive(Debug)]
struct Reqwest(reqwest::Client);

impl HttpStore {
    /// A store reading `<base>/<key>?<query>` through reqwest.
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
        Ok(HttpStore::with_transport(base, query, Box::new(Reqwest(client))))
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Transport for Reqwest {
    async fn get(&self, request: &Request<'_>) -> Result<Response, String> {
        let mut builder = self.0.get(request.url);
        if let Some(range) = &request.range {
            builder = builder.header(RANGE, range);
        }
        if let Some((name, value)) = request.conditional {
            builder = builder.header(name, value);
        }
        let response = builder.send().await.map_err(|e| error_chain(&e))?;
        let header = |name: HeaderName| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (etag, last_modified, date, content_range) =
            (header(ETAG), header(LAST_MODIFIED), header(DATE), header(CONTENT_RANGE));
        let length = header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let status = response.status().as_u16();
        // A connection cut mid-body is a retryable error naming the object.
        let key = request.key.to_string();
        let body = Box::pin(response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| StoreError::Backend {
                op: "get",
                key: key.clone(),
                message: format!("body interrupted: {}", error_chain(&e)),
                retryable: true,
            })
        }));
        Ok(Response { status, etag, last_modified, date, content_range, length, body })
    }
}
