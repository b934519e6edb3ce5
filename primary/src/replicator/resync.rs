//! Resynchronising by page hashes: a scan of every page at a fresh
//! snapshot, shipped to each store as the pages that differ from what it
//! holds (a catch-up after lost WAL continuity) or as every page (a store
//! that starts).

use anyhow::{Result, bail};
use distributary_core::PageNo;
use distributary_core::checksum::page_hash;

use super::Replicator;
use crate::capture::{PageHashes, SegmentKind, SegmentPlan, SegmentSet};
use crate::state::CaptureState;
use crate::wal::{self, WalPosition};

impl Replicator {
    /// Scans every page at a fresh snapshot and writes `plans`. With
    /// `continuous`, only stores with a plan get a segment and the capture
    /// state is unchanged; otherwise every in-step store gets the pages that
    /// differ from the hash map.
    ///
    /// A catch-up takes no lock: the snapshot says where in the WAL it
    /// ends ([`Source::snapshot_wal_end`]), and capture continues from
    /// there. Only the start's `continuous` case (stores resuming beside
    /// stores that begin) needs a sync point: the resuming stores get what
    /// was committed before the snapshot as changes, the others see it in
    /// the scan, and no commit may fall between the two. The backlog is
    /// captured before the lock is taken, so the lock covers only what the
    /// app committed in the moments between.
    pub(super) fn resync(&mut self, plans: Vec<Option<SegmentPlan>>, continuous: bool) -> Result<()> {
        // Stores about to get their first segment must not get changes
        // before it.
        let include: Vec<bool> = plans.iter().map(Option::is_none).collect();
        if continuous {
            self.capture_batches(usize::MAX, &include)?;
            self.lock_writes()?;
        }
        let result = (|| -> Result<Option<WalPosition>> {
            if continuous {
                self.capture_batches(usize::MAX, &include)?;
            }
            self.source.end_read()?;
            self.source.begin_read()?;
            self.snapshot_cursor()
        })();
        if continuous {
            self.unlock_writes()?;
        }
        let cursor = result?;

        let (page_size, commit) = self.source.page_geometry()?;
        let targets = self.stores.iter().map(|s| &s.target);
        let mut set = SegmentSet::begin(targets, &plans, page_size, commit, false)?;
        let mut hashes = PageHashes::empty();
        hashes.resize(commit);
        let old = std::mem::replace(&mut self.hashes, PageHashes::empty());
        let stores = &mut self.stores;
        let scanned = self.source.for_each_page(|pgno, page| {
            let hash = page_hash(PageNo(pgno), page);
            let changed = old.get(pgno) != Some(hash) || pgno > old.page_count();
            set.write_page(stores.iter_mut().map(|s| &mut s.target.codec), pgno, page, changed)?;
            hashes.set(pgno, hash);
            Ok(())
        })?;
        if scanned != commit {
            bail!("scanned {scanned} pages of {}, expected {commit}", self.db_label);
        }
        let checksum = hashes.checksum();
        // A diff that found nothing changed is dropped: no TXID, no upload.
        let unchanged = checksum == self.capture.checksum && commit == self.capture.commit;
        let keep: Vec<bool> =
            plans.iter().map(|p| p.is_some_and(|p| p.kind == SegmentKind::Full || !unchanged)).collect();
        let finished = set.finish_kept(checksum, &keep)?;
        let seq = self.next_seq;
        for ((store, plan), segment) in self.stores.iter_mut().zip(&plans).zip(finished) {
            if let (Some(plan), Some(segment)) = (plan, segment) {
                store.target.captured_txid = plan.max_txid;
                store.queue.push(seq, segment);
            }
        }
        let all: Vec<(u32, u64)> = (1..=commit).map(|p| (p, hashes.get(p).unwrap_or(0))).collect();
        self.capture = CaptureState { page_size, commit, checksum, wal: cursor };
        self.hashes = hashes;
        self.commit_state(&all, true)?;
        self.publish_progress();
        Ok(())
    }

    /// The WAL position where the read transaction's snapshot ends, with the
    /// page index rebuilt up to it. `None` when the snapshot saw an empty
    /// WAL: any frames in the file then are older than the snapshot (they
    /// were all copied into the database before the WAL was reset), so
    /// reading them again from the start only repeats page images the
    /// snapshot already holds, and ends in the same state.
    pub(super) fn snapshot_cursor(&mut self) -> Result<Option<WalPosition>> {
        self.wal_index.clear();
        let Some(end) = self.source.snapshot_wal_end()? else { return Ok(None) };
        let wal_path = wal::wal_path(self.source.db_path());
        let header = wal::read_header(&wal_path)?;
        let Some(header) = header.filter(|h| (h.salt1, h.salt2) == (end.salt1, end.salt2)) else {
            // The WAL restarted after the snapshot (it was read mark 0: the
            // WAL fully copied, so the snapshot holds all of it). The next
            // read finds the previous WAL's tail empty and moves on.
            return Ok(Some(end));
        };
        let transactions = wal::read_transactions(&wal_path, &header, header.start(), end.frame)?;
        if transactions.last().map(|t| t.end) != Some(end) {
            bail!(
                "the WAL of {} does not hold the frames its snapshot ends at (frame {}): the WAL changed under \
                 the replicator's read transaction",
                self.db_label,
                end.frame
            );
        }
        for transaction in transactions {
            self.wal_index.extend(transaction.pages);
        }
        Ok(Some(end))
    }

    /// Catches every store up by page hashes: one segment each with every
    /// page that differs from the captured state (nothing if none does).
    pub(super) fn catch_up(&mut self) -> Result<()> {
        self.metrics.record_catch_up();
        let plans = self.diff_plans();
        self.resync(plans, false)
    }

    fn diff_plans(&self) -> Vec<Option<SegmentPlan>> {
        self.stores
            .iter()
            .map(|s| {
                Some(SegmentPlan {
                    kind: SegmentKind::Changes,
                    genesis: false,
                    min_txid: s.target.captured_txid.next(),
                    max_txid: s.target.captured_txid.next(),
                    pre_apply_checksum: self.capture.checksum,
                })
            })
            .collect()
    }
}
