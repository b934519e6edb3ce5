//! `serve`'s HTTP API on core's HTTP/1 server: routing, the bearer token, body limits,
//! bookmark waits, and [`run`], which serves a listener until a shutdown
//! future resolves and then drains the requests in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distributary_core::http_server::{self, Body};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::prometheus_text;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use super::api::{self, ApiError};
use super::follower::{Follower, View};
use super::metrics::Metrics;
use super::pool::Pool;

/// Everything a request needs.
pub struct App {
    /// The sync loop's state (TXID, status, bookmark waits).
    pub follower: Arc<Follower>,
    /// The read connections.
    pub pool: Pool,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The bearer token every route but `/healthz` requires, if any.
    pub token: Option<Vec<u8>>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Longest (and default) wait for a bookmark.
    pub max_wait: Duration,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets
/// every request in flight finish (at most `drain`), and returns.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>, drain: Duration) {
    let handler = move |request| {
        let app = Arc::clone(&app);
        async move { handle(&app, request).await }
    };
    http_server::run(listener, handler, shutdown, drain).await;
}

/// A response and the route it is counted under.
async fn handle(app: &App, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let route: &'static str = match path.as_str() {
        "/query" => "/query",
        "/status" => "/status",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        _ => "other",
    };
    let result = match if route == "/healthz" { Ok(()) } else { authorize(app, &request) } {
        Ok(()) => route_request(app, route, request).await,
        Err(error) => Err(error),
    };
    let mut response = result.unwrap_or_else(|error| {
        let mut response = json(error.status, error.body());
        if error.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    });
    // Every answer says where the replica is; a query's says where it read.
    if !response.headers().contains_key("x-replica-txid")
        && let Some(view) = app.follower.view()
    {
        set_view_headers(&mut response, &view);
    }
    app.metrics.record_response(route, response.status().as_u16());
    response
}

/// Checks the bearer token, if one is required. A request with more than
/// one `Authorization` header is refused with 400, not 401: the header is a
/// singleton (RFC 9110), two of them are a malformed request rather than
/// missing credentials, and which one counts would differ between this
/// server and each proxy in front of it (until this check, the first one
/// did, so a wrong second header passed unnoticed).
fn authorize(app: &App, request: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(token) = &app.token else {
        return Ok(());
    };
    let headers = request.headers().get_all(header::AUTHORIZATION);
    let count = headers.iter().count();
    if count > 1 {
        return Err(ApiError::bad_request(format!(
            "the request has {count} Authorization headers: send exactly one (Authorization: Bearer <the --token-file's token>)"
        )));
    }
    let unauthorized = || ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: "missing or wrong bearer token (send Authorization: Bearer <the --token-file's token>)".into(),
    };
    let given = headers.iter().next().and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")).ok_or_else(unauthorized)?;
    // Constant time in the token's content (its length is not a secret).
    if bool::from(given.ct_eq(token.as_slice())) { Ok(()) } else { Err(unauthorized()) }
}

async fn route_request(app: &App, route: &'static str, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    match (route, &method) {
        ("/query", &Method::GET | &Method::POST) => query(app, request).await,
        ("/status", &Method::GET) => {
            Ok(json(StatusCode::OK, serde_json::to_string_pretty(&app.follower.status()).unwrap_or_default()))
        }
        ("/healthz", &Method::GET) => {
            let status = app.follower.status();
            let code = if status.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = serde_json::json!({
                "healthy": status.healthy,
                "ready": status.ready,
                "txid": status.txid,
                "staleness_seconds": status.staleness_seconds,
                "max_staleness_seconds": status.max_staleness_seconds,
                "last_error": status.last_error,
            });
            Ok(json(code, body.to_string()))
        }
        ("/metrics", &Method::GET) => {
            let text = app.metrics.render(&app.follower.status().gauges());
            Ok(http_server::response(StatusCode::OK, prometheus_text::CONTENT_TYPE, text))
        }
        ("other", _) => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!(
                "no route {} (try POST /query, GET /query, /status, /healthz or /metrics)",
                request.uri().path()
            ),
        }),
        (route, method) => Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: format!(
                "{method} {route} is not supported ({route} takes {})",
                if route == "/query" { "GET or POST" } else { "GET" }
            ),
        }),
    }
}

async fn query(app: &App, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (min_txid, generation) = (header("x-min-txid"), header("x-min-generation"));
    let mut parsed = if request.method() == Method::GET {
        api::parse_query_string(request.uri().query().unwrap_or(""))?
    } else {
        let declared =
            request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > app.max_body) {
            return Err(too_large(app.max_body));
        }
        let body = Limited::new(request.into_body(), app.max_body).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_large(app.max_body)
            } else {
                ApiError::bad_request(format!("read the request body: {e}"))
            }
        })?;
        api::parse_body(&body.to_bytes())?
    };
    if parsed.bookmark.is_none() {
        let min_txid =
            match min_txid {
                Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("X-Min-Txid must be a TXID (an integer), not {text:?}"))
                })?),
                None => None,
            };
        parsed.bookmark = api::bookmark(min_txid, generation.as_deref())?;
    }
    if let Some(bookmark) = parsed.bookmark {
        let wait = parsed.wait.unwrap_or(app.max_wait).min(app.max_wait);
        app.follower.wait_for(bookmark, wait).await.map_err(|at| api::bookmark_timeout(&bookmark, wait, at))?;
    }
    let (rows, elapsed) = app.pool.query(parsed.sql, parsed.params, app.pool.limits()).await?;
    app.metrics.record_query(elapsed);
    let mut response = json(StatusCode::OK, api::rows_body(&rows));
    set_view_headers(&mut response, &rows.view);
    Ok(response)
}

fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "body_too_large",
        message: format!("the request body is larger than {limit} bytes (--max-body)"),
    }
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    http_server::response(status, "application/json", body)
}

fn set_view_headers(response: &mut Response<Body>, view: &View) {
    let headers = response.headers_mut();
    headers.insert("x-replica-txid", HeaderValue::from(view.txid.0));
    if let Ok(value) = HeaderValue::from_str(&view.generation.to_string()) {
        headers.insert("x-replica-generation", value);
    }
}
