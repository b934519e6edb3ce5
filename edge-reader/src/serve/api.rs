//! The HTTP API's bodies: query requests (JSON or a query string), their
//! parameters as SQLite values, the JSON answers, and the errors with the
//! status code and machine-readable `code` each maps to. `docs/API.md` is
//! the contract; this file mirrors it.

use std::time::Duration;

use base64::Engine as _;
use distributary_core::{GenerationId, TxId};
use hyper::StatusCode;
use rusqlite::types::Value;
use serde::Deserialize;

use super::follower::{Bookmark, View};
use super::pool::{Params, QueryError, Rows};

/// The JSON body of `POST /query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One SQL statement.
    pub sql: String,
    /// Positional (array) or named (object) parameters.
    #[serde(default)]
    pub params: Option<serde_json::Value>,
    /// Wait until the replica holds this TXID (read-your-writes).
    #[serde(default)]
    pub min_txid: Option<u64>,
    /// The generation of `min_txid`, as the primary's `/bookmark` reports it.
    #[serde(default)]
    pub generation: Option<String>,
    /// How long to wait for `min_txid`, in milliseconds (capped by --max-wait).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// A query, parsed from either form of the request.
#[derive(Debug)]
pub struct QueryRequest {
    /// The statement.
    pub sql: String,
    /// Its parameters.
    pub params: Params,
    /// The state to wait for, if any.
    pub bookmark: Option<Bookmark>,
    /// How long to wait for it, if the client said.
    pub wait: Option<Duration>,
}

/// An error answer: status, a stable `code` and a message naming the fix.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable identifier (`forbidden`, `query_timeout`, ...).
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
}

impl ApiError {
    /// A 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
    }

    /// The JSON body: `{"error": message, "code": code}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message, "code": self.code }).to_string()
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> ApiError {
        let (status, code) = match &error {
            QueryError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            QueryError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            QueryError::MultipleStatements => (StatusCode::BAD_REQUEST, "multiple_statements"),
            QueryError::Invalid(_) => (StatusCode::BAD_REQUEST, "sql_error"),
            // 422, not 408 or 503: clients retry those automatically, and a
            // runaway query retried is the same runaway query.
            QueryError::Timeout(_) => (StatusCode::UNPROCESSABLE_ENTITY, "query_timeout"),
            QueryError::TooManyRows(_) | QueryError::TooLarge(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "result_too_large")
            }
            QueryError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            QueryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError { status, code, message: error.to_string() }
    }
}

/// Parses the JSON body of `POST /query`.
pub fn parse_body(bytes: &[u8]) -> Result<QueryRequest, ApiError> {
    let body: QueryBody = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {e} (expected {{\"sql\": \"...\", \"params\": [...] or {{...}}, \"min_txid\": N}})"
        ))
    })?;
    let params = match body.params {
        None | Some(serde_json::Value::Null) => Params::None,
        Some(serde_json::Value::Array(values)) => Params::Positional(
            values.iter().enumerate().map(|(i, v)| to_value(v, &format!("params[{i}]"))).collect::<Result<_, _>>()?,
        ),
        Some(serde_json::Value::Object(map)) => Params::Named(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), to_value(v, &format!("params.{k}"))?)))
                .collect::<Result<_, ApiError>>()?,
        ),
        Some(other) => {
            return Err(ApiError::bad_request(format!("params must be an array or an object, not {other}")));
        }
    };
    Ok(QueryRequest {
        sql: body.sql,
        params,
        bookmark: bookmark(body.min_txid, body.generation.as_deref())?,
        wait: body.wait_ms.map(Duration::from_millis),
    })
}

/// Parses the query string of `GET /query?sql=...&min_txid=N&params=[...]`
/// (`params` as JSON text).
pub fn parse_query_string(query: &str) -> Result<QueryRequest, ApiError> {
    let mut sql = None;
    let mut body = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sql" => sql = Some(value.into_owned()),
            "params" => {
                let params: serde_json::Value = serde_json::from_str(&value)
                    .map_err(|e| ApiError::bad_request(format!("params is not JSON: {e}")))?;
                body.insert("params".into(), params);
            }
            "min_txid" | "wait_ms" => {
                let n: u64 = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("{key} must be a non-negative integer, not {value:?}"))
                })?;
                body.insert(key.into_owned(), n.into());
            }
            "generation" => {
                body.insert("generation".into(), value.into_owned().into());
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (known: sql, params, min_txid, generation, wait_ms)"
                )));
            }
        }
    }
    let sql = sql.ok_or_else(|| ApiError::bad_request("missing query parameter sql (GET /query?sql=SELECT+1)"))?;
    body.insert("sql".into(), sql.into());
    parse_body(serde_json::Value::Object(body).to_string().as_bytes())
}

