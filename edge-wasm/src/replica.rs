//! `EdgeReplica`, the JavaScript API: open a store URL, sync, query.
//!
//! Two modes: **full** (the database downloaded into wasm memory and
//! queried in place; every query is synchronous) and **lazy** (pages
//! fetched by range requests as queries reach them; see `lazy`). `open`
//! picks lazy when the store's snapshot is larger than
//! [`LAZY_ABOVE_BYTES`], unless told.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use distributary_core::apply::{self, ApplyError, DEFAULT_MEMORY_LIMIT, MAX_MEMORY_LIMIT, MemoryDatabase, SyncOptions};
use distributary_core::format::EncryptionKey;
use distributary_core::lazy::{DEFAULT_CACHE_BYTES, LazyOptions, LazyReplica, MIN_CACHE_BYTES};
use distributary_core::manifest::read_manifest;
use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

use crate::fetch::FetchStore;
use crate::lazy::LazyState;
use crate::sqlite::ReadOnlyDb;

/// `lazy: "auto"` (the default) reads a store lazily when its newest
/// snapshot is larger than this (16 MiB, compressed): below it, downloading
/// the whole database takes about as long as a lazy reader's first few
/// queries (a dozen round trips), and every query after it is synchronous
/// and local. Above it, the download grows with the database and the
/// lazy reader's first answer does not.
pub const LAZY_ABOVE_BYTES: u64 = 16 << 20;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** Options of `EdgeReplica.open`. */
export interface EdgeReplicaOptions {
  /** The store's encryption key: 64 hex digits, base64, or 32 raw bytes. */
  key?: string | Uint8Array;
  /** Full mode: refuse to grow the database past this many bytes (default 1 GiB, at most 1.75 GiB). */
  maxBytes?: number;
  /**
   * Read pages on demand with range requests instead of downloading the
   * database: `true`, `false`, or `"auto"` (the default: lazy when the
   * store's snapshot is larger than 16 MiB). A lazy replica answers with
   * `queryAsync`; `query` works only on pages already fetched.
   */
  lazy?: boolean | "auto";
  /** Lazy mode: the page cache's size in bytes (default 32 MiB, at least 1 MiB). */
  cacheBytes?: number;
}

/** What a lazy replica fetched: requests, bytes received, bytes cached. */
export interface LazyStats {
  requests: number;
  bytes: number;
  cachedBytes: number;
}

/** A SQLite value: NULL, INTEGER (bigint past 2^53), REAL, TEXT, BLOB. */
export type SqlValue = null | number | bigint | string | Uint8Array;

/** What `query` returns: the column names, and one object per row keyed by them. */
export interface QueryResult {
  columns: string[];
  rows: Record<string, SqlValue>[];
}
"#;

/// A read-only replica of a Distributary store, in wasm memory (full
/// mode) or read page by page (lazy mode).
#[wasm_bindgen]
pub struct EdgeReplica {
    mode: Mode,
    url: String,
    syncing: Rc<Cell<bool>>,
}

enum Mode {
    Full(Rc<RefCell<Inner>>),
    Lazy(Rc<LazyState>),
}

/// The full mode's state.
struct Inner {
    // Declared before `db`: SQLite's view of the image must go first.
    sqlite: Option<ReadOnlyDb>,
    db: MemoryDatabase,
    store: Rc<FetchStore>,
    key: Option<EncryptionKey>,
}

impl Inner {
    /// Reopens SQLite on the image after it changed.
    fn reopen(&mut self) -> Result<(), String> {
        self.sqlite = None;
        if self.db.is_empty() {
            return Ok(());
        }
        // SAFETY: the image lives in `self.db`, which is only changed after
        // `self.sqlite` is dropped (here and in `sync`), and `sqlite` is
        // declared first so it is dropped before `db`.
        self.sqlite = Some(unsafe { ReadOnlyDb::open(self.db.sqlite_image())? });
        Ok(())
    }
}

/// The cause chain of an error, joined as the native CLI prints it
/// (anyhow's `{:#}`), so both readers report a bad object in the same words.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn sync_error(url: &str, error: &ApplyError) -> JsError {
    JsError::new(&format!("sync replica from {url}: {}", chain(error)))
}

