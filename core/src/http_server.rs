//! The HTTP/1 server the programs' endpoints run on: `edge-reader serve`'s
//! API, and the `/metrics` endpoints of `distributary replicate` (with its
//! `/status` and `/bookmark`) and `distributary compact --watch`. A program
//! gives a handler that maps a request to a response; [`run`] serves a
//! listener with it until a shutdown future resolves, then drains the
//! requests in flight. [`metrics_response`] answers a scrape with registries
//! in Prometheus' text format.
//!
//! One server for all of them, on hyper: requests of any size, keep-alive,
//! pipelining and slow clients are handled by a maintained HTTP/1
//! implementation (the replicator's endpoint used to be written by hand,
//! and read one 4 KiB buffer per connection).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::{Metric, Registry};
use tokio::net::TcpListener;

/// The body of every response: small, and built whole before it is sent.
pub type Body = Full<Bytes>;

/// How long a client may take to send a request's headers (slow clients
/// must not hold connections forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` with `handler` until `shutdown` resolves, then stops
/// accepting, lets every request in flight finish (at most `drain`), and
/// returns. Idle keep-alive connections are closed at shutdown.
pub async fn run<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>, drain: Duration)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let answer = handler(request);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("every connection drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "gave up waiting for connections to drain"),
    }
}

/// A response with `status`, a `Content-Type` and `body`.
pub fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `metric`, registered in `registry` as `name` with `help`: the handle its
/// owner records into (a clone shares the value with the registered one).
pub fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// `registries` in Prometheus' text format (version 0.0.4), one after the
/// other: what a scrape of `/metrics` gets.
pub fn prometheus_text(registries: &[&Registry]) -> String {
    let mut text = String::new();
    for registry in registries {
        // The encoder fails only when its writer does, and a String does not.
        let _ = prometheus_text::encode(&mut text, registry);
    }
    text
}

/// The answer to a scrape: [`prometheus_text`] of `registries`.
pub fn metrics_response(registries: &[&Registry]) -> Response<Body> {
    response(StatusCode::OK, prometheus_text::CONTENT_TYPE, prometheus_text(registries))
}
