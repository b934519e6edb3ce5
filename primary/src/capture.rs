//! Capturing: turning committed WAL transactions (or a scan of every page)
//! into segments, one per store, built in memory (or, for a segment that
//! holds every page, in the store's `pending/` folder). Page hashes and the
//! rolling checksum are updated in the same pass, so the post-apply checksum
//! of every segment is known without re-reading the database.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use distributary_core::atomic_file::TempFile;
use distributary_core::checksum::page_hash;
use distributary_core::format::{Flags, Header, KeyCheck, PageCodec, SegmentEncoder};
use distributary_core::{Checksum, GenerationId, PageNo, TxId, clock};

use crate::wal::{self, WalTransaction};

/// A store as the capture sees it: where its segments go and how they are
/// sealed and numbered.
pub struct CaptureStore {
    /// The store's URL.
    pub url: String,
    /// The store's generation.
    pub generation: GenerationId,
    /// The newest TXID captured for the store.
    pub captured_txid: TxId,
    /// Where its captured segments wait for upload.
    pub pending_dir: PathBuf,
    /// Compresses and seals its pages.
    pub codec: PageCodec,
}

/// What a segment being captured for one target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// The pages changed since the last capture (L0).
    Changes,
    /// Every page, flagged SNAPSHOT: a catch-up that applies to any state,
    /// or the first snapshot of a generation (`min_txid` 1).
    Full,
}

/// The name of a pending segment: its first TXID, so names sort in order.
pub fn pending_name(min_txid: TxId) -> String {
    format!("{min_txid}.seg")
}

/// The pending segment that starts a new generation (uploaded as its
/// snapshot, then the manifest).
pub const GENESIS_NAME: &str = "genesis.seg";

/// Where a segment being written goes.
enum Sink {
    /// Into memory: the common case, a capture uploaded from there.
    Memory(SegmentEncoder<Vec<u8>>),
    /// Into a file of the store's pending folder (temp name, renamed when
    /// finished): a segment too large to hold in memory.
    File { encoder: SegmentEncoder<BufWriter<File>>, temp: TempFile, path: PathBuf },
}

struct Open {
    sink: Sink,
    header: Header,
    genesis: bool,
}

/// A finished segment, in memory or in a pending file.
pub struct Finished {
    /// Its header.
    pub header: Header,
    /// The first snapshot of a generation.
    pub genesis: bool,
    /// Its bytes.
    pub body: Body,
}

/// Where a captured segment's bytes are.
#[derive(Clone, Debug)]
pub enum Body {
    /// In memory.
    Memory(bytes::Bytes),
    /// In a file of the store's pending folder.
    File(PathBuf),
}

/// Segments being written, one per target, fed the same pages.
pub struct SegmentSet {
    open: Vec<Option<Open>>,
}

/// What to write for one target in a [`SegmentSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPlan {
    /// Changed pages or every page.
    pub kind: SegmentKind,
    /// The first snapshot of a generation (uploaded as its snapshot).
    pub genesis: bool,
    /// First TXID covered.
    pub min_txid: TxId,
    /// Last TXID covered.
    pub max_txid: TxId,
    /// The store's database checksum before the segment.
    pub pre_apply_checksum: Checksum,
}