/// The bookmark of the `X-Min-Txid` / `X-Min-Generation` headers, when the
/// body gave none.
pub fn bookmark(min_txid: Option<u64>, generation: Option<&str>) -> Result<Option<Bookmark>, ApiError> {
    let generation = match generation {
        Some(text) => Some(text.parse::<GenerationId>().map_err(|e| {
            ApiError::bad_request(format!(
                "invalid generation {text:?}: {e} (pass it as the primary's /bookmark gives it)"
            ))
        })?),
        None => None,
    };
    match (min_txid, generation) {
        (Some(txid), generation) => Ok(Some(Bookmark { txid: TxId(txid), generation })),
        (None, Some(_)) => Err(ApiError::bad_request("a generation without min_txid: pass both, or neither")),
        (None, None) => Ok(None),
    }
}

/// A JSON parameter as a SQLite value: numbers as INTEGER when they are
/// whole and fit, REAL otherwise; booleans as 0/1; `{"base64": "..."}` as a
/// BLOB.
fn to_value(value: &serde_json::Value, path: &str) -> Result<Value, ApiError> {
    Ok(match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Integer(i),
            (None, Some(x)) => Value::Real(x),
            (None, None) => return Err(ApiError::bad_request(format!("{path}: {n} is not a number SQLite can hold"))),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Object(map) if map.len() == 1 && map.contains_key("base64") => {
            let text = map["base64"]
                .as_str()
                .ok_or_else(|| ApiError::bad_request(format!("{path}.base64 must be a string")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| ApiError::bad_request(format!("{path}.base64 is not valid base64: {e}")))?;
            Value::Blob(bytes)
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "{path}: {other} is not a SQL value (use null, a number, a string, a boolean or {{\"base64\": \"...\"}})"
            )));
        }
    })
}

/// The JSON answer of a query.
pub fn rows_body(rows: &Rows) -> String {
    serde_json::json!({
        "columns": rows.columns,
        "rows": rows.rows,
        "txid": rows.view.txid.0,
        "generation": rows.view.generation.to_string(),
    })
    .to_string()
}

/// The 504 of a bookmark wait that ran out of time.
pub fn bookmark_timeout(bookmark: &Bookmark, waited: Duration, at: Option<View>) -> ApiError {
    let wanted = match bookmark.generation {
        Some(generation) => format!("TXID {} of generation {generation}", bookmark.txid.0),
        None => format!("TXID {}", bookmark.txid.0),
    };
    let now = match at {
        Some(view) => format!("it is at TXID {} of generation {}", view.txid.0, view.generation),
        None => "it has no state yet".to_string(),
    };
    ApiError {
        status: StatusCode::GATEWAY_TIMEOUT,
        code: "bookmark_timeout",
        message: format!(
            "the replica did not reach {wanted} within {:.1} s ({now}); retry later, or see /status for sync errors",
            waited.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_and_refuse_what_they_should() {
        let request =
            parse_body(br#"{"sql": "SELECT ?", "params": [1, 2.5, "x", null, true, {"base64": "AAE="}]}"#).unwrap();
        assert_eq!(
            request.params,
            Params::Positional(vec![
                Value::Integer(1),
                Value::Real(2.5),
                Value::Text("x".into()),
                Value::Null,
                Value::Integer(1),
                Value::Blob(vec![0, 1]),
            ])
        );
        let request = parse_body(br#"{"sql": "SELECT :a", "params": {"a": 1}, "min_txid": 7}"#).unwrap();
        assert_eq!(request.params, Params::Named(vec![("a".into(), Value::Integer(1))]));
        assert_eq!(request.bookmark, Some(Bookmark { txid: TxId(7), generation: None }));
        for bad in [
            &br#"{"sql": "SELECT 1", "extra": 1}"#[..],
            br#"{"sql": "SELECT 1""#,
            br#"{"params": []}"#,
            br#"{"sql": "SELECT ?", "params": [[1]]}"#,
            br#"{"sql": "SELECT ?", "params": 3}"#,
            br#"{"sql": "SELECT ?", "params": [{"base64": "!!"}]}"#,
            br#"{"sql": "SELECT 1", "generation": "x", "min_txid": 1}"#,
        ] {
            let error = parse_body(bad).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(bad));
        }
        let request = parse_query_string("sql=SELECT+%3Aa&params=%7B%22a%22%3A2%7D&min_txid=3").unwrap();
        assert_eq!(request.sql, "SELECT :a");
        assert_eq!(request.params, Params::Named(vec![("a".into(), Value::Integer(2))]));
        assert!(parse_query_string("sql=SELECT+1&nope=1").is_err());
        assert!(parse_query_string("params=[]").is_err());
    }
}
