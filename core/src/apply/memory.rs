//! A database image held in memory and synced in place, for a reader with
//! no file system: the simulated readers of the fleet tests (thousands of
//! replicas in one process). The wasm edge reader holds its pages in a
//! resident [`crate::lazy::LazyReplica`] instead, which SQLite reads
//! through a VFS (one way of reading for its full and lazy modes).
//!
//! [`sync_in_memory`] plans like every reader, then works in two phases:
//!
//! 1. [`download`] the whole chain (one object at a time; the image is not
//!    touched, so whoever reads it between two awaits sees the old state);
//! 2. [`Downloaded::apply`]: verify and apply the objects in order,
//!    synchronously, through the
//!    shared [`ObjectApplier`]: pages are written in place into the image,
//!    each object's overwritten pages kept in an undo log until its
//!    post-apply checksum matched, so a bad object is undone alone and the
//!    objects before it are kept.
//!
//! Memory: the image itself (at most the limit), the chain's objects as
//! downloaded (compressed pages), and the undo log of one object (all of the
//! image while a snapshot replaces an existing one).

use bytes::Bytes;

use super::verify::{default_lock_byte_page, empty_position};
use super::{
    ApplyError, Fetcher, ObjectApplier, PageSink, Progress, Started, SyncOptions, SyncSummary, Verified,
    check_page_size, prepare, walk_chain,
};
use crate::checksum::page_hash;
use crate::format::{Header, read_segment_header};
use crate::ids::{PageNo, TxId};
use crate::plan::{Base, ReplicaPosition};
use crate::store::Store;

/// The default size limit of an in-memory database: 1 GiB, which every
/// browser, Node and workerd can hold in wasm memory beside SQLite's own.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;

/// The largest limit accepted: 1.75 GiB. A wasm32 `Vec` holds at most
/// 2 GiB (`isize::MAX`) and the 4 GiB address space must also fit the
/// downloaded objects, the undo log, SQLite and the JavaScript copies.
pub const MAX_MEMORY_LIMIT: u64 = 7 << 28;

/// Offset of the SQLite header's file format write and read versions
/// (2 = WAL, 1 = rollback journal).
const FORMAT_VERSION_OFFSET: usize = 18;

/// A replica's database image in memory, with its position.
#[derive(Debug, Default)]
pub struct MemoryDatabase {
    bytes: Vec<u8>,
    page_size: u32,
    position: Option<ReplicaPosition>,
    limit: u64,
    /// The primary's format version bytes, while the image carries
    /// rollback-journal ones for SQLite's in-memory VFS.
    saved_versions: Option<[u8; 2]>,
}

impl MemoryDatabase {
    /// An empty database that refuses to grow past `limit` bytes (at most
    /// [`MAX_MEMORY_LIMIT`]; larger limits are lowered to it).
    pub fn new(limit: u64) -> MemoryDatabase {
        MemoryDatabase { limit: limit.min(MAX_MEMORY_LIMIT), ..MemoryDatabase::default() }
    }

    /// The position reached (`None` before the first sync).
    pub fn position(&self) -> Option<ReplicaPosition> {
        self.position
    }

    /// The page size in bytes (0 before the first sync).
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The size limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The image's size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was applied yet.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A copy of the database as the primary has it, byte for byte: a
    /// SQLite file (in WAL mode, like the primary's).
    pub fn export(&self) -> Vec<u8> {
        self.export_chunks().concat()
    }

    /// [`MemoryDatabase::export`] as three slices to copy in order, without
    /// an intermediate copy of the whole database.
    pub fn export_chunks(&self) -> [&[u8]; 3] {
        match &self.saved_versions {
            Some(versions) => {
                [&self.bytes[..FORMAT_VERSION_OFFSET], versions, &self.bytes[FORMAT_VERSION_OFFSET + 2..]]
            }
            None => [&self.bytes, &[], &[]],
        }
    }

    /// The image for `sqlite3_deserialize`, its header set to rollback
    /// journal mode: SQLite's in-memory VFS cannot open a WAL-mode image
    /// (`SQLITE_CANTOPEN`). The change is undone before the next sync and in
    /// [`MemoryDatabase::export`]. The caller must not write the image (open
    /// it read-only) and must close SQLite's view of it before the next sync.
    pub fn sqlite_image(&mut self) -> &mut [u8] {
        if self.saved_versions.is_none() && self.bytes.len() > FORMAT_VERSION_OFFSET + 1 {
            let versions = &mut self.bytes[FORMAT_VERSION_OFFSET..FORMAT_VERSION_OFFSET + 2];
            self.saved_versions = Some([versions[0], versions[1]]);
            versions.copy_from_slice(&[1, 1]);
        }
        &mut self.bytes
    }