/// Whether to read lazily, as `options.lazy` says.
enum Laziness {
    Full,
    Lazy,
    Auto,
}

/// A JavaScript options object's field, if set.
fn option(options: &Option<Object>, name: &str) -> Option<JsValue> {
    options
        .as_ref()
        .and_then(|options| Reflect::get(options, &name.into()).ok())
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// A number option within `[min, max]`.
fn number_option(
    url: &str,
    options: &Option<Object>,
    name: &str,
    min: u64,
    max: u64,
    why: &str,
) -> Result<Option<u64>, JsError> {
    match option(options, name) {
        None => Ok(None),
        Some(value) => match value.as_f64() {
            Some(n) if n >= min as f64 && n <= max as f64 => Ok(Some(n as u64)),
            _ => Err(JsError::new(&format!(
                "open {url}: options.{name} must be a number of bytes from {min} to {max}{why}"
            ))),
        },
    }
}

#[wasm_bindgen]
impl EdgeReplica {
    /// Opens a replica of the store at `url` (`https://cdn.example.com/app-db`,
    /// a public bucket, or presigned URLs behind a proxy) and syncs it once.
    #[wasm_bindgen(unchecked_return_type = "EdgeReplica")]
    pub async fn open(
        url: String,
        #[wasm_bindgen(unchecked_param_type = "EdgeReplicaOptions")] options: Option<Object>,
    ) -> Result<EdgeReplica, JsError> {
        let key = match option(&options, "key") {
            None => None,
            Some(value) => {
                let bytes = match (value.as_string(), value.dyn_ref::<Uint8Array>()) {
                    (Some(text), _) => text.into_bytes(),
                    (None, Some(array)) => array.to_vec(),
                    _ => {
                        return Err(JsError::new(&format!("open {url}: options.key must be a string or a Uint8Array")));
                    }
                };
                Some(EncryptionKey::parse(&bytes).map_err(|e| JsError::new(&format!("open {url}: options.key: {e}")))?)
            }
        };
        let limit = number_option(
            &url,
            &options,
            "maxBytes",
            1,
            MAX_MEMORY_LIMIT,
            " (wasm32 has a 4 GiB address space; open larger databases with lazy: true)",
        )?
        .unwrap_or(DEFAULT_MEMORY_LIMIT);
        let cache_bytes = number_option(&url, &options, "cacheBytes", MIN_CACHE_BYTES as u64, MAX_MEMORY_LIMIT, "")?
            .map_or(DEFAULT_CACHE_BYTES, |n| n as usize);
        let laziness = match option(&options, "lazy") {
            None => Laziness::Auto,
            Some(value) => match (value.as_bool(), value.as_string().as_deref()) {
                (Some(true), _) => Laziness::Lazy,
                (Some(false), _) => Laziness::Full,
                (_, Some("auto")) => Laziness::Auto,
                _ => return Err(JsError::new(&format!("open {url}: options.lazy must be true, false or \"auto\""))),
            },
        };
        let store = FetchStore::new(&url).map_err(|e| JsError::new(&format!("open {url}: {}", chain(&e))))?;
        let lazy = match laziness {
            Laziness::Full => false,
            Laziness::Lazy => true,
            // A store without a manifest (yet) opens in full mode, whose
            // sync says what is missing.
            Laziness::Auto => matches!(
                read_manifest(&store).await,
                Ok(Some(manifest)) if manifest.value.snapshot.is_some_and(|s| s.size > LAZY_ABOVE_BYTES)
            ),
        };
        let mode = if lazy {
            let replica = LazyReplica::new(Arc::new(store), LazyOptions { key, cache_bytes });
            Mode::Lazy(Rc::new(LazyState::new(replica)))
        } else {
            Mode::Full(Rc::new(RefCell::new(Inner {
                sqlite: None,
                db: MemoryDatabase::new(limit),
                store: Rc::new(store),
                key,
            })))
        };
        let replica = EdgeReplica { mode, url, syncing: Rc::new(Cell::new(false)) };
        replica.run_sync().await?;
        Ok(replica)
    }

    /// Fetches and applies what is new in the store, verified like the
    /// native reader; resolves to the TXID reached. On error the replica
    /// keeps every object verified before the failure, and queries keep
    /// working (they read the last good state, also while a sync runs).
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn sync(&self) -> Promise {
        let sync = self.run_sync();
        wasm_bindgen_futures::future_to_promise(async move { sync.await.map(JsValue::from_f64).map_err(JsValue::from) })
    }

    /// Runs one read-only SQL statement with positional parameters (`?` or
    /// `?1`): `{ columns, rows }`, each row an object keyed by column name.
    /// A lazy replica answers only from pages already fetched (use
    /// `queryAsync`).
    #[wasm_bindgen(unchecked_return_type = "QueryResult")]
    pub fn query(
        &self,
        sql: &str,
        #[wasm_bindgen(unchecked_param_type = "SqlValue[]")] params: Option<Object>,
    ) -> Result<JsValue, JsError> {
        let params = params_array(params)?;
        match &self.mode {
            Mode::Full(inner) => {
                let inner = inner.borrow();
                let sqlite =
                    inner.sqlite.as_ref().ok_or_else(|| JsError::new("query: the replica is empty (sync it first)"))?;
                sqlite.query(sql, &params).map_err(|e| JsError::new(&e))
            }
            Mode::Lazy(state) => state.query_cached(sql, &params).map_err(|e| JsError::new(&e)),
        }
    }

    /// `query` that fetches the pages the statement reaches (lazy mode);
    /// in full mode it resolves at once. Every row comes from one TXID,
    /// whatever `sync()` does meanwhile.
    #[wasm_bindgen(js_name = queryAsync, unchecked_return_type = "Promise<QueryResult>")]
    pub fn query_async(
        &self,
        sql: String,
        #[wasm_bindgen(unchecked_param_type = "SqlValue[]")] params: Option<Object>,
    ) -> Promise {
        let state = match &self.mode {
            Mode::Full(_) => {
                let result = self.query(&sql, params);
                return wasm_bindgen_futures::future_to_promise(async move { result.map_err(JsValue::from) });
            }
            Mode::Lazy(state) => state.clone(),
        };
        wasm_bindgen_futures::future_to_promise(async move {
            let params = params_array(params)?;
            state.query(&sql, &params).await.map_err(|e| JsError::new(&e).into())
        })
    }

    /// Whether the replica reads pages on demand.
    #[wasm_bindgen(getter)]
    pub fn lazy(&self) -> bool {
        matches!(self.mode, Mode::Lazy(_))
    }

    /// Lazy mode: requests made, bytes received and bytes cached so far
    /// (`null` in full mode).
    #[wasm_bindgen(getter, unchecked_return_type = "LazyStats | null")]
    pub fn stats(&self) -> JsValue {
        let Mode::Lazy(state) = &self.mode else { return JsValue::NULL };
        let stats = state.replica.stats();
        let out = Object::new();
        let _ = Reflect::set(&out, &"requests".into(), &JsValue::from_f64(stats.requests as f64));
        let _ = Reflect::set(&out, &"bytes".into(), &JsValue::from_f64(stats.bytes as f64));
        let _ = Reflect::set(&out, &"cachedBytes".into(), &JsValue::from_f64(stats.cached_bytes as f64));
        out.into()
    }

    /// The TXID the replica is at (0 before anything was applied).
    #[wasm_bindgen(getter)]
    pub fn txid(&self) -> f64 {
        self.position().map_or(0.0, |p| p.txid.0 as f64)
    }

    /// The generation followed, as 32 hex digits ("" before the first sync).
    #[wasm_bindgen(getter)]
    pub fn generation(&self) -> String {
        self.position().map(|p| p.generation.to_string()).unwrap_or_default()
    }

    /// The database's rolling checksum at `txid`, as the native reader prints it.
    #[wasm_bindgen(getter)]
    pub fn checksum(&self) -> String {
        self.position().map(|p| p.checksum.to_string()).unwrap_or_default()
    }

    /// The database's size in bytes.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> f64 {
        match &self.mode {
            Mode::Full(inner) => inner.borrow().db.len() as f64,
            Mode::Lazy(state) => state.replica.current().map_or(0.0, |v| v.len() as f64),
        }
    }

    /// The database as a SQLite file, byte for byte the primary's at `txid`
    /// (full mode; a lazy replica exports with `exportAsync`).
    pub fn export(&self) -> Result<Uint8Array, JsError> {
        let Mode::Full(inner) = &self.mode else {
            return Err(JsError::new(
                "export: a lazy replica fetches its pages first: use await replica.exportAsync()",
            ));
        };
        let inner = inner.borrow();
        let chunks = inner.db.export_chunks();
        let out = Uint8Array::new_with_length(inner.db.len() as u32);
        let mut offset = 0u32;
        for chunk in chunks {
            let end = offset + chunk.len() as u32;
            out.subarray(offset, end).copy_from(chunk);
            offset = end;
        }
        Ok(out)
    }

    /// `export`, in both modes: a lazy replica fetches every page and checks
    /// the rolling checksum over them (the one check lazy reads leave out).
    #[wasm_bindgen(js_name = exportAsync, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_async(&self) -> Promise {
        let state = match &self.mode {
            Mode::Full(_) => {
                let result = self.export().map(JsValue::from);
                return wasm_bindgen_futures::future_to_promise(async move { result.map_err(JsValue::from) });
            }
            Mode::Lazy(state) => state.clone(),
        };
        let url = self.url.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let version =
                state.replica.current().ok_or_else(|| JsError::new("export: the replica is empty (sync it first)"))?;
            let out = Uint8Array::new_with_length(version.len() as u32);
            let page_size = version.page_size();
            state
                .replica
                .verify(&version, |pgno, page| out.subarray((pgno - 1) * page_size, pgno * page_size).copy_from(page))
                .await
                .map_err(|e| JsError::new(&format!("export {url}: {}", chain(&e))))?;
            Ok(out.into())
        })
    }
}