impl SegmentSet {
    /// Starts one segment per target, `plans[i]` for `targets[i]` (`None`
    /// skips that target). With `in_memory`, changes are written to memory
    /// (full segments always go to a pending file: they hold every page).
    pub fn begin<'t>(
        targets: impl IntoIterator<Item = &'t CaptureStore>,
        plans: &[Option<SegmentPlan>],
        page_size: u32,
        commit: u32,
        in_memory: bool,
    ) -> Result<SegmentSet> {
        let now = clock::now_ms();
        let mut open = Vec::with_capacity(plans.len());
        for (target, plan) in targets.into_iter().zip(plans) {
            let Some(plan) = *plan else {
                open.push(None);
                continue;
            };
            let key_check = target.codec.key_check();
            let mut flags = if plan.kind == SegmentKind::Full { Flags::SNAPSHOT } else { 0 };
            if key_check != KeyCheck::NONE {
                flags |= Flags::ENCRYPTED;
            }
            let header = Header {
                flags: Flags(flags),
                page_size,
                commit,
                min_txid: plan.min_txid,
                max_txid: plan.max_txid,
                timestamp_ms: now,
                pre_apply_checksum: plan.pre_apply_checksum,
                generation: target.generation,
                key_check,
                compression: target.codec.compression().codecs(),
            };
            let name = if plan.genesis { GENESIS_NAME.to_string() } else { pending_name(plan.min_txid) };
            let sink = if in_memory && plan.kind == SegmentKind::Changes {
                Sink::Memory(SegmentEncoder::new(name, header.clone(), Vec::new())?)
            } else {
                std::fs::create_dir_all(&target.pending_dir)
                    .with_context(|| format!("create {}", target.pending_dir.display()))?;
                let path = target.pending_dir.join(&name);
                // The fixed temp name: a capture killed midway leaves one
                // file, reused by the next.
                let (temp, file) =
                    TempFile::beside(&path).with_context(|| format!("create a temp file for {}", path.display()))?;
                let encoder = SegmentEncoder::new(name, header.clone(), BufWriter::with_capacity(256 * 1024, file))?;
                Sink::File { encoder, temp, path }
            };
            open.push(Some(Open { sink, header, genesis: plan.genesis }));
        }
        Ok(SegmentSet { open })
    }

    /// Writes a page to every segment that wants it: all of them if
    /// `changed`, only full ones otherwise. `codecs` are the targets'.
    pub fn write_page<'c>(
        &mut self,
        codecs: impl IntoIterator<Item = &'c mut PageCodec>,
        pgno: u32,
        page: &[u8],
        changed: bool,
    ) -> Result<()> {
        for (slot, codec) in self.open.iter_mut().zip(codecs) {
            let Some(open) = slot else { continue };
            if !changed && !open.header.flags.snapshot() {
                continue;
            }
            match &mut open.sink {
                Sink::Memory(encoder) => encoder.write_page(codec, PageNo(pgno), page)?,
                Sink::File { encoder, .. } => encoder.write_page(codec, PageNo(pgno), page)?,
            }
        }
        Ok(())
    }

    /// Finishes every segment with `post_apply_checksum` (a file is renamed
    /// to its final name). One entry per target, `None` where it had none.
    pub fn finish(self, post_apply_checksum: Checksum) -> Result<Vec<Option<Finished>>> {
        let keep = vec![true; self.open.len()];
        self.finish_kept(post_apply_checksum, &keep)
    }

    /// Like [`SegmentSet::finish`], but discards the segments of targets
    /// whose `keep` is false.
    pub fn finish_kept(self, post_apply_checksum: Checksum, keep: &[bool]) -> Result<Vec<Option<Finished>>> {
        let mut finished = Vec::with_capacity(self.open.len());
        for (open, keep) in self.open.into_iter().zip(keep) {
            let Some(Open { sink, header, genesis }) = open else {
                finished.push(None);
                continue;
            };
            let body = match sink {
                Sink::Memory(_) if !*keep => None,
                Sink::File { encoder, temp, .. } if !*keep => {
                    // The temp file goes with its guard.
                    drop((encoder, temp));
                    None
                }
                Sink::Memory(encoder) => {
                    let (bytes, _) = encoder.finish(post_apply_checksum)?;
                    Some(Body::Memory(bytes.into()))
                }
                Sink::File { encoder, temp, path } => {
                    let (writer, _) = encoder.finish(post_apply_checksum)?;
                    // Written, not fsynced: a killed process loses nothing
                    // the kernel holds, and after a machine restart the
                    // start checks the pending files and the store before
                    // trusting either (`crate::resume`).
                    writer.into_inner().map_err(|e| e.into_error())?;
                    temp.rename_over(&path).with_context(|| format!("rename {}", path.display()))?;
                    Some(Body::File(path))
                }
            };
            finished.push(body.map(|body| Finished { header, genesis, body }));
        }
        Ok(finished)
    }
}

/// The effect of a run of WAL transactions on the database's pages.
pub struct WalBatch {
    /// Number of transactions.
    pub transactions: u64,
    /// Database size in pages after the last one.
    pub commit: u32,
    /// For each page to ship: where its newest bytes are.
    pub pages: BTreeMap<u32, PageSource>,
}

/// Where the bytes of a page are at the end of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSource {
    /// In the WAL, page data at this offset.
    Wal(u64),
    /// In the database file (a page that reappeared when the file grew
    /// without being rewritten: SQLite reads it from there too).
    DbFile,
}

