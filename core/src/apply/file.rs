//! Writing a new database file directly: what `distributary restore` and a
//! new replica's first `edge-reader sync` write, since nobody has that file
//! open yet. Pages go to their place in the file with positioned writes,
//! and each is written once:
//!
//! 1. the chain after the snapshot (L1, L0) first, in order, so a newer
//!    page lands over an older one while both are still in the page cache;
//!    each object is verified on its own as it is read;
//! 2. then the snapshot, fetched last (in ranged parts when large) and
//!    decoded on every core, writing only the pages the chain did not and
//!    that are within the final size. Every page it writes is final, so the
//!    kernel is asked to start writing them to the disk as they come
//!    (`sync_file_range`), and the closing fsync finds little left;
//! 3. the chain's pre- and post-apply checksums are replayed from page
//!    hashes (the snapshot's hashes of the pages the chain replaces are
//!    kept for that), exactly as if it had been applied in order.
//!
//! Then the file is cut to the database's size and fsynced. The primary's
//! page 1 already marks it as a WAL database (the primary runs in WAL mode),
//! so no SQLite transaction, journal or checkpoint touches the pages. A
//! live replica keeps the SQLite path (`sqlite.rs`), whose readers must
//! never see a torn state.
//!
//! A failed object fails the whole file: nothing is undone, and the caller
//! removes the file (it was never renamed into place).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::fetch::{Item, fetch_whole};
use super::run::{Applying, Order, Outcome, apply_plan};
use super::verify::{PagesAt, SnapshotWritten, WrittenAhead, empty_position};
use super::{ApplyError, ObjectApplier, SyncOptions};
use crate::ids::{PageNo, TxId};
use crate::layout::snapshot_key;
use crate::plan::{Base, Plan, ReplicaPosition};
use crate::store::Store;

/// Adjacent pages are gathered into one write of at most this many bytes.
const WRITE_RUN_BYTES: usize = 1 << 20;
/// The snapshot's writes are handed to the disk every this many bytes.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// A new database file written page by page.
pub(super) struct FileSink {
    path: PathBuf,
    file: File,
    page_size: u32,
    /// Pages gathered for one write, starting at page `run_start`.
    run: Vec<u8>,
    run_start: u32,
    /// Bytes written through [`PagesAt`] (the snapshot's), for writeback.
    written_at: AtomicU64,
    /// Wakes the thread that starts writeback, so no decoding thread waits
    /// while the kernel queues the writes (25 ms a call, measured here).
    writeback: Option<std::sync::mpsc::SyncSender<()>>,
}

impl FileSink {
    /// Creates `path`, which must not exist, for pages of `page_size` bytes.
    fn create(path: &Path, page_size: u32) -> Result<FileSink, ApplyError> {
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
            run: Vec::with_capacity(WRITE_RUN_BYTES),
            run_start: 0,
            written_at: AtomicU64::new(0),
            writeback: None,
        })
    }

    /// Writes page `pgno`, gathering adjacent pages into one write.
    fn write_page(&mut self, pgno: PageNo, page: &[u8]) -> Result<(), ApplyError> {
        let next = self.run_start + (self.run.len() / self.page_size as usize) as u32;
        if self.run.is_empty() || pgno.0 != next || self.run.len() + page.len() > WRITE_RUN_BYTES {
            self.flush()?;
            self.run_start = pgno.0;
        }
        self.run.extend_from_slice(page);
        Ok(())
    }

    /// Writes the gathered run of pages.
    fn flush(&mut self) -> Result<(), ApplyError> {
        if self.run.is_empty() {
            return Ok(());
        }
        self.write_at(PageNo(self.run_start), &self.run)?;
        self.run.clear();
        Ok(())
    }

    /// Writes whole pages starting at page `first`.
    fn write_at(&self, first: PageNo, pages: &[u8]) -> Result<(), ApplyError> {
        let offset = u64::from(first.0 - 1) * u64::from(self.page_size);
        self.file.write_all_at(pages, offset).map_err(ApplyError::io("write pages to", &self.path))
    }

    /// Cuts the file to `pages` pages and makes it durable.
    fn finish(mut self, pages: u32) -> Result<(), ApplyError> {
        self.writeback = None;
        self.flush()?;
        let length = u64::from(pages) * u64::from(self.page_size);
        self.file.set_len(length).map_err(ApplyError::io("set the size of", &self.path))?;
        self.file.sync_all().map_err(ApplyError::io("fsync", &self.path))
    }

    /// From now on, no page is written again: every [`WRITEBACK_EVERY`]
    /// bytes written through [`PagesAt`], a thread of its own asks the
    /// kernel to start writing the file's dirty pages to the disk, without
    /// waiting for them. It ends when the sink does.
    fn write_back_as_written(&mut self) -> Result<(), ApplyError> {
        let file = self.file.try_clone().map_err(ApplyError::io("open", &self.path))?;
        // One wake-up pending at most: a writeback started later covers
        // every page dirtied before it.
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    // SAFETY: a valid descriptor, a range covering the file,
                    // and a flag that only starts writeback. A failure is
                    // harmless (the closing fsync writes what is left).
                    unsafe {
                        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                    }
                }
            })
            .map_err(ApplyError::io("start a thread for", &self.path))?;
        self.writeback = Some(wake);
        Ok(())
    }
}

