//! Capturing from the WAL: reading committed transactions past the
//! cursor (and, after a restart the replicator did not hold off, the
//! previous WAL's tail, proven whole or caught up), and writing them as
//! each store's next segment.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use distributary_core::TxId;

use super::{MAX_FRAMES_PER_CAPTURE, OLD_TAIL_MAX_FRAMES, Replicator};
use crate::capture::{self, PageReader, SegmentKind, SegmentPlan, SegmentSet, fold_transactions};
use crate::source::Source;
use crate::state::CaptureState;
use crate::wal::{self, WalPosition};

/// A batch whose pages add up to more than this is written to the pending
/// folder instead of memory (a backlog after a long stop, or a huge
/// transaction).
const MEMORY_SEGMENT_BYTES: u64 = 8 << 20;

/// The page bytes a WAL scan keeps in memory (so a capture reads each new
/// frame once), at most; a larger batch reads the rest again by offset.
pub(super) const SCAN_KEEP_BYTES: u64 = MEMORY_SEGMENT_BYTES;

/// Transactions read from the WAL and folded into one batch, not yet
/// written as segments.
pub(super) struct ReadBatch {
    pub(super) batch: capture::WalBatch,
    /// The WAL position after the batch's last commit.
    pub(super) end: WalPosition,
    /// The pages' bytes, when read into memory and proven to be the
    /// batch's (a previous WAL's tail, a checkpoint window's batch);
    /// otherwise they are taken from `frames`, or read from the files,
    /// while the batch is written.
    pub(super) pages: Option<capture::PagesInMemory>,
    /// The frames' pages the scan read and validated (within a budget).
    pub(super) frames: wal::FramePages,
    /// Whether the batch reaches the WAL's last commit.
    pub(super) reached_end: bool,
}

/// What [`Replicator::read_old_tail`] found.
pub(super) enum OldTail {
    /// The previous WAL's tail, provably whole (`None`: nothing after the
    /// cursor).
    Complete(Option<ReadBatch>),
    /// Maybe overwritten in part: catch up by page hashes.
    Unproven,
}

impl Replicator {
    /// Whether the WAL still continues from the captured position.
    pub(super) fn wal_continues(&self) -> Result<bool> {
        let wal_path = wal::wal_path(self.source.db_path());
        let header = wal::read_header(&wal_path)?;
        Ok(match (self.capture.wal, header) {
            (Some(cursor), Some(header)) => {
                header.salt1 == cursor.salt1
                    && header.salt2 == cursor.salt2
                    && header.page_size == self.capture.page_size
                    && frame_checksum_matches(&wal_path, &header, cursor)?
            }
            // Without a WAL on either side nothing tells whether the file
            // changed meanwhile (SQLite does not advance its change counter
            // in WAL mode): compare page hashes. A catch-up that finds no
            // change ships nothing.
            _ => false,
        })
    }

    /// Re-reads the current WAL up to the cursor to know each page's newest frame.
    pub(super) fn rebuild_wal_index(&mut self) -> Result<()> {
        self.wal_index.clear();
        let wal_path = wal::wal_path(self.source.db_path());
        let (Some(cursor), Some(header)) = (self.capture.wal, wal::read_header(&wal_path)?) else { return Ok(()) };
        for transaction in wal::read_transactions(&wal_path, &header, header.start(), cursor.frame)? {
            self.wal_index.extend(transaction.pages);
        }
        Ok(())
    }

    /// Captures everything committed since the last pass, up to the WAL's
    /// end as the pass finds it, in batches of at most
    /// [`MAX_FRAMES_PER_CAPTURE`] frames.
    /// Returns how many transactions there were; a pass that finds none
    /// marks the app as quiet.
    pub fn capture_pass(&mut self) -> Result<u64> {
        // First: once the file is replaced, the old connections' queries
        // can fail ("file is not a database").
        if self.source.replaced()? {
            self.follow_replaced_file()?;
        }
        // Commits after this reading are seen by `has_new_commits`.
        self.seen_version = Some(self.source.data_version()?);
        let include = vec![true; self.stores.len()];
        let total = self.capture_batches(usize::MAX, &include)?;
        self.quiet = total == 0;
        if self.quiet {
            self.quiet_since.get_or_insert_with(std::time::Instant::now);
        }
        Ok(total)
    }

