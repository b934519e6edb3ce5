//! Verifying one object and writing its pages: the checks every reader
//! makes, whatever holds its database. Only the [`PageSink`] differs (a
//! SQLite file through `sqlite_dbpage`, a byte buffer in memory, or page
//! hashes alone). A new file takes its snapshot last instead
//! ([`snapshot_last`]), with the same checks.

mod snapshot_last;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ApplyError;
use crate::format::{Compression, EncryptionKey, FormatError, Header, PageCodec, SegmentReader};
use crate::ids::{Checksum, GenerationId, PageNo, TxId};
use crate::plan::ReplicaPosition;

#[cfg(all(feature = "sqlite", not(target_arch = "wasm32")))]
pub(super) use snapshot_last::{SnapshotWritten, WrittenAhead};

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

    /// The object verified: keep its writes (what they were: `object`).
    fn finish_object(&mut self, object: Verified) -> Result<(), ApplyError>;

    /// The object failed: undo every write since [`PageSink::begin_object`].
    fn rollback_object(&mut self) -> Result<(), ApplyError>;

    /// SQLite's lock-byte page (the page holding byte offset `PENDING_BYTE`,
    /// 1 GiB by default) for this database's page size: it holds no data and
    /// reads as zeros, so it is checked to be zeros, counted in the checksum,
    /// and never written (SQLite refuses writes to it through `sqlite_dbpage`).
    fn lock_byte_page(&self) -> u32;
}

/// What an object verified leaves its sink to keep
/// ([`PageSink::finish_object`]).
#[derive(Debug)]
pub struct Verified {
    /// The database's size in pages now.
    pub commit: u32,
    /// Every page the object wrote, as (page number, its
    /// [`page_hash`](crate::checksum::page_hash)).
    pub written: Vec<(u32, u64)>,
    /// The image of page 1, if the object wrote it.
    pub page_one: Option<Vec<u8>>,
}

/// Writes runs of whole pages at their place, from any thread.
pub trait PagesAt: Sync {
    /// Writes `pages` (whole pages) starting at page `first`.
    fn write_pages_at(&self, first: PageNo, pages: &[u8]) -> Result<(), ApplyError>;
}

/// SQLite's default `PENDING_BYTE`: where its file locks live (1 GiB).
pub(crate) const DEFAULT_PENDING_BYTE: u64 = 0x4000_0000;

/// SQLite's lock-byte page for `page_size` with the default `PENDING_BYTE`
/// (see [`PageSink::lock_byte_page`]): a sink without a SQLite library to
/// ask (SQLite's wasm build keeps the default) puts it where a file has it,
/// so a segment is refused alike everywhere.
pub(crate) fn default_lock_byte_page(page_size: u32) -> u32 {
    (DEFAULT_PENDING_BYTE / u64::from(page_size) + 1) as u32
}

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
                sink.finish_object(Verified { commit: header.commit, written: staged, page_one })?;
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
struct ChecksumStep {
    checksum: Checksum,
    old_size: u32,
    grown: u32,
}

impl ChecksumStep {
    fn new(checksum: Checksum, old_size: u32) -> ChecksumStep {
        ChecksumStep { checksum, old_size, grown: 0 }
    }

    /// Page `pgno` now hashes to `new_hash`; `old_hash` gives its hash
    /// before, asked only for a page within the old size.
    fn page(
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
    fn finish(
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

/// The position of a database before anything is applied (a snapshot
/// replaces whatever it holds).
pub(crate) fn empty_position(generation: GenerationId) -> ReplicaPosition {
    ReplicaPosition { generation, txid: TxId::ZERO, checksum: Checksum::EMPTY, timestamp_ms: 0 }
}
