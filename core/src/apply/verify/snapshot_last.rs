//! A new file's snapshot written last ([`ObjectApplier::write_snapshot_last`]):
//! the chain after the snapshot is written first ([`ObjectApplier::write_ahead`]),
//! then the snapshot, decoded on every core around the pages the chain
//! wrote, then the chain's checksums replayed from page hashes
//! ([`ObjectApplier::replay`]) exactly as if it had been applied in order.

// The snapshot-written-last path (threads, write-ahead, replay) serves the
// native file writer only; the wasm build has no use for it.
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{
    ChecksumStep, ObjectApplier, PagesAt, check_continuity, check_lock_byte_page, check_post_apply, trailer_of,
};
use crate::apply::ApplyError;
use crate::format::{Header, PageCodec, SegmentReader};
use crate::ids::{Checksum, PageNo, TxId};
use crate::plan::ReplicaPosition;

/// Frames handed to a decoding thread at once: contiguous pages of a
/// snapshot, written with one call.
const FRAMES_PER_BATCH: usize = 64;

impl ObjectApplier {
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
    pub(in crate::apply) fn write_ahead<R: Read, W: FnMut(PageNo, &[u8]) -> Result<(), ApplyError>>(
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
    pub(in crate::apply) fn write_snapshot_last<R: Read>(
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
    pub(in crate::apply) fn replay(
        &mut self,
        written: &WrittenAhead,
        hashes: &mut HashMap<u32, u64>,
    ) -> Result<(), ApplyError> {
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

/// An object of the chain after a snapshot, written ahead of it
/// ([`ObjectApplier::write_ahead`]) and waiting for [`ObjectApplier::replay`].
pub(in crate::apply) struct WrittenAhead {
    pub key: String,
    pub header: Header,
    /// The post-apply checksum its trailer says.
    pub post_apply: Checksum,
    /// Every page it holds, in order, with its [`page_hash`](crate::checksum::page_hash).
    pub pages: Vec<(u32, u64)>,
}

/// What [`ObjectApplier::write_snapshot_last`] leaves for the replay.
pub(in crate::apply) struct SnapshotWritten {
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
