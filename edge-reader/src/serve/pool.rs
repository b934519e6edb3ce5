//! The read connections: a bounded pool of read-only SQLite connections to
//! the replica, each with its own prepared-statement cache, authorizer and
//! deadline, used on tokio's blocking threads so SQLite never blocks the
//! async runtime.
//!
//! A query holds one connection for its whole run: prepare (from the
//! cache), bind, step every row, encode. One statement is one implicit read
//! transaction, so it sees one committed state of the replica, whatever
//! `sync` commits meanwhile (WAL mode).
//!
//! Timeouts use SQLite's progress handler, checked every few thousand
//! virtual-machine steps against the connection's own deadline: a runaway
//! query is stopped on its connection and no other (unlike
//! `sqlite3_interrupt` on a shared handle).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, Statement};
use tokio::sync::{Semaphore, watch};

use super::follower::View;
use crate::authorizer::{self, Denials};

/// Parameters of a statement.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Params {
    /// None given.
    #[default]
    None,
    /// `?`, `?NNN` by position (1-based in SQL, 0-based here).
    Positional(Vec<Value>),
    /// `:name`, `@name`, `$name` by name (with or without the prefix).
    Named(Vec<(String, Value)>),
}

/// The rows of a query and the state they were read at.
#[derive(Debug)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// One JSON array per row (BLOBs as `{"base64": ...}`).
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The state read: every transaction up to `view.txid` is included.
    pub view: View,
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The replica has no known state yet (first sync pending).
    #[error("the replica is not ready: {0}")]
    NotReady(String),
    /// The statement does something a read-only replica refuses.
    #[error("refused: {0}")]
    Forbidden(String),
    /// More than one statement in the text.
    #[error("refused: one SQL statement per request (the text holds several)")]
    MultipleStatements,
    /// The SQL or its parameters are wrong.
    #[error("{0}")]
    Invalid(String),
    /// The query ran past the time limit and was stopped.
    #[error("the query ran longer than {0:?} and was stopped (--query-timeout); add a LIMIT or an index")]
    Timeout(Duration),
    /// The result has more rows than allowed.
    #[error("the result has more than {0} rows (--max-rows); add a LIMIT or page with a WHERE clause")]
    TooManyRows(usize),
    /// The result is larger than allowed.
    #[error("the result is larger than {0} bytes (--max-bytes); select fewer columns or rows")]
    TooLarge(usize),
    /// Every connection stayed busy for the whole time limit.
    #[error("all {0} read connections stayed busy; retry later")]
    Busy(usize),
    /// SQLite or the runtime failed.
    #[error("{0}")]
    Internal(String),
}

/// Limits of each query.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock time a query may run.
    pub timeout: Duration,
    /// Rows a result may hold.
    pub max_rows: usize,
    /// Bytes of values a result may hold (text and blob lengths, 8 per number).
    pub max_bytes: usize,
}

/// How the pool is made.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The replica.
    pub db: PathBuf,
    /// Connections at most (queries running at once).
    pub size: usize,
    /// Prepared statements cached per connection.
    pub statement_cache: usize,
    /// Longest SQL text accepted, in bytes.
    pub max_sql_length: usize,
    /// Per-query limits.
    pub limits: Limits,
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    config: PoolConfig,
    idle: Mutex<Vec<Reader>>,
    permits: Arc<Semaphore>,
    views: watch::Receiver<Option<View>>,
}

/// One read connection and what its callbacks share with it.
struct Reader {
    conn: Connection,
    /// Microseconds since [`EPOCH`] after which the progress handler stops
    /// the running statement; `u64::MAX` when idle.
    deadline: Arc<AtomicU64>,
    denials: Denials,
}

/// The origin of deadlines (monotonic).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn micros_since_epoch() -> u64 {
    EPOCH.elapsed().as_micros() as u64
}

/// Virtual-machine steps between two deadline checks: about a few
/// microseconds of work, so a timeout lands within a millisecond or so.
const PROGRESS_STEPS: i32 = 4000;

impl Pool {
    /// A pool over `config.db`; connections are opened on first use (the
    /// replica may not exist before the first sync). `views` gives the state
    /// each query reads at.
    pub fn new(config: PoolConfig, views: watch::Receiver<Option<View>>) -> Pool {
        let permits = Arc::new(Semaphore::new(config.size.max(1)));
        Pool(Arc::new(Inner { config, idle: Mutex::new(Vec::new()), permits, views }))
    }

