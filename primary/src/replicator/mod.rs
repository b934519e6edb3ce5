//! One database's replication, as a library: a [`Replicator`] owns the
//! database's capture state and one [`StoreReplica`] per store (its
//! target, upload progress and queue of captured segments), and the
//! metadata folder (`state.db`), of which it is the only writer.
//!
//! Stepping it: [`Replicator::tick`] does one short tick's work (capture
//! when due, the checkpoint policy); [`Replicator::sync_once`] captures
//! and uploads everything committed; [`Replicator::run`] ticks until told
//! to stop, uploading each store's queue at its sync interval beside the
//! ticks (an upload never delays capture), then flushes.
//!
//! | module | what |
//! |---|---|
//! | [`open`] | how each store starts: resume from the metadata, or from what the store holds |
//! | `wal_capture` | reading the WAL (and a previous WAL's tail) into segments |
//! | `checkpoint` | checkpoint windows and TRUNCATE |
//! | `resync` | catch-ups and first segments by a scan of every page |
//! | `record` | what `state.db` records, and when; spilling |
//! | `uploads` | ticks, uploads, acknowledgements |
//! | [`fleet`] | the run loop of every database of a process, in one task |

mod checkpoint;
pub mod fleet;
pub mod open;
mod record;
mod resync;
mod uploads;
mod wal_capture;

pub use uploads::{OnPermanentFailure, Tick};

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use distributary_core::format::{Compression, EncryptionKey, PageCodec};
use distributary_core::store::Store;
use distributary_core::{Checksum, TxId};

use crate::capture::{CaptureStore, PageHashes, SegmentKind, SegmentPlan};
use crate::generation::StartPlan;
use crate::metrics::Metrics;
use crate::queue::SegmentQueue;
use crate::source::Source;
use crate::state::{CaptureState, StateDir, StoreProgress};
use crate::wal::WalPosition;

/// Frames read per capture at most, so one capture's segment stays bounded
/// even after a huge transaction backlog.
const MAX_FRAMES_PER_CAPTURE: u64 = 64 * 1024;

/// Frames of a previous WAL's tail read into memory at most (16 MiB of
/// 4 KiB pages); a longer tail is caught up by page hashes instead. The
/// tail is what the app committed during a checkpoint window, a few
/// milliseconds of writes.
const OLD_TAIL_MAX_FRAMES: u64 = 4096;

/// How often [`Replicator::run`] ticks between captures: a commit after a
/// quiet period is captured (and shipped) within one tick, and a WAL that
/// reached the checkpoint threshold gets its checkpoint window within one
/// tick (an app that commits continuously fills SQLite's 1,000 frames in
/// tens of milliseconds, and each frame past them costs its commits more).
/// A tick is two small reads.
pub const SHORT_TICK: Duration = Duration::from_millis(20);

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
    /// How pages are compressed.
    pub compression: Compression,
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
    pub resumable: Vec<StoreProgress>,
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

/// One database's replication.
pub struct Replicator {
    db_label: String,
    source: Source,
    /// The metadata folder; only this value writes it.
    state: StateDir,
    stores: Vec<StoreReplica>,
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
    quiet_since: Option<Instant>,
    /// `PRAGMA data_version` when last looked at: it moves when the app commits.
    seen_version: Option<i64>,
    /// The WAL restarted over frames not captured, or a previous WAL's
    /// tail could not be proven whole: the next capture catches up by page
    /// hashes.
    catch_up_due: bool,
    /// Captures not written to the metadata yet, oldest first.
    unrecorded: VecDeque<record::CaptureRecord>,
    /// The number of the next capture record.
    next_seq: u64,
    /// Queued bytes in memory per store past which they are spilled.
    spill_bytes: u64,
    /// Bytes of pages a WAL scan keeps for the segments; pages past it are
    /// read again by offset.
    scan_keep_bytes: u64,
    /// Capture cadence: the shortest of the stores' sync intervals.
    interval: Duration,
    last_capture: Instant,
    /// When the metrics last got this database's progress.
    last_published: Instant,
    /// `/bookmark` requests seen by the last capture.
    seen_requests: u64,
}

/// One store of the database and everything the replicator knows of it.
pub struct StoreReplica {
    spec: ReplicaSpec,
    /// How its segments are numbered and sealed.
    target: CaptureStore,
    /// The newest TXID the store acknowledged.
    shipped: TxId,
    /// Its captured segments that it has not acknowledged.
    queue: SegmentQueue,
    /// Its captured TXID as of each capture record not yet in the metadata.
    captured_at: VecDeque<(u64, TxId)>,
    /// Its captured TXID as the metadata records it.
    recorded_captured: TxId,
    upload: uploads::UploadState,
}