impl PagesAt for FileSink {
    fn write_pages_at(&self, first: PageNo, pages: &[u8]) -> Result<(), ApplyError> {
        self.write_at(first, pages)?;
        let before = self.written_at.fetch_add(pages.len() as u64, Ordering::Relaxed);
        if before / WRITEBACK_EVERY != (before + pages.len() as u64) / WRITEBACK_EVERY
            && let Some(wake) = &self.writeback
        {
            let _ = wake.try_send(());
        }
        Ok(())
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
    let apply = {
        let (path, plan, options) = (path.to_path_buf(), plan.clone(), options.clone());
        move |applying| write_chain_then_snapshot(FileSink::create(&path, plan.page_size)?, &plan, &options, applying)
    };
    let Outcome { position, pages, objects, bytes, page_one, sink } =
        apply_plan(store, plan, options, Order::SnapshotLast, apply).await?;
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

/// The applier of a new file (steps 1 to 3 of the module's comment).
fn write_chain_then_snapshot(
    mut sink: FileSink,
    plan: &Plan,
    options: &SyncOptions,
    applying: Applying,
) -> Result<Outcome<FileSink>, ApplyError> {
    let Applying { mut items, counters, runtime, store } = applying;
    let Base::Snapshot(snapshot) = plan.base else {
        return Err(ApplyError::Task { op: "write a new database", reason: "the plan starts from no snapshot".into() });
    };
    let lock_byte_page = super::sqlite::lock_byte_page(plan.page_size);
    let base = empty_position(plan.generation);
    let mut objects = ObjectApplier::new(plan.generation, options.key.as_ref(), plan.page_size, base, 0)?;
    objects.count_pages_in(Arc::clone(&counters.pages));
    let started = std::time::Instant::now();
    // Step 1: the chain after the snapshot, placed by TXID after it.
    let mut at = ReplicaPosition { txid: snapshot.txid, ..base };
    let mut written: Vec<WrittenAhead> = Vec::new();
    let (mut count, mut bytes, mut page_one) = (0u64, 0u64, None);
    while let Some(item) = items.blocking_recv() {
        let (key, size, body) = match item {
            Item::Object { key, size, body } => (key, size, body),
            Item::Failed(error) => return Err(error),
        };
        let body = runtime
            .block_on(body)
            .map_err(|e| ApplyError::Task { op: "download segment", reason: e.to_string() })??;
        let object = objects.write_ahead(at, lock_byte_page, &key, body.into_reader(), |pgno, page| {
            if pgno.0 == 1 {
                page_one = Some(page.to_vec());
            }
            sink.write_page(pgno, page)
        })?;
        at.txid = object.header.max_txid;
        written.push(object);
        (count, bytes) = (count + 1, bytes + size);
        counters.applied(count, bytes, at.txid);
    }
    sink.flush()?;
    tracing::debug!(objects = count, seconds = started.elapsed().as_secs_f64(), "wrote the chain after the snapshot");
    sink.write_back_as_written()?;
    // Step 2: the snapshot, around the pages the chain wrote.
    let key = snapshot_key(plan.generation, snapshot.txid);
    let (body, size) = runtime
        .block_on(fetch_whole(store, &key, snapshot.size, options.parts, Arc::clone(&counters)))
        .map_err(|e| match e {
            ApplyError::Store(e) if e.is_not_found() => {
                ApplyError::Missing { key: key.clone(), from_txid: TxId(1), to_txid: snapshot.txid }
            }
            e => e,
        })?;
    let SnapshotWritten { page_one: snapshot_page_one, mut hashes } =
        objects.write_snapshot_last(&sink, &written, lock_byte_page, &key, snapshot.txid, body.into_reader())?;
    (count, bytes) = (count + 1, bytes + size);
    tracing::debug!(key, seconds = started.elapsed().as_secs_f64(), "wrote the snapshot");
    // Step 3: the chain's checksums, in order from the snapshot's position.
    for object in &written {
        objects.replay(object, &mut hashes)?;
    }
    counters.applied(count, bytes, objects.position().txid);
    Ok(Outcome {
        position: objects.position(),
        pages: objects.size(),
        objects: count,
        bytes,
        page_one: page_one.or(snapshot_page_one),
        sink,
    })
}

/// Whether page 1 marks its database as a WAL database (header bytes 18
/// and 19, the file format's write and read versions, are 2).
pub(super) fn is_wal_page_one(page: &[u8]) -> bool {
    page.get(18..20) == Some(&[2, 2][..])
}
