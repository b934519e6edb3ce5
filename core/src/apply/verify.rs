//! Verifying one object and writing its pages: the checks every reader
//! makes, whatever holds its database. Only the [`PageSink`] differs (a
//! SQLite file through `sqlite_dbpage`, or a byte buffer in memory).

// The snapshot-written-last path (threads, write-ahead, replay) serves the
// native file writer only; the wasm build has no use for it.
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::ApplyError;
use crate::format::{Compression, EncryptionKey, FormatError, Header, PageCodec, SegmentReader};
use crate::ids::{Checksum, GenerationId, PageNo, TxId};
use crate::plan::ReplicaPosition;

/// Where an object's pages land. Writes of one object are kept or undone
/// together: between [`PageSink::begin_object`] and either
/// [`PageSink::finish_object`] or [`PageSink::rollback_object`].
pub trait PageSink {
    /// The hash term ([`page_hash`](crate::checksum::page_hash)) of page `pgno` in the state the open
    /// object builds on: every object kept so far, committed or not. Called
    /// only for pages within the database's current size.
    fn page_hash(&mut self, pgno: PageNo) -> Result<u64, ApplyError>;

    /// Starts object `key`, whose header passed the continuity checks.
    /// Refuses it (for example past a size limit) before anything is written.
    fn begin_object(&mut self, key: &str, header: &Header) -> Result<(), ApplyError>;

    /// Writes one page image of the database's page size. Page 1 comes
    /// last in each object, so the database is consistent whenever it changes.
    fn write_page(&mut self, pgno: PageNo, page: &[u8]) -> Result<(), ApplyError>;

    /// The object verified: keep its writes. The database now has
    /// `header.commit` pages; `written` holds the hash of every page written,
    /// `page_one` the image of page 1 if it was written.
    fn finish_object(
        &mut self,
        header: &Header,
        written: Vec<(u32, u64)>,
        page_one: Option<Vec<u8>>,
    ) -> Result<(), ApplyError>;

    /// The object failed: undo every write since [`PageSink::begin_object`].
    fn rollback_object(&mut self) -> Result<(), ApplyError>;

    /// SQLite's lock-byte page (the page holding byte offset `PENDING_BYTE`,
    /// 1 GiB by default) for this database's page size: it holds no data and
    /// reads as zeros, so it is checked to be zeros, counted in the checksum,
    /// and never written (SQLite refuses writes to it through `sqlite_dbpage`).
    fn lock_byte_page(&self) -> u32;
}

/// Writes runs of whole pages at their place, from any thread.
pub trait PagesAt: Sync {
    /// Writes `pages` (whole pages) starting at page `first`.
    fn write_pages_at(&self, first: PageNo, pages: &[u8]) -> Result<(), ApplyError>;
}

/// Frames handed to a decoding thread at once: contiguous pages of a
/// snapshot, written with one call.
const FRAMES_PER_BATCH: usize = 64;

/// SQLite's default `PENDING_BYTE`: where its file locks live (1 GiB).
pub(crate) const DEFAULT_PENDING_BYTE: u64 = 0x4000_0000;

