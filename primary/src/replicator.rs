//! One database's replication: capture from the WAL on a fixed tick,
//! checkpoint by policy, resynchronise when WAL continuity was lost.
//!
//! Capture is synchronous work on local files (it runs on its own thread);
//! uploads are the shippers' ([`crate::shipper`]), so a slow or unreachable
//! store never delays capture, and the WAL stays bounded while the store is
//! down (captured segments wait in the metadata folder instead).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use distributary_core::checksum::page_hash;
use distributary_core::format::{Compression, EncryptionKey, PageCodec};
use distributary_core::store::Store;
use distributary_core::{Checksum, PageNo, TxId};

use crate::capture::{self, PageHashes, PageReader, SegmentKind, SegmentPlan, SegmentSet, Target, fold_transactions};
use crate::generation::StartPlan;
use crate::metrics::Metrics;
use crate::source::{CheckpointMode, Source};
use crate::state::{CaptureState, CaptureUpdate, ReplicaState, StateDir};
use crate::wal::{self, WalPosition};

/// Frames read per capture at most, so one capture's segment stays bounded
/// even after a huge transaction backlog.
const MAX_FRAMES_PER_CAPTURE: u64 = 64 * 1024;

/// Frames a sync point reads into memory under the app's write lock at
/// most (16 MiB of 4 KiB pages); a longer tail is left to the capture before
/// the next sync point.
const TAIL_MAX_FRAMES: u64 = 4096;

/// One store of a database, as configured.
#[derive(Clone)]
pub struct ReplicaSpec {
    /// The store's URL.
    pub url: String,
    /// The opened store.
    pub store: Arc<dyn Store>,
    /// How often captured segments are uploaded.
    pub sync_interval: std::time::Duration,
    /// Seals pages when set.
    pub key: Option<EncryptionKey>,
}

/// Checkpoint policy of a database.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Run a PASSIVE checkpoint once the WAL holds this many frames.
    pub passive_frames: u64,
    /// Run a TRUNCATE checkpoint once the WAL file is larger than this.
    pub truncate_bytes: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        // SQLite's own autocheckpoint threshold, and a size limit well above
        // it that is only reached when the app's readers keep PASSIVE
        // checkpoints from completing.
        CheckpointPolicy { passive_frames: 1_000, truncate_bytes: 64 << 20 }
    }
}

/// How a store starts, decided before capture starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// The metadata has the store's progress and it is in step with capture.
    Resume,
    /// Decided from the store's contents.
    Plan(StartPlan),
}

/// What the metadata folder says before starting.
pub struct Inspection {
    /// The database's page size now.
    pub page_size: u32,
    /// Stores whose progress can be resumed from the metadata (if the key
    /// they were sealed with is still the one configured).
    pub resumable: Vec<ReplicaState>,
}

/// Looks at the database and its metadata to learn which stores need a
/// start plan from their contents.
pub fn inspect(db_path: &Path) -> Result<Inspection> {
    let source = Source::open(db_path)?;
    let (page_size, _) = source.page_geometry()?;
    let state = StateDir::open(db_path)?;
    let capture = state.capture()?;
    let in_step = match capture {
        Some(c) if c.page_size == page_size => PageHashes::from_stored(state.page_hashes()?, c.commit).is_some(),
        _ => false,
    };
    let resumable = if in_step { state.replicas()? } else { Vec::new() };
    Ok(Inspection { page_size, resumable })
}

/// Transactions read from the WAL and folded into one batch, not yet
/// written as segments.
struct ReadBatch {
    batch: capture::WalBatch,
    /// The WAL position after the batch's last commit.
    end: WalPosition,
    /// The pages' bytes, when read into memory (a sync point's tail);
    /// otherwise they are read from the files while the batch is written.
    pages: Option<capture::PagesInMemory>,
    /// Whether the batch reaches the WAL's last commit.
    reached_end: bool,
}

