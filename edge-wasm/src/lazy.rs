//! The lazy mode of `EdgeReplica`: SQLite reads the database through a VFS
//! that serves pages of one [`Version`] of a core [`LazyReplica`], and a
//! query that reaches a page not fetched yet is run again once it is.
//!
//! SQLite's VFS is synchronous and `fetch` is not, so a read of a missing
//! page fails the statement (`SQLITE_IOERR_READ`) after noting the page;
//! [`LazyState::query`] fetches it (with read-ahead while the misses look
//! like a scan) and runs the statement again. Statements are read-only,
//! so a rerun has no effect but its result. A B-tree lookup costs one run
//! per level not cached yet.
//!
//! Each version gets its own SQLite connection, opened on a file name the
//! VFS maps to that version, and a query keeps its version for all its
//! runs: every page it sees is as of one TXID, whatever `sync()` publishes
//! meanwhile. The VFS declares the file immutable, so SQLite neither locks
//! it nor looks for a journal.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use distributary_core::apply::ApplyError;
use distributary_core::lazy::{LazyReplica, ReadAhead, Version};
use distributary_core::store::StoreError;
use js_sys::Array;
use rusqlite::{Connection, OpenFlags};
use sqlite_wasm_rs::vfs::{
    AccessMode, DeviceCharacteristics, FileKind, LockLevel, OpenOptions, OpenRequest, OpenedFile, SQLiteIoMethods,
    SQLiteVfs, SyncOptions, VfsError, VfsErrorCode, VfsFile, VfsResult, VfsStore, register_vfs,
};
use wasm_bindgen::JsValue;

use crate::sqlite::ReadOnlyDb;

const VFS_NAME: &str = "distributary-lazy";
/// Offset of the SQLite header's write and read format versions: the
/// primary's say WAL (2); SQLite must read the file in rollback mode (1),
/// as there is no WAL beside it.
const FORMAT_VERSION_OFFSET: usize = 18;

/// A query that failed for want of a page, or on a page that failed.
enum Miss {
    Page(u32),
    Failed(String),
}

/// A file the VFS can open: a name, and the replica and version it reads.
struct Openable {
    name: String,
    replica: Rc<LazyReplica>,
    version: Arc<Version>,
}

thread_local! {
    /// Files the VFS can open (a few at most: the current version and any
    /// a query still holds).
    static FILES: RefCell<Vec<Openable>> = const { RefCell::new(Vec::new()) };
    /// Why the last read failed, for the query loop.
    static MISS: RefCell<Option<Miss>> = const { RefCell::new(None) };
}

fn note(miss: Miss) {
    MISS.with(|m| {
        // The first miss of a run is the one to fetch.
        let mut m = m.borrow_mut();
        if m.is_none() {
            *m = Some(miss);
        }
    });
}

fn take_miss() -> Option<Miss> {
    MISS.with(|m| m.borrow_mut().take())
}

/// One open file: a version of a replica.
struct LazyFile {
    replica: Rc<LazyReplica>,
    version: Arc<Version>,
}

impl VfsFile for LazyFile {
    fn device_characteristics(&self) -> DeviceCharacteristics {
        DeviceCharacteristics::IMMUTABLE
    }

    fn read(&mut self, buf: &mut [u8], offset: u64) -> VfsResult<usize> {
        let page_size = u64::from(self.version.page_size());
        let len = self.version.len();
        let mut done = 0usize;
        while done < buf.len() && offset + (done as u64) < len {
            let at = offset + done as u64;
            let pgno = (at / page_size) as u32 + 1;
            let in_page = (at % page_size) as usize;
            let n = (buf.len() - done).min(page_size as usize - in_page);
            let page = match self.replica.page(&self.version, pgno) {
                Ok(Some(page)) => page,
                Ok(None) => {
                    note(Miss::Page(pgno));
                    return Err(VfsError::new(VfsErrorCode::IoRead, "page not fetched yet".into()));
                }
                Err(error) => {
                    note(Miss::Failed(distributary_core::errors::error_chain(&error)));
                    return Err(VfsError::new(VfsErrorCode::IoRead, "page refused".into()));
                }
            };
            let out = &mut buf[done..done + n];
            out.copy_from_slice(&page[in_page..in_page + n]);
            if pgno == 1 {
                for (i, byte) in out.iter_mut().enumerate() {
                    if (FORMAT_VERSION_OFFSET..FORMAT_VERSION_OFFSET + 2).contains(&(in_page + i)) {
                        *byte = 1;
                    }
                }
            }
            done += n;
        }
        Ok(done)
    }