/// Applies a chain's objects one after another to a [`PageSink`], tracking
/// the position (TXID, rolling checksum) and size the sink's database has.
pub struct ObjectApplier {
    codec: PageCodec,
    page_size: u32,
    position: ReplicaPosition,
    size: u32,
    /// Counts every page written, as it is written (for progress reports).
    pages_written: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for ObjectApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectApplier")
            .field("page_size", &self.page_size)
            .field("position", &self.position)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ObjectApplier {
    /// An applier for a database of `size` pages of `page_size` bytes at
    /// `position` (TXID zero with the empty checksum before a snapshot),
    /// opening objects of `generation` with `key`.
    pub fn new(
        generation: GenerationId,
        key: Option<&EncryptionKey>,
        page_size: u32,
        position: ReplicaPosition,
        size: u32,
    ) -> Result<ObjectApplier, ApplyError> {
        let codec = PageCodec::new(generation, key, Compression::default())?;
        Ok(ObjectApplier { codec, page_size, position, size, pages_written: None })
    }

    /// Adds one to `counter` for every page written from now on.
    pub fn count_pages_in(&mut self, counter: Arc<AtomicU64>) {
        self.pages_written = Some(counter);
    }

    /// The position after every object applied so far.
    pub fn position(&self) -> ReplicaPosition {
        self.position
    }

    /// The database's size in pages at [`ObjectApplier::position`].
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The page size in bytes.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Verifies object `key` read from `body` and writes it to `sink`;
    /// returns whether it was a snapshot. On error nothing of it is kept
    /// (the sink rolled it back) and the position is unchanged.
    pub fn apply_object<S: PageSink + ?Sized, R: Read>(
        &mut self,
        sink: &mut S,
        key: &str,
        body: R,
    ) -> Result<bool, ApplyError> {
        let mut reader = SegmentReader::open(key, body)?;
        let header = reader.header().clone();
        self.check_continuity(key, &header)?;
        sink.begin_object(key, &header)?;
        let mut staged = Vec::new();
        let mut page_one = None;
        match self.write_object(sink, key, &header, &mut reader, &mut staged, &mut page_one) {
            Ok(checksum) => {
                sink.finish_object(&header, staged, page_one)?;
                self.reached(&header, checksum);
                Ok(header.flags.snapshot())
            }
            Err(error) => {
                sink.rollback_object()?;
                Err(error)
            }
        }
    }

    /// Checks that `header` continues the position: same generation and
    /// page size, contiguous TXIDs, matching pre-apply checksum (snapshots
    /// replace everything and need none of that but the generation).
    fn check_continuity(&self, key: &str, header: &Header) -> Result<(), ApplyError> {
        check_continuity(self.position, self.page_size, key, header, true)
    }

    /// The object `header` was applied, bringing the database to `checksum`.
    fn reached(&mut self, header: &Header, checksum: Checksum) {
        self.size = header.commit;
        self.position = ReplicaPosition {
            generation: header.generation,
            txid: header.max_txid,
            checksum,
            timestamp_ms: header.timestamp_ms,
        };
    }

    /// Writes the object's pages, page 1 last, and returns the post-apply
    /// checksum once it matched the trailer's.
    fn write_object<S: PageSink + ?Sized, R: Read>(
        &mut self,
        sink: &mut S,
        key: &str,
        header: &Header,
        reader: &mut SegmentReader<R>,
        staged: &mut Vec<(u32, u64)>,
        written_page_one: &mut Option<Vec<u8>>,
    ) -> Result<Checksum, ApplyError> {
        let snapshot = header.flags.snapshot();
        let lock_byte_page = sink.lock_byte_page();
        let old_size = if snapshot { 0 } else { self.size };
        let mut step = ChecksumStep::new(if snapshot { Checksum::EMPTY } else { self.position.checksum }, old_size);
        let mut page = vec![0u8; self.page_size as usize];
        let mut page_one: Option<Vec<u8>> = None;
        while let Some((pgno, new_hash)) = reader.next_page_hashed(&mut self.codec, &mut page)? {
            step.page(pgno, new_hash, || sink.page_hash(pgno))?;
            // Page 1 (the schema's root and the header) goes last, so the
            // database is consistent whenever it changes.
            if pgno.0 == 1 {
                page_one = Some(page.clone());
            } else if pgno.0 == lock_byte_page {
                // Counted (as the zeros it reads as) but never written:
                // SQLite refuses writes to it.
                check_lock_byte_page(key, header, pgno, &page)?;
            } else {
                sink.write_page(pgno, &page)?;
            }
            if let Some(counter) = &self.pages_written {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            staged.push((pgno.0, new_hash));
        }
        let trailer = trailer_of(reader, key)?;
        if let Some(page) = page_one {
            sink.write_page(PageNo(1), &page)?;
            *written_page_one = Some(page);
        }
        let checksum = step.finish(key, header, |pgno| sink.page_hash(pgno))?;
        check_post_apply(key, &trailer, checksum)
    }

    /// A snapshot's pages decoded, hashed and written on every core: this
    /// thread reads the frames (verifying the object's own checksum), and
    /// batches of contiguous pages go to decoding threads that write them
    /// at their place. A snapshot replaces everything, so its checksum is
    /// the XOR of its pages' hashes, whatever order they are done in.
    fn write_snapshot_in_parallel<R: Read>(
        &mut self,
        target: &dyn PagesAt,
        holes: &SnapshotHoles,
        key: &str,
        header: &Header,
        reader: &mut SegmentReader<R>,
    ) -> Result<(Checksum, Option<Vec<u8>>), ApplyError> {
        self.codec.check_key(key, header.key_check)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        let codecs = (0..threads).map(|_| self.codec.fork()).collect::<Result<Vec<_>, _>>()?;
        let failed = AtomicBool::new(false);
        let (send, receive) = std::sync::mpsc::sync_channel::<Vec<crate::format::Frame>>(threads * 2);
        let receive = std::sync::Mutex::new(receive);
        let (read, results) = std::thread::scope(|scope| {
            let workers: Vec<_> = codecs
                .into_iter()
                .map(|codec| {
                    let batch_writer = BatchWriter {
                        codec,
                        target,
                        page_size: self.page_size as usize,
                        holes,
                        key,
                        header,
                        pages_written: self.pages_written.as_deref(),
                    };
                    let (receive, failed) = (&receive, &failed);
                    scope.spawn(move || batch_writer.run(receive, failed))
                })
                .collect();
            let mut batch = Vec::with_capacity(FRAMES_PER_BATCH);
            let read = loop {
                if failed.load(Ordering::Relaxed) {
                    break Ok(());
                }
                match reader.next_frame() {
                    Ok(Some(frame)) => batch.push(frame),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(ApplyError::from(e)),
                }
                if batch.len() == FRAMES_PER_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(FRAMES_PER_BATCH));
                    if send.send(full).is_err() {
                        break Ok(());
                    }
                }
            };
            if !batch.is_empty() && read.is_ok() {
                let _ = send.send(batch);
            }
            drop(send);
            let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
            (read, results)
        });
        read?;
        let (mut checksum, mut page_one) = (Checksum::EMPTY, None);
        for result in results {
            let done =
                result.map_err(|_| ApplyError::Task { op: "decode pages", reason: "a thread panicked".into() })??;
            checksum = Checksum(checksum.0 ^ done.checksum.0);
            page_one = page_one.or(done.page_one);
        }
        let trailer = trailer_of(reader, key)?;
        Ok((check_post_apply(key, &trailer, checksum)?, page_one))
    }