/// The capture side of one database.
pub struct Capturer {
    db_label: String,
    source: Source,
    state: StateDir,
    targets: Vec<Target>,
    shipped: Vec<TxId>,
    hashes: PageHashes,
    capture: CaptureState,
    /// Newest frame of each page in the current WAL up to the cursor.
    wal_index: BTreeMap<u32, u64>,
    policy: CheckpointPolicy,
    metrics: Arc<Metrics>,
    /// The capture position at the last PASSIVE checkpoint that copied the
    /// whole WAL: nothing to checkpoint again until the position moves.
    checkpointed_at: Option<WalPosition>,
    /// Whether the last capture found no new commit (the app is quiet).
    quiet: bool,
    /// `PRAGMA data_version` when last looked at: it moves when the app commits.
    seen_version: Option<i64>,
    /// A sync point's tail was read and the read mark let go, but the tail
    /// was not written (an error): the WAL may have restarted over it, so
    /// the next pass catches up by page hashes.
    catch_up_due: bool,
}

impl Capturer {
    /// Opens the database and brings every store up to the current state:
    /// resumes from the metadata when WAL continuity holds; otherwise (and
    /// for new stores) scans every page once and writes catch-up, genesis or
    /// full segments as each store needs.
    pub fn start(
        db_path: &Path,
        replicas: &[ReplicaSpec],
        starts: &[Start],
        policy: CheckpointPolicy,
        compression: Compression,
        metrics: Arc<Metrics>,
    ) -> Result<Capturer> {
        let db_label = db_path.display().to_string();
        let mut source = Source::open(db_path)?;
        // Start at a sync point: with the WAL fully checkpointed while the
        // replicator was down, the read transaction gets no read mark in it,
        // and the app's next commit could restart the WAL over frames not
        // yet captured. Under the write lock no commit can happen until
        // capture has reached the WAL's end.
        lock_writes(&source, &db_label)?;
        source.begin_read()?;
        let (page_size, _) = source.page_geometry()?;
        let state = StateDir::open(db_path)?;
        let stored = state.capture()?.filter(|c| c.page_size == page_size);
        let hashes = match stored {
            Some(c) => PageHashes::from_stored(state.page_hashes()?, c.commit),
            None => None,
        };
        let stored_replicas = state.replicas()?;

        let mut targets = Vec::with_capacity(replicas.len());
        let mut shipped = Vec::with_capacity(replicas.len());
        let mut first_plans = Vec::with_capacity(replicas.len());
        for (spec, start) in replicas.iter().zip(starts) {
            let pending_dir = state.pending_dir(&spec.url);
            let (generation, captured_txid, shipped_txid, plan) = match (start, hashes.is_some()) {
                (Start::Resume, true) => {
                    let known = stored_replicas
                        .iter()
                        .find(|r| r.url == spec.url)
                        .with_context(|| format!("metadata has no progress for {}", spec.url))?;
                    tracing::debug!(store = %spec.url, captured = %known.captured_txid, shipped = %known.shipped_txid, "resuming");
                    remove_leftovers(&pending_dir, known.captured_txid, known.shipped_txid)?;
                    (known.generation, known.captured_txid, known.shipped_txid, None)
                }
                (Start::Resume, false) => {
                    bail!("cannot resume {}: the metadata's page hashes are incomplete", spec.url)
                }
                (Start::Plan(plan), _) => {
                    // Whatever was pending belongs to a history the store
                    // will not continue.
                    clear_pending(&pending_dir)?;
                    match *plan {
                        StartPlan::NewGeneration(generation) => (
                            generation,
                            TxId(1),
                            TxId::ZERO,
                            Some(SegmentPlan {
                                kind: SegmentKind::Full,
                                genesis: true,
                                min_txid: TxId(1),
                                max_txid: TxId(1),
                                pre_apply_checksum: Checksum::EMPTY,
                            }),
                        ),
                        StartPlan::Continue { generation, last_txid, checksum } => (
                            generation,
                            last_txid.next(),
                            last_txid,
                            Some(SegmentPlan {
                                kind: SegmentKind::Full,
                                genesis: false,
                                min_txid: last_txid.next(),
                                max_txid: last_txid.next(),
                                pre_apply_checksum: checksum,
                            }),
                        ),
                    }
                }
            };
            let codec = PageCodec::new(generation, spec.key.as_ref(), compression)?;
            targets.push(Target { url: spec.url.clone(), generation, captured_txid, pending_dir, codec });
            shipped.push(shipped_txid);
            first_plans.push(plan);
        }

        let capture = stored.unwrap_or(CaptureState { page_size, commit: 0, checksum: Checksum::EMPTY, wal: None });
        let mut capturer = Capturer {
            db_label,
            source,
            state,
            targets,
            shipped,
            hashes: hashes.unwrap_or_else(PageHashes::empty),
            capture,
            wal_index: BTreeMap::new(),
            policy,
            metrics,
            checkpointed_at: None,
            quiet: false,
            seen_version: None,
            catch_up_due: false,
        };
        let in_step = stored.is_some() && capturer.hashes.commit() == capturer.capture.commit;
        let continuous = in_step && capturer.wal_continues()?;
        if continuous && first_plans.iter().all(Option::is_none) {
            capturer.rebuild_wal_index()?;
            capturer.capture_available(usize::MAX)?;
            capturer.unlock_writes()?;
            capturer.publish_progress();
            return Ok(capturer);
        }
        // The catch-up below scans every page at its own sync point.
        capturer.unlock_writes()?;
        if stored.is_some() && !continuous {
            tracing::warn!(db = %capturer.db_label, "WAL continuity was lost while the replicator was stopped: catching up");
            capturer.metrics.record_catch_up();
        }
        // Stores in step get a diff (or nothing, when continuity held); the
        // others their first segment. Without page hashes, every store in
        // step gets every page.
        let plans: Vec<Option<SegmentPlan>> = first_plans
            .into_iter()
            .zip(&capturer.targets)
            .map(|(plan, target)| {
                plan.or_else(|| {
                    (!continuous).then(|| SegmentPlan {
                        kind: if in_step { SegmentKind::Changes } else { SegmentKind::Full },
                        genesis: false,
                        min_txid: target.captured_txid.next(),
                        max_txid: target.captured_txid.next(),
                        pre_apply_checksum: capturer.capture.checksum,
                    })
                })
            })
            .collect();
        capturer.resync(plans, continuous)?;
        Ok(capturer)
    }

