//! `EdgeReplica`, the JavaScript API: open a store URL, sync, query.
//!
//! Two modes, both a core `LazyReplica` read by SQLite through the VFS of
//! `lazy`: **full** (resident: every page fetched at sync and held in wasm
//! memory, the rolling checksum checked before a version is published;
//! every query is synchronous) and **lazy** (pages fetched by range
//! requests as queries reach them). `open` picks lazy when the store's
//! snapshot is larger than [`LAZY_ABOVE_BYTES`], unless told.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use distributary_core::apply::{ApplyError, DEFAULT_MEMORY_LIMIT, MAX_MEMORY_LIMIT};
use distributary_core::format::EncryptionKey;
use distributary_core::lazy::{DEFAULT_CACHE_BYTES, LazyOptions, LazyReplica, MIN_CACHE_BYTES};
use distributary_core::manifest::read_manifest;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

use crate::fetch::FetchStore;
use crate::lazy::LazyState;

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
  /**
   * The `fetch` every request goes through instead of the global one: to
   * add headers, count requests, or cache. `@distributary/edge-wasm`'s
   * `open` wraps it with the OPFS cache (below) where the browser has one.
   */
  fetch?: (request: Request) => Promise<Response>;
  /**
   * Keep the store's byte ranges in the Origin Private File System, so a
   * reloaded page reads them from disk instead of the network: `true` (the
   * default where the browser has OPFS) or `false`.
   */
  opfs?: boolean;
  /** The OPFS cache's size in bytes, per store (default 128 MiB). */
  opfsBytes?: number;
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
    state: Rc<LazyState>,
    /// Full mode: every page is in memory.
    resident: bool,
    url: String,
    syncing: Rc<Cell<bool>>,
}

/// The cause chain of an error, joined as the native CLI prints it
/// (anyhow's `{:#}`), so both readers report a bad object in the same words.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    distributary_core::errors::error_chain(error)
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
    #[wasm_bindgen(unchecked_return_type = "Promise<EdgeReplica>")]
    pub fn open(
        url: String,
        #[wasm_bindgen(unchecked_param_type = "EdgeReplicaOptions")] options: Option<Object>,
    ) -> Promise {
        promise(Box::pin(
            async move { Self::open_replica(url, options).await.map(JsValue::from).map_err(JsValue::from) },
        ))
    }

    async fn open_replica(url: String, options: Option<Object>) -> Result<EdgeReplica, JsError> {
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
        let fetch = match option(&options, "fetch") {
            None => None,
            Some(value) => Some(value.dyn_into::<Function>().map_err(|_| {
                JsError::new(&format!("open {url}: options.fetch must be a function (Request) => Promise<Response>"))
            })?),
        };
        let store =
            FetchStore::new(&url).map_err(|e| JsError::new(&format!("open {url}: {}", chain(&e))))?.with_fetch(fetch);
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
        let options = if lazy {
            LazyOptions { key, cache_bytes, resident: false }
        } else {
            LazyOptions { key, cache_bytes: limit as usize, resident: true }
        };
        let state = Rc::new(LazyState::new(LazyReplica::new(Arc::new(store), options)));
        let replica = EdgeReplica { state, resident: !lazy, url, syncing: Rc::new(Cell::new(false)) };
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
        promise(Box::pin(async move { sync.await.map(JsValue::from_f64).map_err(JsValue::from) }))
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
        self.state.query_cached(sql, &params).map_err(|e| JsError::new(&e))
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
        if self.resident {
            return settled(self.query(&sql, params));
        }
        let state = self.state.clone();
        promise(Box::pin(async move {
            let params = params_array(params)?;
            state.query(&sql, &params).await.map_err(|e| JsError::new(&e).into())
        }))
    }

    /// Whether the replica reads pages on demand.
    #[wasm_bindgen(getter)]
    pub fn lazy(&self) -> bool {
        !self.resident
    }

    /// Lazy mode: requests made, bytes received and bytes cached so far
    /// (`null` in full mode).
    #[wasm_bindgen(getter, unchecked_return_type = "LazyStats | null")]
    pub fn stats(&self) -> JsValue {
        if self.resident {
            return JsValue::NULL;
        }
        let stats = self.state.replica.stats();
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
        self.state.replica.current().map_or(0.0, |v| v.len() as f64)
    }

    /// The database as a SQLite file, byte for byte the primary's at `txid`
    /// (full mode; a lazy replica exports with `exportAsync`).
    pub fn export(&self) -> Result<Uint8Array, JsError> {
        if !self.resident {
            return Err(JsError::new(
                "export: a lazy replica fetches its pages first: use await replica.exportAsync()",
            ));
        }
        let replica = &self.state.replica;
        let version = replica.current().ok_or_else(|| JsError::new("export: the replica is empty (sync it first)"))?;
        let page_size = version.page_size();
        let out = Uint8Array::new_with_length(version.len() as u32);
        for pgno in 1..=version.pages() {
            let page = replica
                .page(&version, pgno)
                .map_err(|e| JsError::new(&format!("export {}: {}", self.url, chain(&e))))?
                .ok_or_else(|| JsError::new(&format!("export {}: page {pgno} is not in memory", self.url)))?;
            out.subarray((pgno - 1) * page_size, pgno * page_size).copy_from(&page);
        }
        Ok(out)
    }

    /// `export`, in both modes: a lazy replica fetches every page and checks
    /// the rolling checksum over them (the one check lazy reads leave out).
    #[wasm_bindgen(js_name = exportAsync, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_async(&self) -> Promise {
        if self.resident {
            return settled(self.export().map(JsValue::from));
        }
        let state = self.state.clone();
        let url = self.url.clone();
        promise(Box::pin(async move {
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
        }))
    }
}

/// A Promise of `future`'s result. Every method goes through this one
/// instantiation of `future_to_promise` (each costs the .wasm some 2 KB).
fn promise(future: Pin<Box<dyn Future<Output = Result<JsValue, JsValue>>>>) -> Promise {
    wasm_bindgen_futures::future_to_promise(future)
}

/// A Promise already settled with `result`.
fn settled(result: Result<JsValue, JsError>) -> Promise {
    match result {
        Ok(value) => Promise::resolve(&value),
        Err(error) => Promise::reject(&error.into()),
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
        self.state.replica.current().map(|v| v.position())
    }

    /// One sync, in either mode; one at a time.
    fn run_sync(&self) -> impl Future<Output = Result<f64, JsError>> + 'static {
        let url = self.url.clone();
        let syncing = self.syncing.clone();
        let state = self.state.clone();
        async move {
            if syncing.replace(true) {
                return Err(JsError::new(&format!(
                    "sync replica from {url}: another sync of this replica is running (await it first)"
                )));
            }
            let result = state.replica.sync(false).await.map(|s| s.to_txid.0 as f64).map_err(|e| sync_error(&url, &e));
            syncing.set(false);
            result
        }
    }
}