    /// The limits of each query.
    pub fn limits(&self) -> Limits {
        self.0.config.limits
    }

    /// Runs one read-only statement on a connection of the pool.
    pub async fn query(&self, sql: String, params: Params, limits: Limits) -> Result<(Rows, Duration), QueryError> {
        if self.0.views.borrow().is_none() {
            return Err(QueryError::NotReady("the first sync has not finished yet".into()));
        }
        let permit = tokio::time::timeout(limits.timeout, Arc::clone(&self.0.permits).acquire_owned())
            .await
            .map_err(|_| QueryError::Busy(self.0.config.size))?
            .map_err(|_| QueryError::Internal("the pool is closed".into()))?;
        let inner = Arc::clone(&self.0);
        let task = tokio::task::spawn_blocking(move || {
            // Held until the query is done, even if the HTTP client left.
            let _permit = permit;
            let reader = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut reader = match reader {
                Some(reader) => reader,
                None => open(&inner.config)?,
            };
            let started = Instant::now();
            let result = run(&mut reader, &sql, &params, limits, &inner.views);
            let elapsed = started.elapsed();
            inner.idle.lock().unwrap_or_else(|p| p.into_inner()).push(reader);
            result.map(|rows| (rows, elapsed))
        });
        task.await.map_err(|e| QueryError::Internal(format!("the query's thread failed: {e}")))?
    }
}

/// Opens one read connection with every wall of `authorizer.rs` up.
fn open(config: &PoolConfig) -> Result<Reader, QueryError> {
    let db = &config.db;
    if !db.exists() {
        return Err(QueryError::NotReady(format!("{} does not exist yet", db.display())));
    }
    let failed = |what: &str| {
        let what = what.to_string();
        move |e: rusqlite::Error| QueryError::Internal(format!("{what} {}: {e}", db.display()))
    };
    let mut conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(failed("open"))?;
    let denials = authorizer::harden(&mut conn).map_err(failed("put the read-only walls up on"))?;
    // No single value larger than a whole result may be (zeroblob(1e9) and
    // friends fail fast instead of allocating).
    let max_length = i32::try_from(config.limits.max_bytes.max(1024)).unwrap_or(i32::MAX);
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, max_length).map_err(failed("configure"))?;
    let max_sql = i32::try_from(config.max_sql_length.max(1024)).unwrap_or(i32::MAX);
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_SQL_LENGTH, max_sql).map_err(failed("configure"))?;
    // sync's commits are short; a reader waits for WAL recovery at most this.
    conn.busy_timeout(Duration::from_secs(5)).map_err(failed("configure"))?;
    conn.set_prepared_statement_cache_capacity(config.statement_cache);
    let deadline = Arc::new(AtomicU64::new(u64::MAX));
    let watched = Arc::clone(&deadline);
    conn.progress_handler(PROGRESS_STEPS, Some(move || micros_since_epoch() > watched.load(Ordering::Relaxed)))
        .map_err(failed("install the progress handler on"))?;
    Ok(Reader { conn, deadline, denials })
}

/// Runs the statement under the reader's deadline.
fn run(
    reader: &mut Reader,
    sql: &str,
    params: &Params,
    limits: Limits,
    views: &watch::Receiver<Option<View>>,
) -> Result<Rows, QueryError> {
    if sql.trim().is_empty() {
        return Err(QueryError::Invalid("the SQL is empty".into()));
    }
    authorizer::check_sql(sql).map_err(QueryError::Invalid)?;
    reader.denials.clear();
    let deadline = micros_since_epoch().saturating_add(limits.timeout.as_micros() as u64);
    reader.deadline.store(deadline, Ordering::Relaxed);
    let result = execute(reader, sql, params, limits, views);
    reader.deadline.store(u64::MAX, Ordering::Relaxed);
    result.map_err(|e| match e {
        Failure::Query(e) => e,
        Failure::Sqlite(e) => classify(e, reader, limits),
    })
}

enum Failure {
    Query(QueryError),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sqlite(e)
    }
}

impl From<QueryError> for Failure {
    fn from(e: QueryError) -> Self {
        Failure::Query(e)
    }
}