    /// Whether the WAL still continues from the captured position.
    fn wal_continues(&self) -> Result<bool> {
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
    fn rebuild_wal_index(&mut self) -> Result<()> {
        self.wal_index.clear();
        let wal_path = wal::wal_path(self.source.db_path());
        let (Some(cursor), Some(header)) = (self.capture.wal, wal::read_header(&wal_path)?) else { return Ok(()) };
        for transaction in wal::read_transactions(&wal_path, &header, header.start(), cursor.frame)? {
            self.wal_index.extend(transaction.pages);
        }
        Ok(())
    }

    /// Scans every page at a fresh snapshot and writes `plans`. With
    /// `continuous`, only stores with a plan get a segment and the capture
    /// state is unchanged; otherwise every in-step store gets the pages that
    /// differ from the hash map.
    fn resync(&mut self, plans: Vec<Option<SegmentPlan>>, continuous: bool) -> Result<()> {
        let wal_path = wal::wal_path(self.source.db_path());
        // A sync point: while no commit can happen, capture what is pending
        // (stores in step only), then move the read snapshot to the end.
        self.lock_writes()?;
        let result = (|| -> Result<Option<WalPosition>> {
            if continuous {
                // Stores about to get their first segment must not get
                // changes before it.
                let include: Vec<bool> = plans.iter().map(Option::is_none).collect();
                self.capture_batches(usize::MAX, &include, |_| {})?;
            }
            self.source.end_read()?;
            self.source.begin_read()?;
            self.wal_index.clear();
            let Some(header) = wal::read_header(&wal_path)? else { return Ok(None) };
            let transactions = wal::read_transactions(&wal_path, &header, header.start(), u64::MAX)?;
            for transaction in &transactions {
                self.wal_index.extend(transaction.pages.iter().copied());
            }
            Ok(Some(transactions.last().map_or(header.start(), |t| t.end)))
        })();
        self.unlock_writes()?;
        let cursor = result?;

        let (page_size, commit) = self.source.page_geometry()?;
        let mut set = SegmentSet::begin(&self.targets, &plans, page_size, commit)?;
        let mut hashes = PageHashes::empty();
        hashes.resize(commit);
        let old = std::mem::replace(&mut self.hashes, PageHashes::empty());
        let targets = &mut self.targets;
        let scanned = self.source.for_each_page(|pgno, page| {
            let hash = page_hash(PageNo(pgno), page);
            let changed = old.get(pgno) != Some(hash) || pgno > old.commit();
            set.write_page(targets, pgno, page, changed)?;
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
        set.finish_kept(checksum, &keep)?;

        for ((target, plan), kept) in self.targets.iter_mut().zip(&plans).zip(&keep) {
            if let (Some(plan), true) = (plan, kept) {
                target.captured_txid = plan.max_txid;
            }
        }
        let all: Vec<(u32, u64)> = (1..=commit).map(|p| (p, hashes.get(p).unwrap_or(0))).collect();
        self.capture = CaptureState { page_size, commit, checksum, wal: cursor };
        self.hashes = hashes;
        self.commit_state(&all, true)?;
        self.publish_progress();
        Ok(())
    }

    /// Captures everything committed since the last pass, up to the WAL's
    /// end as the pass finds it, in batches of at most
    /// [`MAX_FRAMES_PER_CAPTURE`] frames, calling `after_batch` after each.
    /// Returns how many transactions there were; a pass that finds none
    /// marks the app as quiet.
    pub fn capture_pass(&mut self, mut after_batch: impl FnMut(&Capturer)) -> Result<u64> {
        // First: once the file is replaced, the old connections' queries
        // can fail ("file is not a database").
        if self.source.replaced()? {
            self.follow_replaced_file()?;
        }
        // Commits after this reading are seen by `has_new_commits`.
        self.seen_version = Some(self.source.data_version()?);
        if self.catch_up_due {
            tracing::warn!(db = %self.db_label, "a sync point's tail was not written: catching up by page hashes");
            self.catch_up()?;
            self.catch_up_due = false;
        }
        let include = vec![true; self.targets.len()];
        let total = self.capture_batches(usize::MAX, &include, &mut after_batch)?;
        self.quiet = total == 0;
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

    fn capture_available(&mut self, max_batches: usize) -> Result<u64> {
        let include = vec![true; self.targets.len()];
        self.capture_batches(max_batches, &include, |_| {})
    }

    /// Captures what is committed now, in batches (at most `max_batches`),
    /// calling `after_batch` after each. It stops at the end of the WAL as
    /// the last batch found it: chasing an app that commits continuously
    /// would write one small segment after another (hundreds a second) and
    /// never end.
    fn capture_batches(
        &mut self,
        max_batches: usize,
        include: &[bool],
        mut after_batch: impl FnMut(&Capturer),
    ) -> Result<u64> {
        let mut total = 0;
        for _ in 0..max_batches.max(1) {
            let (captured, more) = self.capture_batch(include)?;
            if captured > 0 {
                total += captured;
                after_batch(self);
            }
            if captured == 0 || !more {
                break;
            }
        }
        Ok(total)
    }

    /// Captures one batch: how many transactions, and whether more were
    /// committed than one batch holds.
    fn capture_batch(&mut self, include: &[bool]) -> Result<(u64, bool)> {
        match self.read_batch(MAX_FRAMES_PER_CAPTURE, false)? {
            Some(read) => {
                let more = !read.reached_end;
                Ok((self.write_batch(read, include)?, more))
            }
            None => Ok((0, false)),
        }
    }

    /// Reads the next run of committed transactions from the WAL (at most
    /// `max_frames` frames) and folds them into one batch; with
    /// `in_memory`, reads their pages too. `None` if nothing new was
    /// committed. The capture state moves only when the batch is written.
    fn read_batch(&mut self, max_frames: u64, in_memory: bool) -> Result<Option<ReadBatch>> {
        let wal_path = wal::wal_path(self.source.db_path());
        let Some(header) = wal::read_header(&wal_path)? else { return Ok(None) };
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
            // The WAL restarted. While the read transaction is held that can
            // only happen after every frame of the previous WAL was captured
            // and checkpointed (see source.rs), so the new WAL continues it.
            _ => {
                self.wal_index.clear();
                header.start()
            }
        };
        let mut scan = wal::scan_transactions(&wal_path, &header, cursor, max_frames)?;
        if scan.transactions.is_empty() && scan.at_limit {
            if in_memory {
                // A transaction longer than the limit: not for a sync point.
                let batch = capture::WalBatch { transactions: 0, commit: self.capture.commit, pages: BTreeMap::new() };
                return Ok(Some(ReadBatch { batch, end: cursor, pages: None, reached_end: false }));
            }
            // Read it whole: only its page offsets are kept in memory.
            scan = wal::scan_transactions(&wal_path, &header, cursor, u64::MAX)?;
        }
        if self.source.path_moved()? {
            // The WAL at the path may be another database's: the next pass
            // follows the replaced file (or waits for it to appear).
            return Ok(None);
        }
        let wal::Scan { transactions, at_limit } = scan;
        let Some(last) = transactions.last() else {
            if self.capture.wal != Some(cursor) && cursor.frame == 0 {
                // Remember the new WAL even before it has a commit.
                self.capture.wal = Some(cursor);
            }
            return Ok(None);
        };
        let end = last.end;
        let batch = fold_transactions(&transactions, self.capture.commit, &mut self.wal_index);
        let pages = if in_memory {
            let mut reader = PageReader::open(self.source.db_path(), self.source.db_file(), self.capture.page_size)?;
            Some(reader.read_all(&batch)?)
        } else {
            None
        };
        Ok(Some(ReadBatch { batch, end, pages, reached_end: !at_limit }))
    }

    /// Writes a batch read by [`Capturer::read_batch`] as one segment per
    /// included store, then records it in the metadata.
    fn write_batch(&mut self, read: ReadBatch, include: &[bool]) -> Result<u64> {
        let ReadBatch { batch, end, pages, .. } = read;
        let _span = tracing::debug_span!("capture", db = %self.db_label, transactions = batch.transactions).entered();
        let plans: Vec<Option<SegmentPlan>> = self
            .targets
            .iter()
            .zip(include)
            .map(|(t, &included)| {
                included.then(|| SegmentPlan {
                    kind: SegmentKind::Changes,
                    genesis: false,
                    min_txid: t.captured_txid.next(),
                    max_txid: TxId(t.captured_txid.0 + batch.transactions),
                    pre_apply_checksum: self.capture.checksum,
                })
            })
            .collect();
        let mut set = SegmentSet::begin(&self.targets, &plans, self.capture.page_size, batch.commit)?;
        let checksum = self.capture.checksum;
        let (changed, checksum) = match pages {
            Some(mut pages) => {
                capture::capture_batch(&batch, &mut pages, &mut self.hashes, checksum, &mut set, &mut self.targets)?
            }
            None => {
                let mut reader =
                    PageReader::open(self.source.db_path(), self.source.db_file(), self.capture.page_size)?;
                capture::capture_batch(&batch, &mut reader, &mut self.hashes, checksum, &mut set, &mut self.targets)?
            }
        };
        set.finish(checksum)?;
        for (target, _) in self.targets.iter_mut().zip(include).filter(|(_, included)| **included) {
            target.captured_txid = TxId(target.captured_txid.0 + batch.transactions);
        }
        self.capture = CaptureState { commit: batch.commit, checksum, wal: Some(end), ..self.capture };
        self.commit_state(&changed, false)?;
        tracing::debug!(db = %self.db_label, transactions = batch.transactions, captured = ?self.captured(), "captured");
        self.publish_progress();
        Ok(batch.transactions)
    }

    fn commit_state(&mut self, hashes: &[(u32, u64)], replace_all: bool) -> Result<()> {
        let replicas: Vec<ReplicaState> = self
            .targets
            .iter()
            .zip(&self.shipped)
            .map(|(t, &shipped)| ReplicaState {
                url: t.url.clone(),
                generation: t.generation,
                captured_txid: t.captured_txid,
                shipped_txid: shipped,
                key_check: Some(t.codec.key_check()),
            })
            .collect();
        self.state.commit_capture(&CaptureUpdate {
            state: self.capture,
            hashes,
            replace_all_hashes: replace_all,
            replicas: &replicas,
        })
    }

    fn publish_progress(&self) {
        let now = distributary_core::clock::now_ms();
        for target in &self.targets {
            self.metrics.update_replica(&self.db_label, &target.url, |status| {
                status.generation = target.generation.to_string();
                if status.captured_txid != target.captured_txid.0 && status.oldest_unshipped_ms.is_none() {
                    status.oldest_unshipped_ms = Some(now);
                }
                status.captured_txid = target.captured_txid.0;
            });
        }
        let wal_bytes = std::fs::metadata(wal::wal_path(self.source.db_path())).map_or(0, |m| m.len());
        self.metrics.set_wal_bytes(&self.db_label, wal_bytes);
    }

    /// Takes the write lock, waiting through busy periods.
    fn lock_writes(&self) -> Result<()> {
        lock_writes(&self.source, &self.db_label)
    }

    /// Releases the write lock, recording how long the app was kept out.
    fn unlock_writes(&self) -> Result<()> {
        if let Some(held) = self.source.unlock_writes()? {
            self.metrics.record_write_lock_hold(held);
        }
        Ok(())
    }

    /// Runs the checkpoint policy: PASSIVE past `passive_frames` frames,
    /// TRUNCATE past `truncate_bytes`, never checkpointing a frame away
    /// before it was captured.
    pub fn maybe_checkpoint(&mut self) -> Result<()> {
        let wal_path = wal::wal_path(self.source.db_path());
        let wal_bytes = || std::fs::metadata(&wal_path).map_or(0, |m| m.len());
        let frames = self.capture.wal.map_or(0, |c| c.frame);
        // Once the app restarts the WAL from its first frame, the file keeps
        // its high-water mark while few frames are in use: a file past the
        // size limit still needs the checkpoint (and the TRUNCATE after it)
        // on a quiet tick, however few frames it holds now. Without this a
        // WAL restarted below `passive_frames` stayed oversized forever.
        let oversized_and_quiet = self.quiet && wal_bytes() > self.policy.truncate_bytes;
        if frames < self.policy.passive_frames && !oversized_and_quiet {
            return Ok(());
        }
        let already_complete = self.checkpointed_at.is_some() && self.checkpointed_at == self.capture.wal;
        let mut version = None;
        if !already_complete {
            let Some(data_version) = self.checkpoint_passive()? else { return Ok(()) };
            self.checkpointed_at = self.capture.wal;
            version = Some(data_version);
        }
        // A complete PASSIVE checkpoint lets the next commit restart the WAL
        // from its start, so the file stops growing; TRUNCATE only gives the
        // space back. It needs no reader on the WAL and takes the write lock
        // itself, so it cannot run inside a sync point: it waits for a quiet
        // tick, and a commit slipping in anyway is detected by the data
        // version and caught up like lost continuity.
        if wal_bytes() <= self.policy.truncate_bytes || !self.quiet {
            return Ok(());
        }
        let version = match version {
            Some(version) => version,
            None => self.source.data_version()?,
        };
        self.source.end_read()?;
        // TRUNCATE holds the write lock itself, for the whole checkpoint.
        let started = std::time::Instant::now();
        let truncate = self.source.checkpoint(CheckpointMode::Truncate);
        self.metrics.record_write_lock_hold(started.elapsed());
        // Hold the WAL before looking: a commit after this is kept by the
        // read transaction, one before it shows in the data version.
        self.source.begin_read()?;
        let raced = self.source.data_version()? != version;
        let truncate = truncate?;
        self.metrics.record_checkpoint(true);
        tracing::info!(db = %self.db_label, busy = truncate.busy, "checkpoint (truncate)");
        if raced {
            tracing::info!(db = %self.db_label, "a commit raced the TRUNCATE checkpoint: catching up by page hashes");
            self.catch_up()?;
        } else if !truncate.busy {
            self.wal_index.clear();
            self.capture.wal = None;
            self.checkpointed_at = None;
            self.commit_state(&[], false)?;
        }
        Ok(())
    }

    /// A PASSIVE checkpoint that completes under steady writes while holding
    /// the app's write lock only for two short sync points:
    ///
    /// 1. sync point: capture to the WAL's end and move the read mark there;
    /// 2. no lock: PASSIVE copies the frames up to that mark while the app
    ///    keeps committing (the mark keeps the checkpoint from reaching
    ///    frames not yet captured, and the WAL from restarting);
    /// 3. sync point: capture what was committed meanwhile, let go of the
    ///    mark, PASSIVE copies that short tail, hold a new mark.
    ///
    /// The WAL is then fully checkpointed, so the app's next commit starts
    /// it again from its first frame and the file stops growing. Returns the
    /// data version at the last sync point (for TRUNCATE's race check) when
    /// the checkpoint completed; `None` when the app kept the write lock or
    /// its readers kept part of the WAL (try again on a later tick).
    fn checkpoint_passive(&mut self) -> Result<Option<i64>> {
        // Capturing first keeps the sync points' own captures short.
        self.capture_available(usize::MAX)?;
        if self.sync_point(|_| Ok(()))?.is_none() {
            return Ok(None);
        }
        let bulk = self.source.checkpoint(CheckpointMode::Passive)?;
        tracing::debug!(db = %self.db_label, log = bulk.log_frames, done = bulk.checkpointed_frames, "checkpoint (passive, up to the read mark)");
        self.capture_available(usize::MAX)?;
        let tail = self.sync_point(|source| {
            let version = source.data_version()?;
            Ok((source.checkpoint(CheckpointMode::Passive)?, version))
        })?;
        let Some((tail, version)) = tail else { return Ok(None) };
        self.metrics.record_checkpoint(false);
        tracing::debug!(db = %self.db_label, busy = tail.busy, log = tail.log_frames, done = tail.checkpointed_frames, "checkpoint (passive)");
        let complete = !tail.busy && tail.log_frames == tail.checkpointed_frames;
        Ok(complete.then_some(version))
    }

    /// Runs `between` at a sync point: with the write lock held (no commit
    /// can happen), read what was committed since the last capture into
    /// memory, let go of the read mark, run `between`, take a new read
    /// mark, release the lock; then write what was read. Nothing under the
    /// lock touches a file but the WAL (read) and what `between` does, so
    /// the app waits for a few frame reads, never for an fsync. `None` if
    /// the app held the write lock past the lock timeout, or if more than
    /// one batch was committed since the last capture (try again later).
    fn sync_point<T>(&mut self, between: impl FnOnce(&Source) -> Result<T>) -> Result<Option<T>> {
        if !self.source.lock_writes()? {
            return Ok(None);
        }
        let result = (|| -> Result<(Option<ReadBatch>, Option<Result<T>>)> {
            let tail = self.read_batch(TAIL_MAX_FRAMES, true)?;
            if tail.as_ref().is_some_and(|t| !t.reached_end) {
                // Too much for one batch: keep the read mark and come back
                // after the next capture (the batch read is dropped: reading
                // moved nothing but the page index, which the next read
                // rebuilds the same).
                return Ok((None, None));
            }
            // From here until the tail is written, the WAL may restart over
            // it: if writing it fails, only a catch-up by page hashes can
            // tell what the store misses.
            self.catch_up_due = tail.is_some();
            self.source.end_read()?;
            let value = between(&self.source);
            // Hold the WAL again before any commit can happen.
            self.source.begin_read()?;
            Ok((tail, Some(value)))
        })();
        self.unlock_writes()?;
        let (tail, value) = result?;
        if let Some(tail) = tail {
            self.write_batch(tail, &vec![true; self.targets.len()])?;
        }
        self.catch_up_due = false;
        value.transpose()
    }

    /// Catches every store up by page hashes: one segment each with every
    /// page that differs from the captured state (nothing if none does).
    fn catch_up(&mut self) -> Result<()> {
        self.metrics.record_catch_up();
        let plans = self.diff_plans();
        self.resync(plans, false)
    }

    fn diff_plans(&self) -> Vec<Option<SegmentPlan>> {
        self.targets
            .iter()
            .map(|t| {
                Some(SegmentPlan {
                    kind: SegmentKind::Changes,
                    genesis: false,
                    min_txid: t.captured_txid.next(),
                    max_txid: t.captured_txid.next(),
                    pre_apply_checksum: self.capture.checksum,
                })
            })
            .collect()
    }

    /// The newest TXID captured for each store (same order as configured).
    pub fn captured(&self) -> Vec<TxId> {
        self.targets.iter().map(|t| t.captured_txid).collect()
    }

    /// The database's path.
    pub fn db_path(&self) -> &Path {
        self.source.db_path()
    }

    /// The pending folders of the stores (same order as configured).
    pub fn pending_dirs(&self) -> Vec<PathBuf> {
        self.targets.iter().map(|t| t.pending_dir.clone()).collect()
    }
}

/// Takes the write lock of `source`, waiting through busy periods.
fn lock_writes(source: &Source, db_label: &str) -> Result<()> {
    for _ in 0..30 {
        if source.lock_writes()? {
            return Ok(());
        }
    }
    bail!("take the write lock of {db_label}: the app held it for over a minute")
}

/// Whether the frame before `cursor` still carries the checksum recorded
/// with it (the WAL was not rewritten with the same salts).
fn frame_checksum_matches(wal_path: &Path, header: &wal::WalHeader, cursor: WalPosition) -> Result<bool> {
    if cursor.frame == 0 {
        return Ok(cursor.checksum == header.checksum);
    }
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(wal_path)?;
    let mut frame_header = [0u8; wal::FRAME_HEADER_SIZE as usize];
    match file.read_exact_at(&mut frame_header, header.frame_offset(cursor.frame - 1)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let word =
        |i: usize| u32::from_be_bytes([frame_header[i], frame_header[i + 1], frame_header[i + 2], frame_header[i + 3]]);
    Ok((word(16), word(20)) == cursor.checksum && word(8) == header.salt1 && word(12) == header.salt2)
}

/// Removes pending files a crash left behind: temp files, segments past
/// what the metadata recorded as captured, and segments the store already
/// holds (a crash between an upload and the removal of its files).
fn remove_leftovers(dir: &Path, captured_txid: TxId, shipped_txid: TxId) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let orphan = name.starts_with('.')
            || name
                .strip_suffix(".seg")
                .and_then(TxId::from_hex)
                .is_some_and(|min_txid| min_txid > captured_txid || min_txid <= shipped_txid);
        if orphan {
            tracing::debug!(file = %entry.path().display(), "removing a leftover of a crash");
            std::fs::remove_file(entry.path()).with_context(|| format!("remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn clear_pending(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("clear {}", dir.display())),
    }
}
