//! `EdgeReplica`, the JavaScript API: open a store URL, sync, query.

use std::cell::RefCell;
use std::rc::Rc;

use distributary_core::apply::{self, ApplyError, DEFAULT_MEMORY_LIMIT, MAX_MEMORY_LIMIT, MemoryDatabase, SyncOptions};
use distributary_core::format::EncryptionKey;
use js_sys::{Array, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

use crate::fetch::FetchStore;
use crate::sqlite::ReadOnlyDb;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** Options of `EdgeReplica.open`. */
export interface EdgeReplicaOptions {
  /** The store's encryption key: 64 hex digits, base64, or 32 raw bytes. */
  key?: string | Uint8Array;
  /** Refuse to grow the database past this many bytes (default 1 GiB, at most 1.75 GiB). */
  maxBytes?: number;
}

/** A SQLite value: NULL, INTEGER (bigint past 2^53), REAL, TEXT, BLOB. */
export type SqlValue = null | number | bigint | string | Uint8Array;

/** What `query` returns: the column names, and one object per row keyed by them. */
export interface QueryResult {
  columns: string[];
  rows: Record<string, SqlValue>[];
}
"#;

/// A read-only replica of a Distributary store, held in wasm memory.
#[wasm_bindgen]
pub struct EdgeReplica {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    // Declared before `db`: SQLite's view of the image must go first.
    sqlite: Option<ReadOnlyDb>,
    db: MemoryDatabase,
    store: Rc<FetchStore>,
    url: String,
    key: Option<EncryptionKey>,
    syncing: bool,
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
fn chain(error: &dyn std::error::Error) -> String {
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

#[wasm_bindgen]
impl EdgeReplica {
    /// Opens a replica of the store at `url` (`https://cdn.example.com/app-db`,
    /// a public bucket, or presigned URLs behind a proxy) and syncs it once.
    #[wasm_bindgen(unchecked_return_type = "EdgeReplica")]
    pub async fn open(
        url: String,
        #[wasm_bindgen(unchecked_param_type = "EdgeReplicaOptions")] options: Option<js_sys::Object>,
    ) -> Result<EdgeReplica, JsError> {
        let option = |name: &str| {
            options
                .as_ref()
                .and_then(|options| Reflect::get(options, &name.into()).ok())
                .filter(|v| !v.is_undefined() && !v.is_null())
        };
        let key = match option("key") {
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
        let limit = match option("maxBytes") {
            None => DEFAULT_MEMORY_LIMIT,
            Some(value) => match value.as_f64() {
                Some(n) if n >= 1.0 && n <= MAX_MEMORY_LIMIT as f64 => n as u64,
                _ => {
                    return Err(JsError::new(&format!(
                        "open {url}: options.maxBytes must be a number of bytes from 1 to {MAX_MEMORY_LIMIT} (wasm32 has a 4 GiB address space; larger databases need the native edge-reader)"
                    )));
                }
            },
        };
        let store = FetchStore::new(&url).map_err(|e| JsError::new(&format!("open {url}: {}", chain(&e))))?;
        let replica = EdgeReplica {
            inner: Rc::new(RefCell::new(Inner {
                sqlite: None,
                db: MemoryDatabase::new(limit),
                store: Rc::new(store),
                url,
                key,
                syncing: false,
            })),
        };
        sync(replica.inner.clone()).await?;
        Ok(replica)
    }

    /// Fetches and applies what is new in the store, verified like the
    /// native reader; resolves to the TXID reached. On error the replica
    /// keeps every object verified before the failure, and queries keep
    /// working (they read the last good state, also while a sync downloads).
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn sync(&self) -> Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            sync(inner).await.map(JsValue::from_f64).map_err(JsValue::from)
        })
    }

    /// Runs one read-only SQL statement with positional parameters (`?` or
    /// `?1`): `{ columns, rows }`, each row an object keyed by column name.
    #[wasm_bindgen(unchecked_return_type = "QueryResult")]
    pub fn query(
        &self,
        sql: &str,
        #[wasm_bindgen(unchecked_param_type = "SqlValue[]")] params: Option<js_sys::Object>,
    ) -> Result<JsValue, JsError> {
        let params = match params {
            None => Array::new(),
            Some(params) => params.dyn_into::<Array>().map_err(|_| JsError::new("query: params must be an array"))?,
        };
        let inner = self.inner.borrow();
        let sqlite =
            inner.sqlite.as_ref().ok_or_else(|| JsError::new("query: the replica is empty (sync it first)"))?;
        sqlite.query(sql, &params).map_err(|e| JsError::new(&e))
    }

    /// The TXID the replica is at (0 before anything was applied).
    #[wasm_bindgen(getter)]
    pub fn txid(&self) -> f64 {
        self.inner.borrow().db.position().map_or(0.0, |p| p.txid.0 as f64)
    }

    /// The generation followed, as 32 hex digits ("" before the first sync).
    #[wasm_bindgen(getter)]
    pub fn generation(&self) -> String {
        self.inner.borrow().db.position().map(|p| p.generation.to_string()).unwrap_or_default()
    }

    /// The database's rolling checksum at `txid`, as the native reader prints it.
    #[wasm_bindgen(getter)]
    pub fn checksum(&self) -> String {
        self.inner.borrow().db.position().map(|p| p.checksum.to_string()).unwrap_or_default()
    }

    /// The database's size in bytes.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> f64 {
        self.inner.borrow().db.len() as f64
    }

    /// The database as a SQLite file, byte for byte the primary's at `txid`.
    pub fn export(&self) -> Uint8Array {
        let inner = self.inner.borrow();
        let chunks = inner.db.export_chunks();
        let out = Uint8Array::new_with_length(inner.db.len() as u32);
        let mut offset = 0u32;
        for chunk in chunks {
            let end = offset + chunk.len() as u32;
            out.subarray(offset, end).copy_from(chunk);
            offset = end;
        }
        out
    }
}

/// One sync: download without holding the replica (queries keep reading
/// the old state), then apply at once.
async fn sync(inner: Rc<RefCell<Inner>>) -> Result<f64, JsError> {
    let (store, url, position, page_size, options) = {
        let mut state = inner.borrow_mut();
        if state.syncing {
            return Err(JsError::new(&format!(
                "sync replica from {}: another sync of this replica is running (await it first)",
                state.url
            )));
        }
        state.syncing = true;
        let options = SyncOptions { key: state.key.clone(), keep_state: false, ..SyncOptions::default() };
        (state.store.clone(), state.url.clone(), state.db.position(), state.db.page_size(), options)
    };
    let downloaded = apply::download(store.as_ref(), position, page_size, &options).await;
    let mut state = inner.borrow_mut();
    state.syncing = false;
    let downloaded = downloaded.map_err(|e| sync_error(&url, &e))?;
    // SQLite must let go of the image before it changes.
    state.sqlite = None;
    let applied = downloaded.apply(&mut state.db);
    let reopened = state.reopen();
    let summary = applied.map_err(|e| sync_error(&url, &e))?;
    reopened.map_err(|e| JsError::new(&format!("sync replica from {url}: {e}")))?;
    Ok(summary.to_txid.0 as f64)
}