fn params_array(params: Option<Object>) -> Result<Array, JsError> {
    match params {
        None => Ok(Array::new()),
        Some(params) => params.dyn_into::<Array>().map_err(|_| JsError::new("query: params must be an array")),
    }
}

impl EdgeReplica {
    fn position(&self) -> Option<distributary_core::plan::ReplicaPosition> {
        match &self.mode {
            Mode::Full(inner) => inner.borrow().db.position(),
            Mode::Lazy(state) => state.replica.current().map(|v| v.position()),
        }
    }

    /// One sync, in either mode; one at a time.
    fn run_sync(&self) -> impl std::future::Future<Output = Result<f64, JsError>> + 'static {
        let url = self.url.clone();
        let syncing = self.syncing.clone();
        let mode = match &self.mode {
            Mode::Full(inner) => Mode::Full(inner.clone()),
            Mode::Lazy(state) => Mode::Lazy(state.clone()),
        };
        async move {
            if syncing.replace(true) {
                return Err(JsError::new(&format!(
                    "sync replica from {url}: another sync of this replica is running (await it first)"
                )));
            }
            let result = match mode {
                Mode::Full(inner) => sync_full(inner, &url).await,
                Mode::Lazy(state) => {
                    state.replica.sync(false).await.map(|s| s.to_txid.0 as f64).map_err(|e| sync_error(&url, &e))
                }
            };
            syncing.set(false);
            result
        }
    }
}

/// One full-mode sync: download without holding the replica (queries keep
/// reading the old state), then apply at once.
async fn sync_full(inner: Rc<RefCell<Inner>>, url: &str) -> Result<f64, JsError> {
    let (store, position, page_size, options) = {
        let state = inner.borrow();
        let options = SyncOptions { key: state.key.clone(), keep_state: false, ..SyncOptions::default() };
        (state.store.clone(), state.db.position(), state.db.page_size(), options)
    };
    let downloaded = apply::download(store.as_ref(), position, page_size, &options).await;
    let mut state = inner.borrow_mut();
    let downloaded = downloaded.map_err(|e| sync_error(url, &e))?;
    // SQLite must let go of the image before it changes.
    state.sqlite = None;
    let applied = downloaded.apply(&mut state.db);
    let reopened = state.reopen();
    let summary = applied.map_err(|e| sync_error(url, &e))?;
    reopened.map_err(|e| JsError::new(&format!("sync replica from {url}: {e}")))?;
    Ok(summary.to_txid.0 as f64)
}