    /// The database file was deleted and created again under the
    /// replicator (some programs do this at start): its connections still
    /// read the old, deleted file. Opens the new one and catches up by page
    /// hashes, so each store continues its chain with the new file's
    /// content as the next TXID; a new page size stops capture with an
    /// error that says to restart (which starts a new generation).
    fn follow_replaced_file(&mut self) -> Result<()> {
        let db_path = self.source.db_path().to_path_buf();
        tracing::warn!(db = %self.db_label, "the database file was replaced (another file is at its path now): catching up by page hashes");
        let mut source = Source::open(&db_path)?;
        source.begin_read()?;
        let (page_size, _) = source.page_geometry()?;
        if page_size != self.capture.page_size {
            bail!(
                "{} was replaced by a database with page size {page_size} (was {}): restart the replicator, \
                 which starts a new generation for it",
                self.db_label,
                self.capture.page_size
            );
        }
        // The old connections (and the old file's descriptor) go: the old
        // file is deleted, so closing them releases no lock of the new one.
        self.source = source;
        self.wal_index.clear();
        self.capture.wal = None;
        self.checkpointed_at = None;
        self.catch_up()
    }

    /// Whether the last capture found nothing new.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Whether the app committed since the last call (one cheap query; the
    /// first call after a start answers yes).
    pub fn has_new_commits(&mut self) -> Result<bool> {
        if self.source.replaced()? {
            return Ok(true); // a pass follows the new file
        }
        let version = self.source.data_version()?;
        Ok(self.seen_version.replace(version) != Some(version))
    }

    pub(super) fn capture_available(&mut self, max_batches: usize) -> Result<u64> {
        let include = vec![true; self.stores.len()];
        self.capture_batches(max_batches, &include)
    }

    /// Captures what is committed now, in batches (at most `max_batches`).
    /// It stops at the end of the WAL as
    /// the last batch found it: chasing an app that commits continuously
    /// would write one small segment after another (hundreds a second) and
    /// never end.
    pub(super) fn capture_batches(&mut self, max_batches: usize, include: &[bool]) -> Result<u64> {
        let mut total = 0;
        for _ in 0..max_batches.max(1) {
            let (captured, more) = self.capture_batch(include)?;
            total += captured;
            if captured == 0 || !more {
                break;
            }
        }
        Ok(total)
    }

    /// Captures one batch: how many transactions, and whether more were
    /// committed than one batch holds.
    fn capture_batch(&mut self, include: &[bool]) -> Result<(u64, bool)> {
        match self.read_batch(MAX_FRAMES_PER_CAPTURE)? {
            Some(read) => {
                let more = !read.reached_end;
                Ok((self.write_batch(read, include)?, more))
            }
            None if self.catch_up_due => {
                self.catch_up()?;
                self.catch_up_due = false;
                Ok((0, false))
            }
            None => Ok((0, false)),
        }
    }