/// Folds transactions into a batch. `wal_index` maps every page written
/// earlier in the current WAL to its newest frame (SQLite reads a page from
/// there when it is not in a later frame); it is updated. `old_commit` is the
/// size before the batch. Every page past the smallest size the database had
/// during the batch is included (FORMAT.md §3.7); pages past the final size
/// are dropped.
pub fn fold_transactions(
    transactions: &[WalTransaction],
    old_commit: u32,
    wal_index: &mut BTreeMap<u32, u64>,
) -> WalBatch {
    let mut pages: BTreeMap<u32, PageSource> = BTreeMap::new();
    let mut size = old_commit;
    let mut smallest = old_commit;
    for transaction in transactions {
        for &(pgno, offset) in &transaction.pages {
            pages.insert(pgno, PageSource::Wal(offset));
            wal_index.insert(pgno, offset);
        }
        size = transaction.commit;
        smallest = smallest.min(size);
    }
    // Pages past the smallest size the database had that exist at the end
    // but were not written in the batch: their content is what SQLite reads
    // for them, the newest frame of the WAL or the database file.
    for pgno in smallest + 1..=size {
        pages.entry(pgno).or_insert_with(|| wal_index.get(&pgno).map_or(PageSource::DbFile, |&o| PageSource::Wal(o)));
    }
    pages.retain(|&pgno, _| pgno <= size);
    WalBatch { transactions: transactions.len() as u64, commit: size, pages }
}

/// Where the bytes of a batch's pages come from while its segments are
/// written.
pub trait ReadPage {
    /// The bytes of `pgno`, which the batch says are at `source`.
    fn read(&mut self, pgno: u32, source: PageSource) -> Result<&[u8]>;
}

/// Pages read into memory beforehand: a checkpoint window's batch (read
/// before the read mark is let go, written after), or a previous WAL's
/// tail (read before the new WAL can grow over it).
pub struct PagesInMemory(pub BTreeMap<u32, Vec<u8>>);

impl ReadPage for PagesInMemory {
    fn read(&mut self, pgno: u32, _source: PageSource) -> Result<&[u8]> {
        self.0.get(&pgno).map(Vec::as_slice).with_context(|| format!("page {pgno} was not read into memory"))
    }
}

/// Reads the bytes of pages named by a batch: from the frames the WAL
/// scan kept when it has them, otherwise by offset from the WAL (opened on
/// first need) or the database file.
pub struct PageReader<'a> {
    wal_path: PathBuf,
    wal: Option<File>,
    db: &'a File,
    frames: wal::FramePages,
    page: Vec<u8>,
    read_from_wal: bool,
}

impl<'a> PageReader<'a> {
    /// A reader of `db_path`'s pages: from `frames` (read by the scan that
    /// validated them), else from its WAL, else from `db`, the database
    /// file the replicator keeps open (see [`crate::source::Source::db_file`]).
    pub fn new(db_path: &Path, db: &'a File, page_size: u32, frames: wal::FramePages) -> PageReader<'a> {
        PageReader {
            wal_path: wal::wal_path(db_path),
            wal: None,
            db,
            frames,
            page: vec![0; page_size as usize],
            read_from_wal: false,
        }
    }

    /// Reads every page of `batch` into memory.
    pub fn read_all(&mut self, batch: &WalBatch) -> Result<PagesInMemory> {
        let mut pages = BTreeMap::new();
        for (&pgno, &source) in &batch.pages {
            pages.insert(pgno, self.read(pgno, source)?.to_vec());
        }
        Ok(PagesInMemory(pages))
    }

    /// Whether a page was read from the WAL by offset (not kept by the
    /// scan): only then can a WAL restarted meanwhile have overwritten what
    /// was read. (A page is read from the database file only when no frame
    /// of the current WAL up to the batch holds it, and a checkpoint copies
    /// into the file only frames up to the held read mark; see
    /// docs/REPLICATE.md.)
    pub fn read_from_wal(&self) -> bool {
        self.read_from_wal
    }

    fn wal(&mut self, pgno: u32) -> Result<&File> {
        if self.wal.is_none() {
            match File::open(&self.wal_path) {
                Ok(file) => self.wal = Some(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    bail!("page {pgno} is in a WAL that does not exist")
                }
                Err(e) => return Err(e).context("open the WAL"),
            }
        }
        Ok(self.wal.as_ref().expect("opened above"))
    }
}

impl ReadPage for PageReader<'_> {
    /// The bytes of `pgno` from `source`.
    fn read(&mut self, pgno: u32, source: PageSource) -> Result<&[u8]> {
        use std::os::unix::fs::FileExt;
        match source {
            PageSource::Wal(offset) => {
                if self.frames.get(pgno, offset).is_some() {
                    return Ok(self.frames.get(pgno, offset).expect("checked above"));
                }
                self.read_from_wal = true;
                let mut page = std::mem::take(&mut self.page);
                let read = self.wal(pgno)?.read_exact_at(&mut page, offset).context("read a page from the WAL");
                self.page = page;
                read?;
            }
            PageSource::DbFile => {
                let offset = u64::from(pgno - 1) * self.page.len() as u64;
                self.page.fill(0);
                // Past the end of the file a page reads as zeros, as in SQLite.
                let mut filled = 0;
                while filled < self.page.len() {
                    match self.db.read_at(&mut self.page[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e).context("read a page from the database file"),
                    }
                }
            }
        }
        Ok(&self.page)
    }
}