    /// Puts the primary's header bytes back (see [`MemoryDatabase::sqlite_image`]).
    fn restore_versions(&mut self) {
        if let Some(versions) = self.saved_versions.take() {
            self.bytes[FORMAT_VERSION_OFFSET..FORMAT_VERSION_OFFSET + 2].copy_from_slice(&versions);
        }
    }
}

/// Brings `db` to `options.target` from `store`, in memory: [`download`]
/// then [`Downloaded::apply`] (see the module documentation). On error, `db`
/// holds every object verified before the failure.
pub async fn sync_in_memory(
    store: &dyn Store,
    db: &mut MemoryDatabase,
    options: &SyncOptions,
) -> Result<SyncSummary, ApplyError> {
    download(store, db.position(), db.page_size(), options).await?.apply(db)
}

/// The chain that brings a database at `position` (with pages of
/// `page_size` bytes, 0 if empty) to `options.target`, downloaded. Takes no
/// reference to the database: it stays readable while this awaits.
/// `options.concurrency` and `keep_state` do not apply (objects are fetched
/// one at a time; the position lives in the [`MemoryDatabase`]).
pub async fn download(
    store: &dyn Store,
    position: Option<ReplicaPosition>,
    page_size: u32,
    options: &SyncOptions,
) -> Result<Downloaded, ApplyError> {
    let (plan, summary) = prepare(store, None, options.target, async |_: &_| Ok(position)).await?;
    let mut downloaded = Downloaded {
        from: position,
        summary,
        key: options.key.clone(),
        progress: options.progress.clone(),
        objects: Vec::new(),
        walked: Ok(()),
    };
    if options.dry_run {
        return Ok(downloaded);
    }
    if let Base::Replica(_) = plan.base {
        // A snapshot starts a new image, of whatever page size.
        check_page_size(&plan, page_size, "the in-memory replica", "open a new replica")?;
    }
    let mut fetcher = CollectFetcher { store, objects: Vec::new() };
    // A failure part-way is reported after the objects before it are applied.
    downloaded.walked = walk_chain(&mut fetcher, &plan).await;
    downloaded.objects = fetcher.objects;
    Ok(downloaded)
}

/// A downloaded chain, not verified yet: [`Downloaded::apply`] verifies and
/// applies it.
pub struct Downloaded {
    from: Option<ReplicaPosition>,
    summary: SyncSummary,
    key: Option<crate::format::EncryptionKey>,
    progress: Option<super::ProgressFn>,
    objects: Vec<(String, Bytes)>,
    walked: Result<(), ApplyError>,
}

impl std::fmt::Debug for Downloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloaded")
            .field("from", &self.from)
            .field("objects", &self.objects.iter().map(|(key, _)| key).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Downloaded {
    /// How many objects were downloaded.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// Verifies and applies the objects to `db`, in order, without awaiting
    /// (nobody sees a half-applied object). Stops at the first bad object
    /// and returns its error, keeping the objects before it; then returns
    /// the download's error, if the walk stopped on one.
    pub fn apply(self, db: &mut MemoryDatabase) -> Result<SyncSummary, ApplyError> {
        let Downloaded { from, mut summary, key, progress, objects, walked } = self;
        let plan = &summary.plan;
        if db.position != from {
            return Err(ApplyError::Task {
                op: "apply a download",
                reason: format!(
                    "the replica moved from TXID {} to {} while the download ran (sync again)",
                    from.map_or(TxId::ZERO, |p| p.txid),
                    db.position.map_or(TxId::ZERO, |p| p.txid)
                ),
            });
        }
        db.restore_versions();
        let base = match plan.base {
            Base::Replica(position) => position,
            Base::Snapshot(_) => empty_position(plan.generation),
        };
        // A snapshot with another page size starts a new image, kept only
        // if it applies.
        let fresh = db.page_size != plan.page_size;
        let mut image = if fresh { Vec::new() } else { std::mem::take(&mut db.bytes) };
        let size = u32::try_from(image.len() / plan.page_size as usize).unwrap_or(u32::MAX);
        let mut result = walked;
        let mut applied = 0u64;
        let mut bytes = 0u64;
        let mut position = base;
        match ObjectApplier::new(plan.generation, key.as_ref(), plan.page_size, base, size) {
            Err(error) => result = Err(error),
            Ok(mut applier) => {
                let mut sink = MemorySink {
                    pages: &mut image,
                    page_size: plan.page_size as usize,
                    limit: db.limit,
                    key: String::new(),
                    len_before: 0,
                    undo: Vec::new(),
                };
                for (key, body) in objects {
                    if let Err(error) = applier.apply_object(&mut sink, &key, &body[..]) {
                        // The first bad object is the error to report, before
                        // anything the walk found after it.
                        result = Err(error);
                        break;
                    }
                    applied += 1;
                    bytes += body.len() as u64;
                    if let Some(progress) = &progress {
                        progress(&Progress {
                            txid: applier.position().txid,
                            objects: applied,
                            bytes,
                            fetched: bytes,
                            ..Progress::default()
                        });
                    }
                }
                position = applier.position();
            }
        }
        if applied > 0 {
            db.bytes = image;
            db.page_size = plan.page_size;
            db.position = Some(position);
        } else if !fresh {
            db.bytes = image;
        }
        result?;
        if applied > 0 {
            summary.reach(position);
        }
        summary.objects = applied;
        summary.bytes = bytes;
        Ok(summary)
    }
}

/// Downloads each object whole and keeps it for the apply phase.
struct CollectFetcher<'a> {
    store: &'a dyn Store,
    objects: Vec<(String, Bytes)>,
}