    /// Writes object `key` (after the snapshot) before the state it builds
    /// on is there: a new file takes the chain after its snapshot first and
    /// the snapshot last, so each page is written once and the snapshot's
    /// writes can go to the disk as they are made. The object itself is
    /// verified (its checksum, frames, key and place after `at` by TXID);
    /// its pre- and post-apply checksums are checked by
    /// [`ObjectApplier::replay`] once the snapshot's pages are known.
    /// `write` receives every page but the lock-byte page.
    pub(super) fn write_ahead<R: Read, W: FnMut(PageNo, &[u8]) -> Result<(), ApplyError>>(
        &mut self,
        at: ReplicaPosition,
        lock_byte_page: u32,
        key: &str,
        body: R,
        mut write: W,
    ) -> Result<WrittenAhead, ApplyError> {
        let mut reader = SegmentReader::open(key, body)?;
        let header = reader.header().clone();
        // A full image within the chain (a catch-up) is written like any
        // object: newer pages land over older ones.
        check_continuity(at, self.page_size, key, &header, false)?;
        let mut page = vec![0u8; self.page_size as usize];
        let mut pages = Vec::new();
        while let Some((pgno, hash)) = reader.next_page_hashed(&mut self.codec, &mut page)? {
            pages.push((pgno.0, hash));
            if pgno.0 == lock_byte_page {
                check_lock_byte_page(key, &header, pgno, &page)?;
                continue;
            }
            write(pgno, &page)?;
            if let Some(counter) = &self.pages_written {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        let post_apply = trailer_of(&reader, key)?.post_apply_checksum;
        Ok(WrittenAhead { key: key.to_string(), header, post_apply, pages })
    }

    /// Writes snapshot `key` (at `txid`) from `body` to `target` on every
    /// core around what the chain `written` after it wrote already, and
    /// takes its position: the base [`ObjectApplier::replay`] checks that
    /// chain from.
    pub(super) fn write_snapshot_last<R: Read>(
        &mut self,
        target: &dyn PagesAt,
        written: &[WrittenAhead],
        lock_byte_page: u32,
        key: &str,
        txid: TxId,
        body: R,
    ) -> Result<SnapshotWritten, ApplyError> {
        let mut reader = SegmentReader::open(key, body)?;
        let header = reader.header().clone();
        if !header.flags.snapshot() || header.max_txid != txid {
            return Err(ApplyError::Discontinuous {
                key: key.to_string(),
                range: header.range(),
                reason: format!("expected the snapshot at TXID {txid}"),
            });
        }
        self.check_continuity(key, &header)?;
        let holes = SnapshotHoles::new(written, header.commit, lock_byte_page);
        let (checksum, page_one) = self.write_snapshot_in_parallel(target, &holes, key, &header, &mut reader)?;
        self.reached(&header, checksum);
        Ok(SnapshotWritten { page_one, hashes: holes.into_hashes() })
    }

    /// Checks object `written` (written ahead of the snapshot) against the
    /// position as if it had been applied in order: its pre-apply checksum,
    /// then the post-apply checksum its pages make. `hashes` holds the hash
    /// of every page it may replace or drop, and is brought up to date.
    pub(super) fn replay(&mut self, written: &WrittenAhead, hashes: &mut HashMap<u32, u64>) -> Result<(), ApplyError> {
        let (key, header) = (written.key.as_str(), &written.header);
        self.check_continuity(key, header)?;
        let missing = |pgno: PageNo| ApplyError::Task {
            op: "check the chain",
            reason: format!("{key}: no hash of page {pgno}, which it replaces"),
        };
        let mut step = if header.flags.snapshot() {
            // A full image replaces everything before it.
            hashes.clear();
            ChecksumStep::new(Checksum::EMPTY, 0)
        } else {
            ChecksumStep::new(self.position.checksum, self.size)
        };
        for &(pgno, new_hash) in &written.pages {
            let old = hashes.insert(pgno, new_hash);
            step.page(PageNo(pgno), new_hash, || old.ok_or_else(|| missing(PageNo(pgno))))?;
        }
        let checksum = step.finish(key, header, |pgno| hashes.remove(&pgno.0).ok_or_else(|| missing(pgno)))?;
        if checksum != written.post_apply {
            return Err(ApplyError::PostChecksum {
                key: key.to_string(),
                expected: written.post_apply,
                computed: checksum,
            });
        }
        self.reached(header, checksum);
        Ok(())
    }
}

/// Checks that `header` continues `at`: same generation and page size,
/// contiguous TXIDs and, if `with_checksum`, the pre-apply checksum
/// (snapshots replace everything and need none of that but the generation).
pub(crate) fn check_continuity(
    at: ReplicaPosition,
    page_size: u32,
    key: &str,
    header: &Header,
    with_checksum: bool,
) -> Result<(), ApplyError> {
    let range = header.range();
    let discontinuous = |reason: String| ApplyError::Discontinuous { key: key.to_string(), range, reason };
    if header.generation != at.generation {
        return Err(discontinuous(format!(
            "belongs to generation {}, the replica follows {}",
            header.generation, at.generation
        )));
    }
    if header.page_size != page_size {
        return Err(discontinuous(format!("page size {} != the replica's {}", header.page_size, page_size)));
    }
    if header.commit == 0 {
        return Err(discontinuous("commit is 0 pages: a SQLite database has at least one".into()));
    }
    if !header.flags.snapshot() {
        let txid = at.txid;
        if header.min_txid.0 > txid.0 + 1 {
            return Err(discontinuous(format!("the replica is at TXID {txid}: TXIDs after it are missing")));
        }
        if header.max_txid <= txid {
            return Err(discontinuous(format!("the replica is already at TXID {txid}")));
        }
        if with_checksum && header.min_txid.0 == txid.0 + 1 && header.pre_apply_checksum != at.checksum {
            return Err(discontinuous(format!(
                "pre-apply checksum {} != the replica's {} at TXID {txid}",
                header.pre_apply_checksum, at.checksum
            )));
        }
    }
    Ok(())
}

/// The rolling checksum carried through one object that changes pages of
/// a database of `old_size` pages (a snapshot starts from nothing): each
/// page's old hash is replaced by its new one, pages past the old size are
/// added, and pages cut off at the end are removed.
pub(super) struct ChecksumStep {
    checksum: Checksum,
    old_size: u32,
    grown: u32,
}

impl ChecksumStep {
    pub(super) fn new(checksum: Checksum, old_size: u32) -> ChecksumStep {
        ChecksumStep { checksum, old_size, grown: 0 }
    }

    /// Page `pgno` now hashes to `new_hash`; `old_hash` gives its hash
    /// before, asked only for a page within the old size.
    pub(super) fn page(
        &mut self,
        pgno: PageNo,
        new_hash: u64,
        old_hash: impl FnOnce() -> Result<u64, ApplyError>,
    ) -> Result<(), ApplyError> {
        if pgno.0 <= self.old_size {
            self.checksum = self.checksum.replace_hash(old_hash()?, new_hash);
        } else {
            self.grown += 1;
            self.checksum = Checksum(self.checksum.0 ^ new_hash);
        }
        Ok(())
    }

    /// The checksum once object `key` (`header`) is whole: pages past its
    /// size are removed (`dropped_hash` gives their hashes), and a database
    /// that grew must have received every new page.
    pub(super) fn finish(
        mut self,
        key: &str,
        header: &Header,
        mut dropped_hash: impl FnMut(PageNo) -> Result<u64, ApplyError>,
    ) -> Result<Checksum, ApplyError> {
        let old_size = self.old_size;
        if header.commit < old_size {
            for pgno in header.commit + 1..=old_size {
                self.checksum = Checksum(self.checksum.0 ^ dropped_hash(PageNo(pgno))?);
            }
        } else if !header.flags.snapshot() && self.grown != header.commit - old_size {
            return Err(ApplyError::Discontinuous {
                key: key.to_string(),
                range: header.range(),
                reason: format!(
                    "the database grows from {old_size} to {} pages but the segment holds {} of the new pages",
                    header.commit, self.grown
                ),
            });
        }
        Ok(self.checksum)
    }
}

/// The lock-byte page `pgno` of object `key` holds nothing, as it must.
fn check_lock_byte_page(key: &str, header: &Header, pgno: PageNo, page: &[u8]) -> Result<(), ApplyError> {
    if page.iter().any(|&b| b != 0) {
        return Err(ApplyError::Discontinuous {
            key: key.to_string(),
            range: header.range(),
            reason: format!(
                "page {} is SQLite's lock-byte page, which holds no data, but the segment has bytes in it",
                pgno.0
            ),
        });
    }
    Ok(())
}

/// The trailer of a segment whose frames were all read.
fn trailer_of<R: Read>(reader: &SegmentReader<R>, key: &str) -> Result<crate::format::Trailer, ApplyError> {
    let trailer = reader.trailer().ok_or_else(|| FormatError::Truncated {
        object: key.to_string(),
        offset: 0,
        expected: "the trailer",
    })?;
    Ok(*trailer)
}

/// `checksum`, if it is the post-apply checksum the trailer says.
fn check_post_apply(key: &str, trailer: &crate::format::Trailer, checksum: Checksum) -> Result<Checksum, ApplyError> {
    if checksum != trailer.post_apply_checksum {
        return Err(ApplyError::PostChecksum {
            key: key.to_string(),
            expected: trailer.post_apply_checksum,
            computed: checksum,
        });
    }
    Ok(checksum)
}

/// An object of the chain after a snapshot, written ahead of it
/// ([`ObjectApplier::write_ahead`]) and waiting for [`ObjectApplier::replay`].
pub(super) struct WrittenAhead {
    pub key: String,
    pub header: Header,
    /// The post-apply checksum its trailer says.
    pub post_apply: Checksum,
    /// Every page it holds, in order, with its [`page_hash`](crate::checksum::page_hash).
    pub pages: Vec<(u32, u64)>,
}

/// What [`ObjectApplier::write_snapshot_last`] leaves for the replay.
pub(super) struct SnapshotWritten {
    /// The snapshot's page 1, if it wrote it (the chain did not).
    pub page_one: Option<Vec<u8>>,
    /// The snapshot's hash of every page the chain replaces or drops.
    pub hashes: HashMap<u32, u64>,
}

/// What a snapshot written last leaves alone, and what it reports.
struct SnapshotHoles {
    /// SQLite's lock-byte page: checked to be zeros, never written.
    lock_byte_page: u32,
    /// Pages past the database's final size: not written.
    final_size: u32,
    /// Pages whose hash the chain's replay needs, in increasing order,
    /// each with whether the chain wrote it (then the snapshot must not).
    wanted: Vec<(u32, bool)>,
    /// `hashes[i]`: the snapshot's hash of page `wanted[i]`, once written.
    hashes: Vec<AtomicU64>,
}

impl SnapshotHoles {
    /// Holes for the chain `written` ahead of a snapshot of `snapshot_size`
    /// pages: every page it wrote, plus every page an object of it drops
    /// by shrinking the database (the replay takes those hashes out).
    fn new(written: &[WrittenAhead], snapshot_size: u32, lock_byte_page: u32) -> SnapshotHoles {
        let mut wanted: HashMap<u32, bool> = HashMap::new();
        let mut size = snapshot_size;
        for object in written {
            for &(pgno, _) in &object.pages {
                wanted.insert(pgno, true);
            }
            for pgno in object.header.commit + 1..=size {
                wanted.entry(pgno).or_insert(false);
            }
            size = object.header.commit;
        }
        let wanted: Vec<(u32, bool)> = wanted.into_iter().filter(|&(pgno, _)| pgno <= snapshot_size).collect();
        let wanted = crate::order::sorted_by_key(wanted, |&(pgno, _)| u128::from(pgno));
        let hashes = wanted.iter().map(|_| AtomicU64::new(0)).collect();
        SnapshotHoles { lock_byte_page, final_size: size, wanted, hashes }
    }

    /// Whether the snapshot writes page `pgno` (whose hash is `hash`),
    /// noting the hash if the replay wants it.
    fn note(&self, pgno: u32, hash: u64) -> bool {
        if let Ok(i) = self.wanted.binary_search_by_key(&pgno, |&(p, _)| p) {
            self.hashes[i].store(hash, Ordering::Relaxed);
            if self.wanted[i].1 {
                return false;
            }
        }
        pgno <= self.final_size && pgno != self.lock_byte_page
    }

    /// The snapshot's hashes of the wanted pages, for the replay.
    fn into_hashes(self) -> HashMap<u32, u64> {
        self.wanted.into_iter().map(|(pgno, _)| pgno).zip(self.hashes.into_iter().map(AtomicU64::into_inner)).collect()
    }
}

/// One decoding thread of [`ObjectApplier::write_snapshot_in_parallel`].
struct BatchWriter<'a> {
    codec: PageCodec,
    target: &'a dyn PagesAt,
    page_size: usize,
    holes: &'a SnapshotHoles,
    key: &'a str,
    header: &'a Header,
    pages_written: Option<&'a AtomicU64>,
}

/// What one decoding thread did: the XOR of its pages' hashes, and page 1
/// if it had it.
struct BatchesDone {
    checksum: Checksum,
    page_one: Option<Vec<u8>>,
}

impl BatchWriter<'_> {
    /// Takes batches until there are none; on the first error, says so in
    /// `failed` and keeps taking them (dropping them) so the reader never
    /// waits on a full channel.
    fn run(
        mut self,
        batches: &std::sync::Mutex<std::sync::mpsc::Receiver<Vec<crate::format::Frame>>>,
        failed: &AtomicBool,
    ) -> Result<BatchesDone, ApplyError> {
        let mut done = BatchesDone { checksum: Checksum::EMPTY, page_one: None };
        let mut pages = vec![0u8; self.page_size * FRAMES_PER_BATCH];
        let mut outcome = Ok(());
        loop {
            let next = batches.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(batch) = next else { break };
            if outcome.is_ok() {
                outcome = self.write_batch(&batch, &mut pages, &mut done);
                if outcome.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
            }
        }
        outcome.map(|()| done)
    }

