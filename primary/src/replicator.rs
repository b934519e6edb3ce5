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

/// Frames of a previous WAL's tail read into memory at most (16 MiB of
/// 4 KiB pages); a longer tail is caught up by page hashes instead. The
/// tail is what the app committed during a checkpoint window, a few
/// milliseconds of writes.
const OLD_TAIL_MAX_FRAMES: u64 = 4096;

/// How long a checkpoint window waits for the app to restart the WAL.
const RESTART_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// How often a checkpoint window looks at the WAL's header meanwhile: the
/// previous WAL's tail must be read before the new WAL grows over it.
const RESTART_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// How often a checkpoint window runs PASSIVE again, for an app that does
/// not checkpoint itself (`wal_autocheckpoint=0`).
const WINDOW_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

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
    /// ... and the app has committed nothing for this long: TRUNCATE runs
    /// under the app's write lock, so it waits for the app to be idle, not
    /// merely between two statements (a long VACUUM makes a capture pass
    /// find nothing new).
    pub truncate_after_quiet: std::time::Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        // SQLite's own autocheckpoint threshold, and a size limit well above
        // it that is only reached when the app's readers keep PASSIVE
        // checkpoints from completing.
        CheckpointPolicy {
            passive_frames: 1_000,
            truncate_bytes: 64 << 20,
            truncate_after_quiet: std::time::Duration::from_secs(5),
        }
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
    /// Whether the folder was last written in another boot of the machine
    /// (or does not say): writes to it may have been lost, so each store is
    /// checked before it resumes (`crate::resume`).
    pub other_boot: bool,
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
    let boot = crate::resume::current_boot_id();
    let other_boot = boot.is_none() || state.boot_id()? != boot;
    Ok(Inspection { page_size, resumable, other_boot })
}

/// Transactions read from the WAL and folded into one batch, not yet
/// written as segments.
struct ReadBatch {
    batch: capture::WalBatch,
    /// The WAL position after the batch's last commit.
    end: WalPosition,
    /// The pages' bytes, when read into memory (a previous WAL's tail);
    /// otherwise they are read from the files while the batch is written.
    pages: Option<capture::PagesInMemory>,
    /// Whether the batch reaches the WAL's last commit.
    reached_end: bool,
}

