//! Writing a new database file directly: what `distributary restore` and a
//! new replica's first `edge-reader sync` write, since nobody has that file
//! open yet. Pages go to their place in the file with positioned writes
//! (runs of adjacent pages coalesced), each object verified by the shared
//! [`ObjectApplier`](super::ObjectApplier) as it goes; at the end the file
//! is cut to the database's size and fsynced once. The primary's page 1
//! already marks the file as a WAL database (the primary runs in WAL mode),
//! so no SQLite transaction, journal or checkpoint touches the pages: the
//! database is written once. A live replica keeps the SQLite path
//! (`sqlite.rs`), whose readers must never see a torn state.
//!
//! A failed object fails the whole file: its writes are not undone, and the
//! caller removes the file (it was never renamed into place).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::run::{CommitSink, Outcome, apply_plan};
use super::verify::PagesAt;
use super::{ApplyError, PageSink, SyncOptions};
use crate::checksum::page_hash;
use crate::format::Header;
use crate::ids::PageNo;
use crate::plan::{Plan, ReplicaPosition};
use crate::store::Store;

/// Adjacent pages are gathered into one write of at most this many bytes.
const WRITE_RUN_BYTES: usize = 1 << 20;

/// A new database file written page by page.
pub(super) struct FileSink {
    path: PathBuf,
    file: File,
    page_size: u32,
    lock_byte_page: u32,
    /// Pages gathered for one write, starting at page `run_start`.
    run: Vec<u8>,
    run_start: u32,
    /// The primary's page 1 as the last object that wrote it left it.
    page_one: Option<Vec<u8>>,
}

impl FileSink {
    /// Creates `path`, which must not exist, for pages of `page_size` bytes.
    pub(super) fn create(path: &Path, page_size: u32, lock_byte_page: u32) -> Result<FileSink, ApplyError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(ApplyError::io("create", path))?;
        Ok(FileSink {
            path: path.to_path_buf(),
            file,
            page_size,
            lock_byte_page,
            run: Vec::with_capacity(WRITE_RUN_BYTES),
            run_start: 0,
            page_one: None,
        })
    }

    /// Writes the gathered run of pages.
    pub(super) fn flush(&mut self) -> Result<(), ApplyError> {
        if self.run.is_empty() {
            return Ok(());
        }
        self.write_pages_at(PageNo(self.run_start), &self.run)?;
        self.run.clear();
        Ok(())
    }

    /// Cuts the file to `pages` pages and makes it durable.
    pub(super) fn finish(mut self, pages: u32) -> Result<(), ApplyError> {
        self.flush()?;
        let length = u64::from(pages) * u64::from(self.page_size);
        self.file.set_len(length).map_err(ApplyError::io("set the size of", &self.path))?;
        self.file.sync_all().map_err(ApplyError::io("fsync", &self.path))
    }
}

impl PageSink for FileSink {
    fn page_hash(&mut self, pgno: PageNo) -> Result<u64, ApplyError> {
        // Only objects after the first ask (what they replace): the page was
        // written by this run, and the page cache still holds it.
        let mut page = vec![0u8; self.page_size as usize];
        if pgno.0 == self.lock_byte_page {
            // Never written (a hole, or past the end): zeros.
            return Ok(page_hash(pgno, &page));
        }
        self.flush()?;
        let offset = u64::from(pgno.0 - 1) * u64::from(self.page_size);
        self.file.read_exact_at(&mut page, offset).map_err(ApplyError::io("read a page of", &self.path))?;
        Ok(page_hash(pgno, &page))
    }

    fn begin_object(&mut self, _key: &str, _header: &Header) -> Result<(), ApplyError> {
        Ok(())
    }

    fn write_page(&mut self, pgno: PageNo, page: &[u8]) -> Result<(), ApplyError> {
        let next = self.run_start + (self.run.len() / self.page_size as usize) as u32;
        if self.run.is_empty() || pgno.0 != next || self.run.len() + page.len() > WRITE_RUN_BYTES {
            self.flush()?;
            self.run_start = pgno.0;
        }
        self.run.extend_from_slice(page);
        Ok(())
    }