impl Fetcher for CollectFetcher<'_> {
    type Body = Bytes;

    async fn start(&mut self, key: &str) -> Result<Option<Started<Bytes>>, ApplyError> {
        let bytes = match self.store.get_bytes(key).await {
            Ok((bytes, _)) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let header = read_segment_header(key, &bytes)?;
        Ok(Some(Started { header, size: bytes.len() as u64, body: bytes }))
    }

    async fn send(&mut self, key: String, started: Started<Bytes>) -> bool {
        self.objects.push((key, started.body));
        true
    }

    fn discard(&mut self, _body: Bytes) {}
}

/// Pages written in place into an image, with an undo log per object.
struct MemorySink<'a> {
    pages: &'a mut Vec<u8>,
    page_size: usize,
    limit: u64,
    /// The open object's key, for messages.
    key: String,
    /// The image's length when the open object began.
    len_before: usize,
    /// Pages the open object overwrote, with their previous contents.
    undo: Vec<(u32, Vec<u8>)>,
}

impl MemorySink<'_> {
    fn too_large(&self, key: &str, pages: u32) -> ApplyError {
        ApplyError::TooLarge {
            key: key.to_string(),
            pages,
            page_size: self.page_size as u32,
            bytes: u64::from(pages) * self.page_size as u64,
            limit: self.limit,
        }
    }

    fn offset(&self, pgno: PageNo) -> usize {
        (pgno.0 as usize - 1) * self.page_size
    }
}

impl PageSink for MemorySink<'_> {
    fn page_hash(&mut self, pgno: PageNo) -> Result<u64, ApplyError> {
        let offset = self.offset(pgno);
        let page = self.pages.get(offset..offset + self.page_size).ok_or_else(|| ApplyError::Io {
            op: "read page of",
            path: "the in-memory replica".into(),
            source: std::io::Error::other(format!("page {pgno} is missing (the image is shorter than recorded)")),
        })?;
        Ok(page_hash(pgno, page))
    }

    fn begin_object(&mut self, key: &str, header: &Header) -> Result<(), ApplyError> {
        let bytes = u64::from(header.commit) * self.page_size as u64;
        if bytes > self.limit {
            return Err(self.too_large(key, header.commit));
        }
        // Grow once, to the final size, rather than by doubling: a snapshot
        // would otherwise transiently need twice its size.
        let additional = (bytes as usize).saturating_sub(self.pages.len());
        self.pages.try_reserve_exact(additional).map_err(|e| ApplyError::Io {
            op: "allocate memory for",
            path: key.into(),
            source: std::io::Error::other(format!("{bytes} bytes: {e}")),
        })?;
        self.key = key.to_string();
        self.len_before = self.pages.len();
        self.undo.clear();
        Ok(())
    }

    fn write_page(&mut self, pgno: PageNo, page: &[u8]) -> Result<(), ApplyError> {
        let offset = self.offset(pgno);
        let end = offset + self.page_size;
        if end as u64 > self.limit {
            return Err(self.too_large(&self.key, pgno.0));
        }
        if end <= self.len_before {
            self.undo.push((pgno.0, self.pages[offset..end].to_vec()));
        }
        if end > self.pages.len() {
            self.pages.resize(end, 0);
        }
        self.pages[offset..end].copy_from_slice(page);
        Ok(())
    }

    fn finish_object(&mut self, object: Verified) -> Result<(), ApplyError> {
        self.pages.resize(object.commit as usize * self.page_size, 0);
        self.undo.clear();
        Ok(())
    }

    fn lock_byte_page(&self) -> u32 {
        default_lock_byte_page(self.page_size as u32)
    }

    fn rollback_object(&mut self) -> Result<(), ApplyError> {
        for (pgno, old) in self.undo.drain(..).rev() {
            let offset = (pgno as usize - 1) * self.page_size;
            self.pages[offset..offset + self.page_size].copy_from_slice(&old);
        }
        self.pages.truncate(self.len_before);
        Ok(())
    }
}