    fn write(&mut self, _: &[u8], _: u64) -> VfsResult<()> {
        Err(VfsError::new(VfsErrorCode::ReadOnly, "the replica is read-only".into()))
    }

    fn truncate(&mut self, _: u64) -> VfsResult<()> {
        Err(VfsError::new(VfsErrorCode::ReadOnly, "the replica is read-only".into()))
    }

    fn sync(&mut self, _: SyncOptions) -> VfsResult<()> {
        Ok(())
    }

    fn size(&self) -> VfsResult<u64> {
        Ok(self.version.len())
    }

    fn lock(&mut self, _: LockLevel) -> VfsResult<()> {
        Ok(())
    }

    fn unlock(&mut self, _: LockLevel) -> VfsResult<()> {
        Ok(())
    }

    fn check_reserved_lock(&self) -> VfsResult<bool> {
        Ok(false)
    }
}

struct LazyStore;

impl VfsStore for LazyStore {
    type File = LazyFile;
    type AppData = sqlite_wasm_rs::WasmOsCallback;

    fn open_file(_: &Self::AppData, request: OpenRequest<'_>) -> VfsResult<OpenedFile<LazyFile>> {
        let cant_open = |why: &str| VfsError::new(VfsErrorCode::CantOpen, why.to_string().into());
        if request.options.kind() != Some(FileKind::MainDb) {
            // temp_store = MEMORY keeps SQLite's temporary files off the VFS.
            return Err(cant_open("the lazy replica opens no file but its database"));
        }
        let name = request.filename.map(|f| f.path().to_string()).unwrap_or_default();
        let (replica, version) = FILES
            .with(|files| {
                let files = files.borrow();
                files.iter().find(|f| f.name == name).map(|f| (f.replica.clone(), f.version.clone()))
            })
            .ok_or_else(|| cant_open("no such version"))?;
        Ok(OpenedFile { file: LazyFile { replica, version }, access: request.options.access() })
    }

    fn close_file(_: &Self::AppData, _: Option<&str>, _: LazyFile, _: OpenOptions) -> VfsResult<()> {
        Ok(())
    }

    fn access(_: &Self::AppData, name: &str, _: AccessMode) -> VfsResult<bool> {
        // No journal, WAL or other file beside the database exists.
        Ok(FILES.with(|files| files.borrow().iter().any(|f| f.name == name)))
    }

    fn full_pathname(_: &Self::AppData, name: &str) -> VfsResult<String> {
        Ok(name.to_string())
    }

    fn delete_file(_: &Self::AppData, _: &str, _: bool) -> VfsResult<()> {
        Ok(())
    }
}

struct LazyIo;

impl SQLiteIoMethods for LazyIo {
    type Store = LazyStore;
}

struct LazyVfs;

impl SQLiteVfs<LazyIo> for LazyVfs {
    type Os = sqlite_wasm_rs::WasmOsCallback;

    fn os(data: &sqlite_wasm_rs::WasmOsCallback) -> &Self::Os {
        data
    }
}

/// Registers the VFS once per module instance.
fn register() -> Result<(), String> {
    thread_local!(static REGISTERED: Cell<bool> = const { Cell::new(false) });
    if REGISTERED.with(Cell::get) {
        return Ok(());
    }
    // SAFETY: wasm is single-threaded here. The registration's allocations
    // stay with SQLite for the module's life (dropping the handle frees
    // nothing), as open files may outlive any owner.
    let _kept_registered = unsafe { register_vfs::<LazyIo, LazyVfs>(VFS_NAME, sqlite_wasm_rs::WasmOsCallback, false) }
        .map_err(|e| format!("register the lazy VFS: {e}"))?;
    REGISTERED.with(|r| r.set(true));
    Ok(())
}

/// SQLite open on one version.
struct VersionDb {
    name: String,
    db: ReadOnlyDb,
}

impl Drop for VersionDb {
    fn drop(&mut self) {
        // The connection closes first (field order), then the name goes.
        let name = std::mem::take(&mut self.name);
        FILES.with(|files| files.borrow_mut().retain(|f| f.name != name));
    }
}

/// The lazy side of an `EdgeReplica`.
pub struct LazyState {
    pub replica: Rc<LazyReplica>,
    /// The connection on the newest version opened (older ones live as
    /// long as a query holds them).
    current: RefCell<Option<(u64, Rc<VersionDb>)>>,
    read_ahead: Cell<ReadAhead>,
}

impl LazyState {
    pub fn new(replica: LazyReplica) -> LazyState {
        LazyState {
            replica: Rc::new(replica),
            current: RefCell::new(None),
            read_ahead: Cell::new(ReadAhead::default()),
        }
    }