fn execute(
    reader: &Reader,
    sql: &str,
    params: &Params,
    limits: Limits,
    views: &watch::Receiver<Option<View>>,
) -> Result<Rows, Failure> {
    let mut statement = reader.conn.prepare_cached(sql)?;
    // Statements SQLite itself classifies as writing (VACUUM INTO, which
    // the authorizer is never asked about, is one) are refused.
    authorizer::check_statement(&reader.conn, sql, &statement, &reader.denials).map_err(QueryError::Forbidden)?;
    bind(&mut statement, params)?;
    let columns: Vec<String> = statement.column_names().map(str::to_string).collect();
    // Taken before the first step, when SQLite picks the snapshot: the
    // state read is at least this one (see follower.rs).
    let view = (*views.borrow()).ok_or_else(|| QueryError::NotReady("the replica has no known state".into()))?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        if out.len() == limits.max_rows {
            return Err(QueryError::TooManyRows(limits.max_rows).into());
        }
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let value = row.get_ref(i)?;
            bytes += match value {
                ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
                _ => 8,
            };
            values.push(to_json(value));
        }
        if bytes > limits.max_bytes {
            return Err(QueryError::TooLarge(limits.max_bytes).into());
        }
        out.push(values);
    }
    Ok(Rows { columns, rows: out, view })
}

fn bind(statement: &mut Statement<'_>, params: &Params) -> Result<(), Failure> {
    let count = statement.parameter_count();
    match params {
        Params::None | Params::Positional(_) => {
            let values = match params {
                Params::Positional(values) => values.as_slice(),
                _ => &[],
            };
            if values.len() != count {
                return Err(QueryError::Invalid(format!(
                    "the statement has {count} parameter(s) and {} value(s) were given",
                    values.len()
                ))
                .into());
            }
            for (i, value) in values.iter().enumerate() {
                statement.raw_bind_parameter(i + 1, value)?;
            }
        }
        Params::Named(values) => {
            let mut bound = vec![false; count];
            for (name, value) in values {
                let index = if name.starts_with([':', '@', '$']) {
                    statement.parameter_index(name)?
                } else {
                    let mut found = None;
                    for prefix in [':', '@', '$'] {
                        found = found.or(statement.parameter_index(&format!("{prefix}{name}"))?);
                    }
                    found
                };
                let Some(index) = index else {
                    return Err(QueryError::Invalid(format!("the statement has no parameter named {name:?}")).into());
                };
                statement.raw_bind_parameter(index, value)?;
                bound[index - 1] = true;
            }
            if let Some(missing) = bound.iter().position(|b| !b) {
                let name = statement.parameter_name(missing + 1).map_or(format!("?{}", missing + 1), str::to_string);
                return Err(QueryError::Invalid(format!("parameter {name} has no value")).into());
            }
        }
    }
    Ok(())
}

/// A SQLite value as JSON: BLOBs as `{"base64": "..."}`; non-finite reals
/// (which JSON cannot carry) as `null`.
pub fn to_json(value: ValueRef<'_>) -> serde_json::Value {
    match value {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(n) => n.into(),
        ValueRef::Real(x) => x.into(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// Turns SQLite's error into the reason the client should see.
fn classify(error: rusqlite::Error, reader: &Reader, limits: Limits) -> QueryError {
    let code = error.sqlite_error_code();
    match (&error, code) {
        (rusqlite::Error::MultipleStatement, _) => QueryError::MultipleStatements,
        (_, Some(ErrorCode::AuthorizationForStatementDenied)) => {
            QueryError::Forbidden(reader.denials.take().unwrap_or_else(|| error.to_string()))
        }
        (_, Some(ErrorCode::OperationInterrupted)) => QueryError::Timeout(limits.timeout),
        (_, Some(ErrorCode::ReadOnly)) => QueryError::Forbidden("the replica is read-only".into()),
        (_, Some(ErrorCode::TooBig)) => QueryError::TooLarge(limits.max_bytes),
        // What SQLite says when asked to run text that held no statement.
        (_, Some(ErrorCode::ApiMisuse)) => QueryError::Invalid("the SQL holds no statement (only comments?)".into()),
        _ => match reader.denials.take() {
            // Some refusals surface as other errors (an ATTACH stopped by the
            // attach limit, a function the authorizer removed).
            Some(reason) => QueryError::Forbidden(reason),
            None => QueryError::Invalid(error.to_string()),
        },
    }
}