impl Replicator {
    /// Opens the database and brings every store up to the current state:
    /// resumes from the metadata when WAL continuity holds; otherwise (and
    /// for new stores) scans every page once and writes catch-up, genesis or
    /// full segments as each store needs.
    pub fn start(
        db_path: &Path,
        replicas: &[ReplicaSpec],
        starts: &[Start],
        policy: CheckpointPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Replicator> {
        let db_label = db_path.display().to_string();
        let mut source = Source::open(db_path)?;
        // No write lock: with the WAL fully checkpointed while the
        // replicator was down, the read transaction gets read mark 0 and
        // the app's next commit may restart the WAL over frames not yet
        // captured, but every capture proves its frames were not
        // overwritten (a previous WAL's tail is proven whole, pages read by
        // offset are checked against the WAL header afterwards) or catches
        // up by page hashes. A start used to take the lock for this, and
        // captured a whole backlog under it.
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

        let mut stores = Vec::with_capacity(replicas.len());
        let mut first_plans = Vec::with_capacity(replicas.len());
        for (spec, start) in replicas.iter().zip(starts) {
            let pending_dir = state.pending_dir(&spec.url);
            let (generation, captured_txid, shipped_txid, queue, plan) = match (start, hashes.is_some()) {
                (Start::Resume, true) => {
                    let known = stored_replicas
                        .iter()
                        .find(|r| r.url == spec.url)
                        .with_context(|| format!("metadata has no progress for {}", spec.url))?;
                    tracing::debug!(store = %spec.url, captured = %known.captured_txid, shipped = %known.shipped_txid, "resuming");
                    remove_leftovers(&pending_dir, known.captured_txid, known.shipped_txid)?;
                    let queue =
                        SegmentQueue::load_spilled(pending_dir.clone(), known.shipped_txid, known.captured_txid)?;
                    (known.generation, known.captured_txid, known.shipped_txid, queue, None)
                }
                (Start::Resume, false) => {
                    bail!("cannot resume {}: the metadata's page hashes are incomplete", spec.url)
                }
                (Start::Plan(plan), _) => {
                    // Whatever was pending belongs to a history the store
                    // will not continue.
                    clear_pending(&pending_dir)?;
                    let queue = SegmentQueue::new(pending_dir.clone());
                    match *plan {
                        StartPlan::NewGeneration(generation) => (
                            generation,
                            TxId(1),
                            TxId::ZERO,
                            queue,
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
                            queue,
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
            let codec = PageCodec::new(generation, spec.key.as_ref(), spec.compression)?;
            let target = CaptureStore { url: spec.url.clone(), generation, captured_txid, pending_dir, codec };
            stores.push(StoreReplica {
                spec: spec.clone(),
                target,
                shipped: shipped_txid,
                queue,
                captured_at: VecDeque::new(),
                // A new store's row is written with its first record.
                recorded_captured: if plan.is_some() { shipped_txid } else { captured_txid },
                upload: uploads::UploadState::default(),
            });
            first_plans.push(plan);
        }

        let capture = stored.unwrap_or(CaptureState { page_size, commit: 0, checksum: Checksum::EMPTY, wal: None });
        let interval = replicas.iter().map(|r| r.sync_interval).min().unwrap_or(crate::config::DEFAULT_SYNC_INTERVAL);
        let mut replicator = Replicator {
            db_label,
            source,
            state,
            stores,
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
            quiet_since: Some(Instant::now()),
            seen_version: None,
            catch_up_due: false,
            unrecorded: VecDeque::new(),
            next_seq: 1,
            spill_bytes: record::SPILL_BYTES,
            scan_keep_bytes: wal_capture::SCAN_KEEP_BYTES,
            interval,
            last_capture: Instant::now(),
            last_published: Instant::now(),
            seen_requests: 0,
        };
        replicator.seen_requests = replicator.metrics.pass_requests();
        let in_step = stored.is_some() && replicator.hashes.page_count() == replicator.capture.commit;
        let continuous = in_step && replicator.wal_continues()?;
        if continuous && first_plans.iter().all(Option::is_none) {
            replicator.rebuild_wal_index()?;
            replicator.capture_available(usize::MAX)?;
            replicator.publish_progress();
            return Ok(replicator);
        }
        if stored.is_some() && !continuous {
            tracing::warn!(db = %replicator.db_label, "WAL continuity was lost while the replicator was stopped: catching up");
            replicator.metrics.record_catch_up();
        } else if stored.is_some() && first_plans.iter().flatten().any(|plan| !plan.genesis) {
            // A store continued from its newest TXID (open.rs logged why):
            // what it misses is folded into one TXID like any catch-up.
            replicator.metrics.record_catch_up();
        }
        // Stores in step get a diff (or nothing, when continuity held); the
        // others their first segment. Without page hashes, every store in
        // step gets every page.
        let plans: Vec<Option<SegmentPlan>> = first_plans
            .into_iter()
            .zip(&replicator.stores)
            .map(|(plan, store)| {
                plan.or_else(|| {
                    (!continuous).then(|| SegmentPlan {
                        kind: if in_step { SegmentKind::Changes } else { SegmentKind::Full },
                        genesis: false,
                        min_txid: store.target.captured_txid.next(),
                        max_txid: store.target.captured_txid.next(),
                        pre_apply_checksum: replicator.capture.checksum,
                    })
                })
            })
            .collect();
        replicator.resync(plans, continuous)?;
        Ok(replicator)
    }

    /// The newest TXID captured for each store (same order as configured).
    pub fn captured(&self) -> Vec<TxId> {
        self.stores.iter().map(|s| s.target.captured_txid).collect()
    }

    /// The database's path.
    pub fn db_path(&self) -> &Path {
        self.source.db_path()
    }

    /// The stores, as configured.
    pub fn stores(&self) -> &[StoreReplica] {
        &self.stores
    }

    /// Lets go of what a quiet database does not need until its next commit
    /// (the metadata's connection); it is opened again when needed.
    pub fn release_idle(&mut self) {
        self.state.release();
    }

    /// Sets how many bytes of segments a store may hold in memory before
    /// they are spilled to its pending folder.
    pub fn set_spill_bytes(&mut self, bytes: u64) {
        self.spill_bytes = bytes;
    }
}

impl StoreReplica {
    /// The store's URL as configured.
    pub fn url(&self) -> &str {
        &self.spec.url
    }

    /// The newest TXID captured for it.
    pub fn captured(&self) -> TxId {
        self.target.captured_txid
    }

    /// The newest TXID it acknowledged.
    pub fn shipped(&self) -> TxId {
        self.shipped
    }

    /// Whether any captured segment waits for it.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }
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