    /// Reads the next run of committed transactions from the WAL (at most
    /// `max_frames` frames) and folds them into one batch. `None` if nothing
    /// new was committed. The capture state moves only when the batch is
    /// written.
    pub(super) fn read_batch(&mut self, max_frames: u64) -> Result<Option<ReadBatch>> {
        if self.catch_up_due {
            return Ok(None); // only the catch-up can tell what the stores miss
        }
        let wal_path = wal::wal_path(self.source.db_path());
        let Some(header) = wal::read_header(&wal_path)? else {
            // An empty WAL file after frames were captured from it: it was
            // cut (`wal_checkpoint(TRUNCATE)`, which can succeed beside a
            // read transaction on read mark 0). Commits past the cursor that
            // the held snapshot includes were copied into the database and
            // cut with the file, and no later frame will show them
            // (regression: the window test stalled, the store a few TXIDs
            // short until the app's next commit). Unless the snapshot ends
            // at the cursor, only a catch-up can tell.
            if let Some(cursor) = self.capture.wal
                && cursor.frame > 0
                && self.source.held_snapshot_end() != Some(cursor)
            {
                tracing::warn!(db = %self.db_label, from_frame = cursor.frame, "the WAL was cut after frames not captured: catching up by page hashes");
                self.catch_up_due = true;
            }
            return Ok(None);
        };
        if header.page_size != self.capture.page_size {
            bail!(
                "the page size of {} changed from {} to {} while replicating",
                self.db_label,
                self.capture.page_size,
                header.page_size
            );
        }
        let cursor = match self.capture.wal {
            Some(cursor) if cursor.salt1 == header.salt1 && cursor.salt2 == header.salt2 => cursor,
            // The WAL restarted after the read mark was let go (a checkpoint
            // window) or while it was read mark 0: the previous WAL's last
            // frames may not be captured yet. They are read first.
            Some(cursor) => match self.read_old_tail(&header, cursor, self.capture.commit)? {
                OldTail::Complete(Some(tail)) => return Ok(Some(tail)),
                OldTail::Complete(None) => {
                    self.wal_index.clear();
                    header.start()
                }
                OldTail::Unproven => {
                    self.catch_up_due = true;
                    return Ok(None);
                }
            },
            None => {
                self.wal_index.clear();
                header.start()
            }
        };
        // Each new frame is read once: the scan validates its checksum and
        // keeps its page for the segments.
        let keep = self.scan_keep_bytes;
        let (mut scan, mut frames) = wal::scan_keeping_pages(&wal_path, &header, cursor, max_frames, keep)?;
        if scan.transactions.is_empty() && scan.at_limit {
            // One transaction longer than the limit: read it whole (pages
            // past the budget are read again by offset).
            (scan, frames) = wal::scan_keeping_pages(&wal_path, &header, cursor, u64::MAX, keep)?;
        }
        if self.source.path_moved()? {
            // The WAL at the path may be another database's: the next pass
            // follows the replaced file (or waits for it to appear).
            return Ok(None);
        }
        let wal::Scan { transactions, at_limit, .. } = scan;
        let Some(last) = transactions.last() else {
            if self.capture.wal != Some(cursor) && cursor.frame == 0 {
                // Remember the new WAL even before it has a commit.
                self.capture.wal = Some(cursor);
            }
            return Ok(None);
        };
        let end = last.end;
        let batch = fold_transactions(&transactions, self.capture.commit, &mut self.wal_index);
        Ok(Some(ReadBatch { batch, end, pages: None, frames, reached_end: !at_limit }))
    }