/// The page hash map of the captured state, indexed by page number.
pub struct PageHashes {
    hashes: Vec<u64>,
}

impl PageHashes {
    /// From the metadata's map; `None` if any page up to `commit` is missing.
    pub fn from_stored(stored: Vec<Option<u64>>, commit: u32) -> Option<PageHashes> {
        let mut hashes = Vec::with_capacity(commit as usize + 1);
        hashes.push(0); // page numbers start at 1
        for pgno in 1..=commit as usize {
            hashes.push((*stored.get(pgno)?)?);
        }
        Some(PageHashes { hashes })
    }

    /// An empty map (a database of zero pages).
    pub fn empty() -> PageHashes {
        PageHashes { hashes: vec![0] }
    }

    /// The number of pages.
    pub fn page_count(&self) -> u32 {
        (self.hashes.len() - 1) as u32
    }

    /// The hash of page `pgno`, if the database has it.
    pub fn get(&self, pgno: u32) -> Option<u64> {
        self.hashes.get(pgno as usize).copied().filter(|_| pgno >= 1)
    }

    /// The rolling checksum they add up to.
    pub fn checksum(&self) -> Checksum {
        Checksum(self.hashes[1..].iter().fold(0, |acc, h| acc ^ h))
    }

    /// Sets the database size, removing pages past it.
    pub fn resize(&mut self, commit: u32) {
        self.hashes.resize(commit as usize + 1, 0);
    }

    /// Sets the hash of a page within the size.
    pub fn set(&mut self, pgno: u32, hash: u64) {
        self.hashes[pgno as usize] = hash;
    }

    /// Moves the map to the state after a batch: `commit` pages, `changed`
    /// as [`capture_batch`] returned them.
    pub fn apply(&mut self, commit: u32, changed: &[(u32, u64)]) {
        self.resize(commit);
        for &(pgno, hash) in changed {
            self.set(pgno, hash);
        }
    }
}

/// Writes every page of a batch to the segments in `set`. Returns the
/// changed hashes and the new checksum; `hashes` is left as it was, for the
/// caller to update ([`PageHashes::apply`]) once it knows the pages it read
/// were the batch's (a WAL restarted under the reader can overwrite them).
pub fn capture_batch(
    batch: &WalBatch,
    reader: &mut impl ReadPage,
    hashes: &PageHashes,
    mut checksum: Checksum,
    set: &mut SegmentSet,
    targets: &mut [&mut CaptureStore],
) -> Result<(Vec<(u32, u64)>, Checksum)> {
    let old_commit = hashes.page_count();
    // Pages removed by a shrink leave the checksum.
    for pgno in batch.commit + 1..=old_commit {
        checksum = Checksum(checksum.0 ^ hashes.get(pgno).unwrap_or(0));
    }
    let mut changed = Vec::with_capacity(batch.pages.len());
    for (&pgno, &source) in &batch.pages {
        let page = reader.read(pgno, source)?;
        let hash = page_hash(PageNo(pgno), page);
        let old = if pgno <= old_commit { hashes.get(pgno).unwrap_or(0) } else { 0 };
        checksum = Checksum(checksum.0 ^ old ^ hash);
        set.write_page(targets.iter_mut().map(|t| &mut t.codec), pgno, page, true)?;
        changed.push((pgno, hash));
    }
    Ok((changed, checksum))
}