    fn finish_object(&mut self, _: &Header, _: Vec<(u32, u64)>, page_one: Option<Vec<u8>>) -> Result<(), ApplyError> {
        if page_one.is_some() {
            self.page_one = page_one;
        }
        Ok(())
    }

    fn rollback_object(&mut self) -> Result<(), ApplyError> {
        // The run stops at a failed object and the caller removes the
        // file: only the pages not yet written are dropped.
        self.run.clear();
        Ok(())
    }

    fn pages_at(&mut self) -> Result<Option<&dyn PagesAt>, ApplyError> {
        self.flush()?;
        Ok(Some(self))
    }

    fn wants_written_hashes(&self) -> bool {
        false
    }

    fn lock_byte_page(&self) -> u32 {
        self.lock_byte_page
    }
}

impl PagesAt for FileSink {
    fn write_pages_at(&self, first: PageNo, pages: &[u8]) -> Result<(), ApplyError> {
        let offset = u64::from(first.0 - 1) * u64::from(self.page_size);
        self.file.write_all_at(pages, offset).map_err(ApplyError::io("write pages to", &self.path))
    }
}

impl CommitSink for FileSink {
    fn commit(&mut self, _position: ReplicaPosition) -> Result<(), ApplyError> {
        // Nobody reads the file before it is finished and renamed.
        self.flush()
    }

    fn commit_is_full(&self) -> bool {
        false
    }

    fn take_page_one(&mut self) -> Option<Vec<u8>> {
        self.page_one.take()
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn opened_size(&self) -> u32 {
        0
    }
}

/// What a new database file holds once written.
pub(super) struct NewDatabase {
    pub position: ReplicaPosition,
    pub objects: u64,
    pub bytes: u64,
    /// The primary's page 1, as written.
    pub page_one: Option<Vec<u8>>,
}

/// Writes `plan`'s chain from `store` into `path`, a file that must not
/// exist, then cuts it to the database's size and fsyncs it. On error the
/// file is incomplete and the caller removes it.
pub(super) async fn write_new_database(
    store: Arc<dyn Store>,
    path: &Path,
    plan: &Plan,
    options: &SyncOptions,
) -> Result<NewDatabase, ApplyError> {
    let create = {
        let path = path.to_path_buf();
        let (page_size, lock_byte_page) = (plan.page_size, super::sqlite::lock_byte_page(plan.page_size));
        move || FileSink::create(&path, page_size, lock_byte_page)
    };
    let Outcome { position, pages, objects, bytes, page_one, sink } = apply_plan(store, plan, options, create).await?;
    sink.finish(pages)?;
    if !page_one.as_deref().is_some_and(is_wal_page_one) {
        // The primary runs in WAL mode, so its page 1 says so; a page 1
        // that does not is switched here (SQLite restamps it doing so).
        tracing::warn!(db = %path.display(), "the restored page 1 is not a WAL database's; switching it to WAL");
        let conn = rusqlite::Connection::open(path).map_err(ApplyError::sqlite("open", path))?;
        let _: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(ApplyError::sqlite("set WAL mode on", path))?;
    }
    Ok(NewDatabase { position, objects, bytes, page_one })
}

/// Whether page 1 marks its database as a WAL database (header bytes 18
/// and 19, the file format's write and read versions, are 2).
pub(super) fn is_wal_page_one(page: &[u8]) -> bool {
    page.get(18..20) == Some(&[2, 2][..])
}

/// Temp files of runs killed before they renamed their output: names
/// `.{name}.{what}-{pid}` (and their `-wal`/`-shm`) beside `out` whose
/// process is gone. Removed so a kill -9 leaves nothing behind for long.
pub(super) fn remove_abandoned(out: &Path, what: &str) {
    // Whether a process is alive is read from /proc; without it, keep all.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let (Some(dir), Some(name)) = (out.parent(), out.file_name()) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!(".{}.{what}-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else { continue };
        let pid = rest.trim_end_matches("-wal").trim_end_matches("-shm");
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(file = %entry.path().display(), "removing the temp file of a run that was killed");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