    /// Reads what the previous WAL (the cursor's) committed after the
    /// cursor, now that a new WAL (`header`) has started over it. Its frames
    /// stay at the end of the file until the new WAL grows that far, so the
    /// tail is read with the pages, validated by the old salts and the
    /// checksum chain, and trusted only when provably whole: the new WAL
    /// had not reached the tail's first frame when the tail was read (it
    /// writes its frames in order from the start, so it cannot have touched
    /// any frame after that one either), the old frames end at a frame
    /// that is not the new WAL's, and the WAL restarted once since the
    /// cursor, not again meanwhile. Anything less is `Unproven`, and the
    /// caller catches up by page hashes instead.
    /// `commit_before` is the database size in pages at the cursor.
    pub(super) fn read_old_tail(
        &mut self,
        header: &wal::WalHeader,
        cursor: WalPosition,
        commit_before: u32,
    ) -> Result<OldTail> {
        // A WAL that restarted under the held read transaction ended where
        // its snapshot ends: the restart needs every frame copied, so the
        // transaction holds read mark 0, begun on a fully copied WAL; and a
        // commit appended after it could never be copied while the
        // transaction is held, so none came before the restart. Captured to
        // that point, nothing of the previous WAL is missing, however far
        // the new one has grown since.
        if self.source.held_snapshot_end() == Some(cursor) {
            self.wal_index.clear();
            return Ok(OldTail::Complete(None));
        }
        let wal_path = wal::wal_path(self.source.db_path());
        let old = wal::WalHeader { salt1: cursor.salt1, salt2: cursor.salt2, ..*header };
        let (scan, frames) = wal::scan_keeping_pages(&wal_path, &old, cursor, OLD_TAIL_MAX_FRAMES, u64::MAX)?;
        // Read after the tail: had the new WAL begun writing the tail's
        // first frame (index `cursor.frame`) before or while the tail was
        // read, that frame's header, written before its page and before any
        // later frame, would carry the new WAL's salts now. One header is
        // read, not the new WAL's frames up to there: the new WAL grows
        // over the tail while this runs, so the proof must be quick.
        // (Regression, crash matrix: a proof one frame short let through a
        // tail whose first frame was being overwritten, read torn as the
        // tail's end: the tail's commits were lost and a replica's B-tree
        // broke.)
        let new_wal_reached_it = wal::read_frame_header(&wal_path, header, cursor.frame)?
            .is_some_and(|frame| frame.salts == (header.salt1, header.salt2));
        // No second read of the tail is needed to prove it stable: the old
        // WAL's last transaction ended before the restart, so only the new
        // WAL writes over the tail, and it writes the tail's first frame
        // first. (A second read doubled the time the new WAL had to reach
        // the tail, and under load it did: a needless catch-up.)
        // Salt-1 grows by one per restart. Two or more restarts since the
        // cursor mean a whole WAL came and went in between: its commits are
        // in no frame left to read (regression: the pipeline test came up
        // TXIDs short with no catch-up logged). Nor may the WAL restart
        // again while the tail is read: a third WAL overwriting the tail
        // would end it at frames this proof cannot tell from older ones.
        let restarts = header.salt1.wrapping_sub(cursor.salt1);
        let restarted_since =
            wal::read_header(&wal_path)?.map(|h| (h.salt1, h.salt2)) != Some((header.salt1, header.salt2));
        // The old frames end at a frame of the new WAL only if it overwrote
        // the tail; a frame of an older WAL is the tail's true end.
        let ended_at_new_wal = matches!(scan.end, Some(wal::LogEnd::Salts(salt1, _)) if salt1 == header.salt1);
        // The end of the file is the tail's end only if the file was not
        // cut meanwhile. The app can cut it: `wal_checkpoint(TRUNCATE)`
        // empties it, and with `journal_size_limit` the new WAL's first
        // commit shortens it to the limit, inside the tail or before it
        // (regression: the soak test's snapshot came out malformed, a
        // tail's commit in no TXID). SQLite ends a log on a frame's
        // boundary, and a limit cuts where it falls. A file cut to zero
        // (and grown again) has lost the cursor's own frame, unless the
        // new WAL has overwritten it since: an old frame found at the
        // cursor proves the file was not cut below it.
        let nothing_at_cursor = scan.stopped_at == cursor.frame;
        let cut = scan.end == Some(wal::LogEnd::EndOfFile)
            && (!scan.ended_on_file_boundary(&old)
                || (nothing_at_cursor && !frame_checksum_matches(&wal_path, &old, cursor)?));
        if restarts != 1
            || restarted_since
            || scan.at_limit
            || new_wal_reached_it
            || ended_at_new_wal
            || cut
            || self.source.path_moved()?
        {
            tracing::warn!(
                db = %self.db_label,
                from_frame = cursor.frame,
                restarts,
                restarted_since,
                tail_too_long = scan.at_limit,
                new_wal_reached_it,
                ended_at_new_wal,
                cut,
                "the WAL restarted and its previous tail could not be read whole: catching up by page hashes"
            );
            return Ok(OldTail::Unproven);
        }
        let Some(last) = scan.transactions.last() else { return Ok(OldTail::Complete(None)) };
        let batch = fold_transactions(&scan.transactions, commit_before, &mut self.wal_index);
        self.wal_index.clear();
        // Every page must come from a frame of the tail: a page the fold
        // takes from an older frame or the database file (the database grew
        // back over it) may have been overwritten since.
        let mut pages = BTreeMap::new();
        for (&pgno, source) in &batch.pages {
            let bytes = match source {
                capture::PageSource::Wal(offset) => frames.get(pgno, *offset),
                capture::PageSource::DbFile => None,
            };
            let Some(bytes) = bytes else {
                tracing::warn!(
                    db = %self.db_label,
                    pgno,
                    "a page of the previous WAL's tail is in none of its frames: catching up by page hashes"
                );
                return Ok(OldTail::Unproven);
            };
            pages.insert(pgno, bytes.to_vec());
        }
        tracing::debug!(db = %self.db_label, transactions = batch.transactions, to = last.end.frame, "read the previous WAL's tail");
        Ok(OldTail::Complete(Some(ReadBatch {
            batch,
            // The next read starts the new WAL.
            end: header.start(),
            pages: Some(capture::PagesInMemory(pages)),
            frames: wal::FramePages::none(),
            reached_end: false,
        })))
    }