/// What [`Capturer::read_old_tail`] found.
enum OldTail {
    /// The previous WAL's tail, provably whole (`None`: nothing after the
    /// cursor).
    Complete(Option<ReadBatch>),
    /// Maybe overwritten in part: catch up by page hashes.
    Unproven,
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
    /// Since when no capture found a commit (`None`: the last one did).
    quiet_since: Option<std::time::Instant>,
    /// `PRAGMA data_version` when last looked at: it moves when the app commits.
    seen_version: Option<i64>,
    /// The WAL restarted over frames not captured, or a previous WAL's
    /// tail could not be proven whole: the next capture catches up by page
    /// hashes.
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
        // Every store was checked against this boot's folder (`inspect`):
        // from here on, the folder is written in this boot.
        if let Some(boot) = crate::resume::current_boot_id() {
            state.set_boot_id(&boot)?;
        }
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
            // The start captures everything committed before it: the app's
            // next commit is the first after a quiet period, and is captured
            // at once rather than a sync interval later.
            quiet: true,
            quiet_since: Some(std::time::Instant::now()),
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
    ///
    /// A catch-up takes no lock: the snapshot says where in the WAL it
    /// ends ([`Source::snapshot_wal_end`]), and capture continues from
    /// there. Only the start's `continuous` case (stores resuming beside
    /// stores that begin) needs a sync point: the resuming stores get what
    /// was committed before the snapshot as changes, the others see it in
    /// the scan, and no commit may fall between the two.
    fn resync(&mut self, plans: Vec<Option<SegmentPlan>>, continuous: bool) -> Result<()> {
        if continuous {
            self.lock_writes()?;
        }
        let result = (|| -> Result<Option<WalPosition>> {
            if continuous {
                // Stores about to get their first segment must not get
                // changes before it.
                let include: Vec<bool> = plans.iter().map(Option::is_none).collect();
                self.capture_batches(usize::MAX, &include, |_| {})?;
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

    /// The WAL position where the read transaction's snapshot ends, with the
    /// page index rebuilt up to it. `None` when the snapshot saw an empty
    /// WAL: any frames in the file then are older than the snapshot (they
    /// were all copied into the database before the WAL was reset), so
    /// reading them again from the start only repeats page images the
    /// snapshot already holds, and ends in the same state.
    fn snapshot_cursor(&mut self) -> Result<Option<WalPosition>> {
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
        let include = vec![true; self.targets.len()];
        let total = self.capture_batches(usize::MAX, &include, &mut after_batch)?;
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
    fn read_batch(&mut self, max_frames: u64) -> Result<Option<ReadBatch>> {
        if self.catch_up_due {
            return Ok(None); // only the catch-up can tell what the stores miss
        }
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
            // The WAL restarted after the read mark was let go (a checkpoint
            // window) or while it was read mark 0: the previous WAL's last
            // frames may not be captured yet. They are read first.
            Some(cursor) => match self.read_old_tail(&header, cursor)? {
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
        let mut scan = wal::scan_transactions(&wal_path, &header, cursor, max_frames)?;
        if scan.transactions.is_empty() && scan.at_limit {
            // One transaction longer than the limit: read it whole (only its
            // page offsets are kept in memory).
            scan = wal::scan_transactions(&wal_path, &header, cursor, u64::MAX)?;
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
        Ok(Some(ReadBatch { batch, end, pages: None, reached_end: !at_limit }))
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
    fn read_old_tail(&mut self, header: &wal::WalHeader, cursor: WalPosition) -> Result<OldTail> {
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
        let (scan, frames) = wal::scan_keeping_pages(&wal_path, &old, cursor, OLD_TAIL_MAX_FRAMES)?;
        // Read after the tail: had the new WAL been writing the tail's
        // first frame (index `cursor.frame`) while the tail was read, it
        // would hold every frame before it now. (Regression, crash matrix:
        // a limit one frame higher let through a tail whose first frame was
        // being overwritten, read torn as the tail's end: the tail's commits
        // were lost and a replica's B-tree broke.)
        let new_wal = wal::scan_transactions(&wal_path, header, header.start(), cursor.frame)?;
        // And the tail must read the same again: a frame the app was
        // writing when first read (a torn frame reads as the tail's end)
        // has changed since.
        let again = wal::scan_transactions(&wal_path, &old, cursor, OLD_TAIL_MAX_FRAMES)?;
        let unstable = again.end != scan.end
            || again.transactions.len() != scan.transactions.len()
            || again.transactions.last().map(|t| t.end) != scan.transactions.last().map(|t| t.end);
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
        // tail's commit in no TXID). A file cut to zero has lost the
        // cursor's own frame; SQLite ends a log on a frame's boundary, and a
        // limit cuts where it falls.
        let cut = scan.end == Some(wal::LogEnd::EndOfFile)
            && (!scan.ended_on_file_boundary(&old) || !frame_checksum_matches(&wal_path, &old, cursor)?);
        if restarts != 1
            || restarted_since
            || scan.at_limit
            || new_wal.at_limit
            || unstable
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
                new_wal_reached_it = new_wal.at_limit,
                unstable,
                ended_at_new_wal,
                cut,
                "the WAL restarted and its previous tail could not be read whole: catching up by page hashes"
            );
            return Ok(OldTail::Unproven);
        }
        let Some(last) = scan.transactions.last() else { return Ok(OldTail::Complete(None)) };
        let commit_before = self.capture.commit;
        let batch = fold_transactions(&scan.transactions, commit_before, &mut self.wal_index);
        self.wal_index.clear();
        // Every page must come from a frame of the tail: a page the fold
        // takes from an older frame or the database file (the database grew
        // back over it) may have been overwritten since.
        let mut pages = BTreeMap::new();
        for (&pgno, source) in &batch.pages {
            let capture::PageSource::Wal(offset) = source else { return Ok(OldTail::Unproven) };
            let Some(bytes) = frames.get(offset) else { return Ok(OldTail::Unproven) };
            pages.insert(pgno, bytes.clone());
        }
        tracing::debug!(db = %self.db_label, transactions = batch.transactions, to = last.end.frame, "read the previous WAL's tail");
        Ok(OldTail::Complete(Some(ReadBatch {
            batch,
            // The next read starts the new WAL.
            end: header.start(),
            pages: Some(capture::PagesInMemory(pages)),
            reached_end: false,
        })))
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
        self.quiet_since = None;
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
        // The WAL index says how many frames the WAL holds without reading
        // one: this runs on every short tick.
        let frames = match self.source.wal_frames()? {
            Some(frames) => u64::from(frames),
            None => self.capture.wal.map_or(0, |c| c.frame),
        };
        // Once the app restarts the WAL from its first frame, the file keeps
        // its high-water mark while few frames are in use: a file past the
        // size limit still needs the checkpoint (and the TRUNCATE after it)
        // on a quiet tick, however few frames it holds now. Without this a
        // WAL restarted below `passive_frames` stayed oversized forever.
        let idle = self.quiet && self.quiet_since.is_some_and(|t| t.elapsed() >= self.policy.truncate_after_quiet);
        let oversized_and_quiet = idle && wal_bytes() > self.policy.truncate_bytes;
        if frames < self.policy.passive_frames && !oversized_and_quiet {
            return Ok(());
        }
        // A window that completed at this position, with nothing committed
        // since, has nothing to add (a WAL that stays past the threshold
        // because the app is idle).
        let already_complete = self.checkpointed_at.is_some()
            && self.checkpointed_at == self.capture.wal
            && self.capture.wal.is_some_and(|c| c.frame >= frames);
        if !already_complete {
            if !self.checkpoint_window()? {
                return Ok(());
            }
            self.checkpointed_at = self.capture.wal;
        }
        // A complete PASSIVE checkpoint lets the next commit restart the WAL
        // from its start, so the file stops growing; TRUNCATE only gives the
        // space back. It needs no reader on the WAL and takes the write lock
        // itself, so it cannot run inside a sync point: it waits for a quiet
        // tick, and a commit slipping in anyway is detected by the data
        // version and caught up like lost continuity.
        if wal_bytes() <= self.policy.truncate_bytes || !idle {
            return Ok(());
        }
        // A commit after this reading shows in the data version; one
        // before it is captured here.
        let version = self.source.data_version()?;
        self.capture_available(usize::MAX)?;
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

    /// A checkpoint window: lets the app checkpoint and restart its WAL
    /// without ever taking its write lock.
    ///
    /// 1. read what was committed since the last capture into memory (a few
    ///    milliseconds: the app's commits past SQLite's checkpoint threshold
    ///    cost it more until the window opens, so nothing slow goes first);
    /// 2. let go of the read mark, run PASSIVE (it copies every frame: no
    ///    reader of ours is in the way) and wait, up to [`RESTART_WINDOW`],
    ///    for the app's next commit to restart the WAL from its first frame
    ///    (SQLite does that when every frame is copied and no reader holds a
    ///    mark); the app's own autocheckpoint copies what it commits
    ///    meanwhile;
    /// 3. hold a read mark again, write the batch of step 1 as segments, and
    ///    capture at once: what was committed after step 1 is the previous
    ///    WAL's tail, still at the end of the file until the new WAL grows
    ///    that far ([`Capturer::read_old_tail`] reads it and proves it
    ///    whole, or a catch-up follows).
    ///
    /// Returns whether the WAL was restarted or can restart at the app's
    /// next commit; `false` when something kept the checkpoint from
    /// completing (the app's readers, or a commit stream that never let the
    /// app's checkpoint finish): try again later.
    fn checkpoint_window(&mut self) -> Result<bool> {
        let include = vec![true; self.targets.len()];
        let batch = loop {
            let Some(mut read) = self.read_batch(MAX_FRAMES_PER_CAPTURE)? else {
                if self.catch_up_due {
                    self.catch_up()?;
                    self.catch_up_due = false;
                }
                break None;
            };
            if !read.reached_end {
                // A previous WAL's tail, or a backlog longer than a batch:
                // written now, then read on.
                self.write_batch(read, &include)?;
                continue;
            }
            let mut reader = PageReader::open(self.source.db_path(), self.source.db_file(), self.capture.page_size)?;
            read.pages = Some(reader.read_all(&read.batch)?);
            break Some(read);
        };
        let wal_path = wal::wal_path(self.source.db_path());
        let salts = |header: Option<wal::WalHeader>| header.map(|h| (h.salt1, h.salt2));
        let before = salts(wal::read_header(&wal_path)?);
        let version = self.source.data_version()?;
        self.source.end_read()?;
        let opened = std::time::Instant::now();
        let outcome = (|| -> Result<bool> {
            let mut checkpointed_at = opened;
            let mut last = self.source.checkpoint(CheckpointMode::Passive)?;
            loop {
                if salts(wal::read_header(&wal_path)?) != before {
                    return Ok(true);
                }
                let complete = !last.busy && last.log_frames == last.checkpointed_frames;
                // Everything copied and nothing committed since: the app's
                // next commit restarts the WAL, with no tail to read.
                if complete && self.source.data_version()? == version {
                    return Ok(true);
                }
                if opened.elapsed() >= RESTART_WINDOW {
                    return Ok(false);
                }
                std::thread::sleep(RESTART_POLL);
                if checkpointed_at.elapsed() >= WINDOW_CHECKPOINT_EVERY {
                    last = self.source.checkpoint(CheckpointMode::Passive)?;
                    checkpointed_at = std::time::Instant::now();
                }
            }
        })();
        // Hold the WAL again, whatever happened, before reading its tail.
        self.source.begin_read()?;
        if let Some(batch) = batch {
            // Until it is written, the WAL may have restarted over it: if
            // writing fails, only a catch-up can tell what the stores miss.
            self.catch_up_due = true;
            if let Err(e) = self.write_batch(batch, &include) {
                tracing::warn!(db = %self.db_label, "a checkpoint window's batch was not written: the next capture catches up by page hashes");
                return Err(e);
            }
            self.catch_up_due = false;
        }
        let restarted = outcome?;
        self.metrics.record_checkpoint(false);
        tracing::debug!(db = %self.db_label, restarted, window_ms = opened.elapsed().as_millis() as u64, "checkpoint window");
        self.capture_available(usize::MAX)?;
        Ok(restarted)
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

#[cfg(test)]
mod tests {
    use super::*;
    use distributary_core::GenerationId;
    use distributary_core::store::MemoryStore;
    use rusqlite::Connection;

    /// A capturer of a new database whose app checkpoints only when told.
    fn start(dir: &Path) -> (Connection, Capturer, Arc<Metrics>) {
        let db = dir.join("app.db");
        let app = Connection::open(&db).unwrap();
        app.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        app.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);").unwrap();
        let spec = ReplicaSpec {
            url: "memory://a".into(),
            store: Arc::new(MemoryStore::new()),
            sync_interval: std::time::Duration::from_secs(1),
            key: None,
        };
        let metrics = Arc::new(Metrics::default());
        let starts = [Start::Plan(StartPlan::NewGeneration(GenerationId::new(1).unwrap()))];
        let capturer = Capturer::start(
            &db,
            &[spec],
            &starts,
            CheckpointPolicy::default(),
            Compression::default(),
            metrics.clone(),
        )
        .unwrap();
        (app, capturer, metrics)
    }

    /// [`start`], then ten commits captured: a later tail starts past the
    /// frames a new WAL's first commits take.
    fn start_past_ten_commits(dir: &Path) -> (Connection, Capturer, Arc<Metrics>) {
        let (app, mut capturer, metrics) = start(dir);
        for _ in 0..10 {
            commit(&app);
        }
        capturer.capture_pass(|_| {}).unwrap();
        (app, capturer, metrics)
    }

    fn commit(app: &Connection) {
        app.execute("INSERT INTO t VALUES (randomblob(3000))", []).unwrap();
    }

    fn restart_wal(app: &Connection) {
        app.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
        commit(app); // the first commit after a complete checkpoint restarts the WAL
    }

    /// What a checkpoint window lets happen while the capturer holds no
    /// read mark: a commit into the old WAL's tail, then `restarts` restarts
    /// of the WAL, each with one commit.
    fn window(app: &Connection, capturer: &mut Capturer, restarts: usize) {
        capturer.source.end_read().unwrap();
        commit(app);
        for _ in 0..restarts {
            restart_wal(app);
        }
        capturer.source.begin_read().unwrap();
    }

    #[test]
    fn one_restart_during_a_window_captures_the_old_tail_and_the_new_wal_one_txid_each() {
        let dir = tempfile::tempdir().unwrap();
        let (app, mut capturer, metrics) = start(dir.path());
        for _ in 0..10 {
            commit(&app); // the tail starts past the frames the new WAL gets
        }
        capturer.capture_pass(|_| {}).unwrap();
        let before = capturer.captured()[0];
        window(&app, &mut capturer, 1);
        capturer.capture_pass(|_| {}).unwrap();
        assert_eq!(metrics.catch_ups(), 0);
        assert_eq!(capturer.captured()[0].0, before.0 + 2, "the tail's commit and the new WAL's");
    }

    /// Regression (crash matrix, a replica's B-tree broken): while the tail
    /// was read, the app was writing the new WAL's frame at the tail's first
    /// frame; read torn, it ended the tail there, and the tail's commits
    /// were lost. Here the new WAL holds exactly the frames before the
    /// tail's first, and that frame's page is torn.
    #[test]
    fn a_tail_whose_first_frame_reads_torn_is_caught_up_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (app, mut capturer, metrics) = start_past_ten_commits(dir.path());
        let tail_start = capturer.capture.wal.unwrap().frame;
        capturer.source.end_read().unwrap();
        commit(&app); // the tail
        restart_wal(&app);
        let wal_path = wal::wal_path(capturer.db_path());
        let wal_frames = || {
            let header = wal::read_header(&wal_path).unwrap().unwrap();
            let scan = wal::scan_transactions(&wal_path, &header, header.start(), u64::MAX).unwrap();
            scan.transactions.last().map_or(0, |t| t.end.frame)
        };
        while wal_frames() < tail_start {
            // One frame each: the same leaf page again.
            app.execute("UPDATE t SET x = randomblob(3000) WHERE rowid = 1", []).unwrap();
        }
        assert_eq!(wal_frames(), tail_start, "the new WAL stops right before the tail");
        let header = wal::read_header(&wal_path).unwrap().unwrap();
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&wal_path).unwrap();
        file.write_all_at(&[0xA5; 64], header.frame_offset(tail_start) + wal::FRAME_HEADER_SIZE).unwrap();
        capturer.source.begin_read().unwrap();
        capturer.capture_pass(|_| {}).unwrap();
        assert_eq!(metrics.catch_ups(), 1, "a tail that ends at a torn frame the new WAL reached is not proven whole");
    }

    /// Regression (soak and pipeline tests, a snapshot "malformed"): the
    /// app ran `wal_checkpoint(TRUNCATE)` during a window, after a commit
    /// into the old WAL's tail. The WAL file was cut to zero bytes, the
    /// tail scan met the end of the file at once and took it for the
    /// tail's end: the tail's commit was in no TXID.
    #[test]
    fn a_tail_the_app_truncated_away_during_a_window_is_caught_up_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (app, mut capturer, metrics) = start_past_ten_commits(dir.path());
        capturer.source.end_read().unwrap();
        commit(&app); // the tail
        app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        commit(&app); // the new WAL, shorter than the cursor
        capturer.source.begin_read().unwrap();
        capturer.capture_pass(|_| {}).unwrap();
        assert_eq!(metrics.catch_ups(), 1, "a tail cut off with the file is not an empty tail");
        assert_capture_is_the_database(&mut capturer);
    }

    /// The same with `journal_size_limit`: SQLite cuts the WAL file to the
    /// limit at the new WAL's first commit, in the middle of the old tail.
    #[test]
    fn a_tail_cut_short_by_journal_size_limit_is_caught_up_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (app, mut capturer, metrics) = start_past_ten_commits(dir.path());
        let wal_path = wal::wal_path(capturer.db_path());
        let cursor_bytes = std::fs::metadata(&wal_path).unwrap().len();
        capturer.source.end_read().unwrap();
        for _ in 0..10 {
            commit(&app); // the tail, past the limit below
        }
        // Past the cursor, inside the tail, not on a frame's boundary.
        app.query_row(&format!("PRAGMA journal_size_limit = {}", cursor_bytes + 5_000), [], |_| Ok(())).unwrap();
        restart_wal(&app);
        assert_eq!(std::fs::metadata(&wal_path).unwrap().len(), cursor_bytes + 5_000, "cut inside the tail");
        capturer.source.begin_read().unwrap();
        capturer.capture_pass(|_| {}).unwrap();
        assert_eq!(metrics.catch_ups(), 1, "a tail cut short with the file is not proven whole");
        assert_capture_is_the_database(&mut capturer);
    }

    /// The captured state's checksum is the database's, scanned now.
    fn assert_capture_is_the_database(capturer: &mut Capturer) {
        let mut scanned = PageHashes::empty();
        let pages = capturer.source.for_each_page(|pgno, page| {
            scanned.resize(pgno);
            scanned.set(pgno, page_hash(PageNo(pgno), page));
            Ok(())
        });
        assert_eq!(pages.unwrap(), capturer.capture.commit);
        assert_eq!(scanned.checksum(), capturer.capture.checksum);
    }

    /// Regression: a WAL that came and went during a window (two restarts)
    /// was skipped without a word, its commits in no TXID.
    #[test]
    fn two_restarts_during_a_window_are_caught_up_never_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (app, mut capturer, metrics) = start(dir.path());
        commit(&app);
        capturer.capture_pass(|_| {}).unwrap();
        window(&app, &mut capturer, 2);
        capturer.capture_pass(|_| {}).unwrap();
        assert_eq!(metrics.catch_ups(), 1, "the middle WAL's commit is in no frame left to read");
        assert_capture_is_the_database(&mut capturer);
    }
}