    /// The connection on `version`, opened if needed.
    fn db_for(&self, version: &Arc<Version>) -> Result<Rc<VersionDb>, String> {
        if let Some((id, db)) = &*self.current.borrow()
            && *id == version.id()
        {
            return Ok(db.clone());
        }
        register()?;
        let name = format!("/version-{}.db", version.id());
        FILES.with(|files| {
            let openable = Openable { name: name.clone(), replica: self.replica.clone(), version: version.clone() };
            files.borrow_mut().push(openable)
        });
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let opened = Connection::open_with_flags_and_vfs(&name, flags, VFS_NAME)
            .map_err(|e| format!("open SQLite: {e}"))
            .and_then(|conn| {
                // Sorts and temporary tables in memory, never through the VFS.
                conn.execute_batch("PRAGMA temp_store = MEMORY").map_err(|e| format!("open SQLite: {e}"))?;
                Ok(ReadOnlyDb::from_connection(conn))
            });
        let db = match opened {
            Ok(db) => Rc::new(VersionDb { name, db }),
            Err(error) => {
                FILES.with(|files| files.borrow_mut().retain(|f| f.name != name));
                return Err(error);
            }
        };
        *self.current.borrow_mut() = Some((version.id(), db.clone()));
        Ok(db)
    }

    /// Runs `sql` without fetching: `Err` names what is missing.
    pub fn query_cached(&self, sql: &str, params: &Array) -> Result<JsValue, String> {
        let version = self.version()?;
        let db = self.db_for(&version)?;
        take_miss();
        let result = db.db.query(sql, params);
        match (result, take_miss()) {
            (Ok(rows), _) => Ok(rows),
            (Err(_), Some(Miss::Page(pgno))) => Err(format!(
                "query: page {pgno} is not fetched yet (a lazy replica fetches pages in `await replica.queryAsync(...)`)"
            )),
            (Err(_), Some(Miss::Failed(why))) => Err(format!("query: {why}")),
            (Err(error), None) => Err(error),
        }
    }

    fn version(&self) -> Result<Arc<Version>, String> {
        self.replica.current().ok_or_else(|| "query: the replica is empty (sync it first)".to_string())
    }

    /// Runs `sql`, fetching the pages it reaches, on one version throughout.
    /// If an object it needs is gone from the store (retention dropped it
    /// after the replica read its index), syncs from the newest snapshot
    /// and runs it once more on that version.
    pub async fn query(&self, sql: &str, params: &Array) -> Result<JsValue, String> {
        match self.query_once(sql, params).await {
            Err(QueryError::Gone(_)) => {
                self.replica
                    .sync(true)
                    .await
                    .map_err(|e| format!("query: {}", distributary_core::errors::error_chain(&e)))?;
                self.query_once(sql, params).await.map_err(QueryError::into_message)
            }
            other => other.map_err(QueryError::into_message),
        }
    }

    async fn query_once(&self, sql: &str, params: &Array) -> Result<JsValue, QueryError> {
        let version = self.version().map_err(QueryError::Other)?;
        let db = self.db_for(&version).map_err(QueryError::Other)?;
        let mut fetched = HashSet::new();
        loop {
            take_miss();
            let result = db.db.query(sql, params);
            match (result, take_miss()) {
                (Ok(rows), _) => return Ok(rows),
                (Err(_), Some(Miss::Page(pgno))) => {
                    if !fetched.insert(pgno) {
                        return Err(QueryError::Other(format!(
                            "query: it needs more pages at once than the page cache holds ({} bytes): open the replica with a larger cacheBytes",
                            self.replica.stats().cached_bytes
                        )));
                    }
                    let mut ahead = self.read_ahead.get();
                    let pages: Vec<u32> = ahead.pages_for(pgno, version.pages()).collect();
                    self.read_ahead.set(ahead);
                    if let Err(error) = self.replica.fetch(&version, &pages).await {
                        return Err(match error {
                            ApplyError::Store(StoreError::NotFound { .. }) => QueryError::Gone(error),
                            error => {
                                QueryError::Other(format!("query: {}", distributary_core::errors::error_chain(&error)))
                            }
                        });
                    }
                }
                (Err(_), Some(Miss::Failed(why))) => return Err(QueryError::Other(format!("query: {why}"))),
                (Err(error), None) => return Err(QueryError::Other(error)),
            }
        }
    }
}

enum QueryError {
    /// An object of the version is gone from the store.
    Gone(ApplyError),
    Other(String),
}

impl QueryError {
    fn into_message(self) -> String {
        match self {
            QueryError::Gone(error) => format!("query: {}", distributary_core::errors::error_chain(&error)),
            QueryError::Other(message) => message,
        }
    }
}