    /// Writes a batch read by [`Replicator::read_batch`] as one segment per
    /// included store (in memory unless its pages are many), queues them,
    /// and remembers the capture for the metadata.
    pub(super) fn write_batch(&mut self, read: ReadBatch, include: &[bool]) -> Result<u64> {
        let ReadBatch { batch, end, pages, frames, .. } = read;
        let _span = tracing::debug_span!("capture", db = %self.db_label, transactions = batch.transactions).entered();
        let plans: Vec<Option<SegmentPlan>> = self
            .stores
            .iter()
            .zip(include)
            .map(|(s, &included)| {
                included.then(|| SegmentPlan {
                    kind: SegmentKind::Changes,
                    genesis: false,
                    min_txid: s.target.captured_txid.next(),
                    max_txid: TxId(s.target.captured_txid.0 + batch.transactions),
                    pre_apply_checksum: self.capture.checksum,
                })
            })
            .collect();
        let page_bytes = batch.pages.len() as u64 * u64::from(self.capture.page_size);
        let in_memory = page_bytes <= MEMORY_SEGMENT_BYTES;
        let targets = self.stores.iter().map(|s| &s.target);
        let mut set = SegmentSet::begin(targets, &plans, self.capture.page_size, batch.commit, in_memory)?;
        let checksum = self.capture.checksum;
        let mut targets: Vec<&mut capture::CaptureStore> = self.stores.iter_mut().map(|s| &mut s.target).collect();
        let (changed, checksum) = match pages {
            // Read while provably whole (a checkpoint window's batch, a
            // previous WAL's tail).
            Some(mut pages) => {
                capture::capture_batch(&batch, &mut pages, &self.hashes, checksum, &mut set, &mut targets)?
            }
            None => {
                let mut reader =
                    PageReader::new(self.source.db_path(), self.source.db_file(), self.capture.page_size, frames);
                let captured =
                    capture::capture_batch(&batch, &mut reader, &self.hashes, checksum, &mut set, &mut targets)?;
                if reader.read_from_wal() && !self.wal_not_restarted_since(end)? {
                    set.finish_kept(checksum, &vec![false; plans.len()])?;
                    self.catch_up_due = true;
                    return Ok(0);
                }
                captured
            }
        };
        self.hashes.apply(batch.commit, &changed);
        let finished = set.finish(checksum)?;
        let seq = self.next_seq;
        for ((store, segment), _) in
            self.stores.iter_mut().zip(finished).zip(include).filter(|(_, included)| **included)
        {
            store.target.captured_txid = TxId(store.target.captured_txid.0 + batch.transactions);
            if let Some(segment) = segment {
                store.queue.push(seq, segment);
            }
        }
        self.capture = CaptureState { commit: batch.commit, checksum, wal: Some(end), ..self.capture };
        self.quiet_since = None;
        self.commit_state(&changed, false)?;
        tracing::debug!(db = %self.db_label, transactions = batch.transactions, captured = ?self.captured(), "captured");
        self.publish_progress();
        Ok(batch.transactions)
    }
}

impl Replicator {
    /// Whether the WAL file still begins with the header of `position`'s
    /// WAL. Pages the scan did not keep (past its memory budget, or from
    /// frames before the cursor) are read by their frames' offsets after
    /// the scan that validated those frames, and a read transaction on read
    /// mark 0 (begun
    /// on a WAL the app had copied whole, as after a checkpoint window) does
    /// not keep the app from restarting the WAL meanwhile and overwriting
    /// them. SQLite writes a restarted WAL's header before any of its
    /// frames, so the old header, read after the pages, proves they were
    /// the frames the scan validated; otherwise only a catch-up by page
    /// hashes can tell what the stores miss.
    pub(super) fn wal_not_restarted_since(&self, position: WalPosition) -> Result<bool> {
        let wal_path = wal::wal_path(self.source.db_path());
        let same = wal::read_header(&wal_path)?.is_some_and(|h| (h.salt1, h.salt2) == (position.salt1, position.salt2));
        if !same {
            tracing::warn!(db = %self.db_label, to_frame = position.frame, "the WAL restarted while its frames were read: catching up by page hashes");
        }
        Ok(same)
    }
}

/// Whether the frame before `cursor` still carries the checksum recorded
/// with it (the WAL was not rewritten with the same salts).
fn frame_checksum_matches(wal_path: &Path, header: &wal::WalHeader, cursor: WalPosition) -> Result<bool> {
    if cursor.frame == 0 {
        return Ok(cursor.checksum == header.checksum);
    }
    let Some(frame) = wal::read_frame_header(wal_path, header, cursor.frame - 1)? else { return Ok(false) };
    Ok(frame.checksum == cursor.checksum && frame.salts == (header.salt1, header.salt2))
}