    fn write_batch(
        &mut self,
        batch: &[crate::format::Frame],
        pages: &mut [u8],
        done: &mut BatchesDone,
    ) -> Result<(), ApplyError> {
        let size = self.page_size;
        // Runs of consecutive pages the snapshot writes, each with one call.
        let mut run: Option<(PageNo, usize)> = None;
        for (i, frame) in batch.iter().enumerate() {
            let page = &mut pages[i * size..(i + 1) * size];
            let hash = self.codec.decode_page(self.key, frame.pgno, &frame.payload, page)?;
            done.checksum = Checksum(done.checksum.0 ^ hash);
            if frame.pgno.0 == self.holes.lock_byte_page {
                check_lock_byte_page(self.key, self.header, frame.pgno, page)?;
            }
            let writes = self.holes.note(frame.pgno.0, hash);
            if writes && frame.pgno.0 == 1 {
                done.page_one = Some(page.to_vec());
            }
            let continues = run.is_some_and(|(first, start)| first.0 + (i - start) as u32 == frame.pgno.0);
            if (!writes || !continues)
                && let Some((first, start)) = run.take()
            {
                self.target.write_pages_at(first, &pages[start * size..i * size])?;
            }
            if writes && run.is_none() {
                run = Some((frame.pgno, i));
            }
        }
        if let Some((first, start)) = run {
            self.target.write_pages_at(first, &pages[start * size..batch.len() * size])?;
        }
        if let Some(counter) = self.pages_written {
            counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A [`PageSink`] that keeps only the hash of each page, not its bytes:
/// replaying a chain through it with an [`ObjectApplier`] recomputes every
/// object's post-apply checksum from its pages in 8 bytes of memory per page
/// (`distributary verify --deep`). Nothing is written anywhere.
#[derive(Debug, Clone)]
pub struct PageHashes {
    page_size: u32,
    /// `hashes[p - 1]` is page `p`'s [`page_hash`](crate::checksum::page_hash) in the state kept so far.
    hashes: Vec<u64>,
}

impl PageHashes {
    /// An empty database of `page_size`-byte pages (the base of a snapshot).
    pub fn new(page_size: u32) -> PageHashes {
        PageHashes { page_size, hashes: Vec::new() }
    }
}

impl PageSink for PageHashes {
    fn page_hash(&mut self, pgno: PageNo) -> Result<u64, ApplyError> {
        // The applier asks only for pages within the current size.
        (pgno.0 as usize).checked_sub(1).and_then(|i| self.hashes.get(i)).copied().ok_or_else(|| ApplyError::Task {
            op: "hash pages",
            reason: format!("page {pgno} is past the database's {} pages", self.hashes.len()),
        })
    }

    fn begin_object(&mut self, _: &str, _: &Header) -> Result<(), ApplyError> {
        Ok(())
    }

    fn write_page(&mut self, _: PageNo, _: &[u8]) -> Result<(), ApplyError> {
        // The hashes arrive with `finish_object`: until then the state the
        // object builds on is unchanged, which is what `page_hash` must see.
        Ok(())
    }

    fn finish_object(
        &mut self,
        header: &Header,
        written: Vec<(u32, u64)>,
        _: Option<Vec<u8>>,
    ) -> Result<(), ApplyError> {
        // Pages past the old size are all in `written` (the applier checked).
        self.hashes.resize(header.commit as usize, 0);
        for (pgno, hash) in written {
            if let Some(slot) = (pgno as usize).checked_sub(1).and_then(|i| self.hashes.get_mut(i)) {
                *slot = hash;
            }
        }
        Ok(())
    }

    fn rollback_object(&mut self) -> Result<(), ApplyError> {
        Ok(())
    }

    fn lock_byte_page(&self) -> u32 {
        (DEFAULT_PENDING_BYTE / u64::from(self.page_size) + 1) as u32
    }
}

/// The position of a database before anything is applied (a snapshot
/// replaces whatever it holds).
pub(crate) fn empty_position(generation: GenerationId) -> ReplicaPosition {
    ReplicaPosition { generation, txid: TxId::ZERO, checksum: Checksum::EMPTY, timestamp_ms: 0 }
}
