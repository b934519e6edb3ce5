//! The compactor: turns the replicator's stream of small L0 segments into
//! L1 segments (one per time window) and periodic snapshots, keeps the
//! manifest current, and enforces retention. It works only through the
//! [`Store`] trait, so the same code runs in the Lambda, in `distributary
//! compact`, and in tests against any backend.
//!
//! # What one [`compact`] call does
//!
//! 1. Reads the manifest and applies L0 retention ([`retention`]): deletes
//!    the L0 segments of L1 segments older than
//!    [`CompactConfig::l0_retention`]; the new cursor rides on step 4's
//!    manifest update.
//! 2. Walks the L0 chain by name from `l0_min_txid` (one GET of each new
//!    segment, no LIST), advancing `newest`. The [`CompactMemory`] keeps
//!    the headers it read, and the bodies of small segments until the L1
//!    merge takes them, so a process that compacts again and again
//!    ([`compact_with`]) requests each L0 segment once: not once per run,
//!    and not a header and then a body.
//! 3. Groups the L0 segments into windows of [`CompactConfig::l1_window`] by
//!    their header timestamps. A window is closed once a later segment of the
//!    chain falls in a later window, or once the clock is a whole window past
//!    its end (an idle database). Each closed window becomes
//!    `l1/<min_txid>.seg`, the merge of its L0 segments. After an L1 segment
//!    whose timestamp is [`CompactConfig::snapshot_interval`] past the
//!    previous snapshot's, builds `snapshots/<max_txid>.seg`: the merge of
//!    the previous snapshot with the L1 segments after it. Snapshots
//!    therefore always sit on L1 boundaries.
//! 4. Publishes each object with create-if-absent, adds new snapshots to the
//!    snapshot index, then advances the manifest by compare-and-swap, once
//!    per L1 segment, from the version it last read or wrote.
//! 5. Retires snapshots past [`CompactConfig::snapshot_retention`] (always
//!    keeping the newest) and the L1 segments up to the oldest kept one.
//!
//! A watching process calls [`compact_watching`] instead, which runs all of
//! this only when the store may have work, and otherwise makes at most one
//! request (see its module, `schedule.rs`, for the argument).
//!
//! # Exactly-once results from at-least-once invocations
//!
//! Every object name is derived from its TXID range, every object is written
//! with create-if-absent, and whoever creates a name first defines its
//! content: a run that finds `l1/<t>.seg` or `snapshots/<t>.seg` already
//! there adopts it (reads its header) instead of its own result, and
//! continues the chain after the adopted object's `max_txid`. Window and
//! snapshot decisions depend only on segment timestamps along that chain, so
//! duplicate, late, reordered or concurrent runs build the same chain. The
//! manifest update is a compare-and-swap whose change function only moves
//! each field forward (TXIDs never decrease), so concurrent publishers merge
//! rather than overwrite each other. Objects are published before the
//! manifest points at them, and deleted only after it no longer does: a
//! crash at any step leaves every referenced object in place, and the next
//! run redoes the missing steps (finding the objects already written).
//!
//! # Memory
//!
//! Inputs are streamed to temp files and merged from there (one small read
//! buffer per input, at most [`CompactConfig::max_fan_in`] open at once);
//! outputs are written to a temp file and uploaded from it. Memory follows
//! the number of inputs, never the database size (the output's page index,
//! 16 bytes per page written, is the only part that grows with it).

mod headers;
mod objects;
pub mod retention;
mod schedule;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tempfile::TempPath;
use tracing::{Instrument, debug, info, info_span, warn};

use self::headers::HeaderCache;
use self::objects::{
    LocalSegment, Read, SegmentInfo, Upload, download, fetch_header, fetch_header_cached, fetch_trailer, merge_files,
    upload,
};
use self::schedule::Outlook;
pub use self::schedule::{CompactMemory, compact_watching};
use crate::format::{Codecs, FormatError, Header};
use crate::ids::{GenerationId, TxId};
use crate::layout::{MANIFEST_KEY, l0_key, l1_key, snapshot_index_key, snapshot_key};
use crate::manifest::{
    Chain, MANIFEST_FORMAT_VERSION, Manifest, ManifestError, Position, SnapshotIndex, SnapshotRef, Versioned,
    read_manifest, update_document, update_manifest_from,
};
use crate::merge::MergeError;
use crate::store::{Store, StoreError};

/// How many times a run starts over when the chain changed under it (a
/// segment it was about to read was deleted by a newer run's retention).
const RACE_ATTEMPTS: u32 = 5;

/// The compactor's thresholds. Every one is configurable (environment
/// variables for the Lambda, flags for `distributary compact`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactConfig {
    /// Width of the time windows whose L0 segments become one L1 segment,
    /// by segment timestamp. Default 1 minute.
    pub l1_window: Duration,
    /// Minimum time between snapshots, by segment timestamp. Default 1 hour.
    pub snapshot_interval: Duration,
    /// How long snapshots are kept (the newest is always kept). Default 7 days.
    pub snapshot_retention: Duration,
    /// How long L0 segments already covered by L1 stay, so readers that poll
    /// `l0/{t+1}` by name still find them. Default 5 minutes.
    pub l0_retention: Duration,
    /// Most merge inputs open at once; longer runs merge in stages. Bounds
    /// memory and file descriptors. Default 256.
    pub max_fan_in: usize,
    /// Where inputs and outputs are staged (the system temp folder if
    /// `None`). Needs room for the largest snapshot twice.
    pub temp_dir: Option<PathBuf>,
}

impl Default for CompactConfig {
    fn default() -> Self {
        CompactConfig {
            l1_window: Duration::from_secs(60),
            snapshot_interval: Duration::from_secs(3_600),
            snapshot_retention: Duration::from_secs(7 * 24 * 3_600),
            l0_retention: Duration::from_secs(5 * 60),
            max_fan_in: 256,
            temp_dir: None,
        }
    }
}

/// The duration grammar of flags and environment variables: the one of
/// [`crate::duration`], re-exported for callers that found it here.
pub use crate::duration::parse_duration;

/// The time the compactor decides by: injected so tests can simulate days
/// without sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::clock::now_ms()
    }
}

/// A clock that only moves when told (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(now_ms))
    }

    /// Sets the time.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why a compaction failed. Each names the object or TXID range involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// The store failed (the message names the operation and key).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or updating the manifest or snapshot index failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A segment is corrupt or not one this version reads.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Merging inputs into `key` failed.
    #[error("merge {key}: {source}")]
    Merge {
        /// The object being built.
        key: String,
        /// Why.
        #[source]
        source: MergeError,
    },
    /// A local temp file could not be used.
    #[error("{op} temp file {}: {source}", path.display())]
    Io {
        /// "create", "open", "write".
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The objects do not form the chain their names promise.
    #[error("compact {key}: {reason}")]
    Inconsistent {
        /// The object that does not fit.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The chain kept changing under the run (segments it needed were
    /// deleted by newer runs) after several fresh starts.
    #[error("compact {key}: the chain kept changing under this run ({attempts} attempts); try again")]
    Raced {
        /// The object that disappeared last.
        key: String,
        /// Fresh starts tried.
        attempts: u32,
    },
    /// A blocking merge task failed to run to completion.
    #[error("merge {key}: the merge task stopped: {reason}")]
    Task {
        /// The object being built.
        key: String,
        /// The join error.
        reason: String,
    },
}

/// What a [`compact`] call did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The prefix had no manifest: nothing to do.
    pub no_manifest: bool,
    /// The generation compacted.
    pub generation: Option<GenerationId>,
    /// `newest` in the manifest after the run.
    pub newest: Option<TxId>,
    /// L1 segments this run wrote.
    pub l1_created: u32,
    /// L1 segments found already written (by an earlier or concurrent run).
    pub l1_adopted: u32,
    /// Snapshots this run wrote.
    pub snapshots_created: u32,
    /// Snapshots found already written.
    pub snapshots_adopted: u32,
    /// L0 segments deleted by retention.
    pub l0_deleted: u32,
    /// L1 segments deleted by retention.
    pub l1_deleted: u32,
    /// Snapshots deleted by retention.
    pub snapshots_deleted: u32,
    /// Manifest updates written.
    pub manifest_updates: u32,
}

/// Runs one compaction of the database in `store`: see the module docs.
/// Safe to call any number of times, concurrently, from anywhere.
pub async fn compact(
    store: &dyn Store,
    config: &CompactConfig,
    clock: &dyn Clock,
) -> Result<CompactReport, CompactError> {
    compact_with(store, config, clock, &CompactMemory::new()).await
}

/// [`compact`] for a process that compacts again and again: `memory`
/// remembers the segment headers read, so the next runs do not request
/// them again, and what the run learnt about the store's next deadlines
/// (see [`compact_watching`]). One memory may serve many stores.
pub async fn compact_with(
    store: &dyn Store,
    config: &CompactConfig,
    clock: &dyn Clock,
    memory: &CompactMemory,
) -> Result<CompactReport, CompactError> {
    let span = info_span!("compact", store = store.url());
    async {
        memory.forget_outlook(store.url());
        let mut report = CompactReport::default();
        let mut attempt = 0;
        let passed = loop {
            attempt += 1;
            match compact_pass(store, config, clock, &memory.headers, &mut report).await {
                Err(CompactError::Raced { key, .. }) if attempt < RACE_ATTEMPTS => {
                    debug!(key, attempt, "chain changed under the run; starting over");
                    memory.headers.forget(store.url(), &key);
                }
                Err(CompactError::Raced { key, .. }) => return Err(CompactError::Raced { key, attempts: attempt }),
                Err(e) => return Err(e),
                Ok(passed) => break passed,
            }
        };
        if let Some(Passed { manifest, next_l0, pending_ms, l0 }) = passed {
            let now_ms = clock.now_ms();
            let retired = retention::retire_snapshots(store, config, manifest, l0.cursor, now_ms, &mut report).await?;
            let outlook = Outlook::after_pass(config, next_l0, pending_ms, &l0, &retired, now_ms);
            memory.set_outlook(store.url(), outlook);
        }
        info!(
            newest = ?report.newest.map(|t| t.to_string()),
            l1_created = report.l1_created,
            l1_adopted = report.l1_adopted,
            snapshots_created = report.snapshots_created,
            l0_deleted = report.l0_deleted,
            l1_deleted = report.l1_deleted,
            snapshots_deleted = report.snapshots_deleted,
            "compaction done"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Progress of one pass, published to the manifest after each step.
#[derive(Clone, Debug)]
struct Progress {
    generation: GenerationId,
    newest: Option<Position>,
    l1_max_txid: Option<TxId>,
    snapshot: Option<SnapshotRef>,
    /// L0 retention's cursor, once it moved (its deletes are done).
    l0_kept_min_txid: Option<TxId>,
}

/// What a pass leaves for retention and for the schedule of the next ones.
struct Passed {
    /// The manifest as the pass last read or wrote it.
    manifest: Versioned<Manifest>,
    /// The next L0 segment's TXID: where the walk found nothing.
    next_l0: TxId,
    /// Timestamp of the first L0 segment not yet in L1 (a window still open).
    pending_ms: Option<u64>,
    /// L0 retention after the pass.
    l0: retention::L0Retention,
}

/// Local copies kept within a pass so a snapshot does not download what the
/// pass just built, beside what the process keeps across passes.
struct LocalCache<'a> {
    headers: &'a HeaderCache,
    snapshot: Option<(TxId, TempPath)>,
    l1: Vec<(TxId, TempPath)>,
}

async fn compact_pass(
    store: &dyn Store,
    config: &CompactConfig,
    clock: &dyn Clock,
    headers: &HeaderCache,
    report: &mut CompactReport,
) -> Result<Option<Passed>, CompactError> {
    let Some(read) = read_manifest(store).await? else {
        report.no_manifest = true;
        return Ok(None);
    };
    let manifest = read.value.clone();
    // The manifest as last read or written: each update starts from it
    // rather than reading it again.
    let mut current = read;
    let generation = manifest.generation;
    report.generation = Some(generation);
    report.newest = Some(manifest.newest.txid);
    let temp_root = config.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("distributary-compact-")
        .tempdir_in(&temp_root)
        .map_err(|source| CompactError::Io { op: "create", path: temp_root.clone(), source })?;

    // L0 retention first, from the manifest just read (it deletes only what
    // that manifest already covers by L1): its cursor then rides on this
    // pass's manifest update instead of costing one of its own.
    let l0 = retention::delete_l0(store, config, headers, &manifest, clock.now_ms(), report).await?;
    let l0s = walk_l0(store, headers, generation, manifest.l0_min_txid).await?;
    let mut progress = Progress {
        generation,
        newest: None,
        l1_max_txid: None,
        snapshot: None,
        l0_kept_min_txid: l0.cursor.filter(|_| l0.moved),
    };
    if let Some(last) = l0s.last()
        && last.header.max_txid > manifest.newest.txid
    {
        let trailer = fetch_trailer(store, headers, &last.key).await?;
        progress.newest = Some(Position {
            txid: last.header.max_txid,
            timestamp_ms: last.header.timestamp_ms,
            checksum: trailer.post_apply_checksum,
        });
    }

    let mut snapshot_base = manifest.snapshot;
    let mut cache = LocalCache { headers, snapshot: None, l1: Vec::new() };
    let mut next_l0 = 0usize;
    let mut position = manifest.l0_min_txid;
    let mut published = false;
    // Each closed window becomes an L1 segment. A window closed here that
    // another run already merged is adopted when the upload finds its name
    // taken; a run that saw no closed window does not look for L1 segments
    // written by others: their manifest update says so.
    while let Some(run) = closed_run(&l0s[next_l0..], config, clock.now_ms()) {
        let key = l1_key(generation, position);
        if run[0].header.min_txid != position {
            return Err(CompactError::Inconsistent {
                key: run[0].key.clone(),
                reason: format!("the L0 chain does not continue the L1 chain at {position}"),
            });
        }
        let l1 = build_l1(store, config, &key, run, dir.path(), &mut cache, report).await?;
        let folded = next_l0;
        while next_l0 < l0s.len() && l0s[next_l0].header.max_txid <= l1.max_txid {
            next_l0 += 1;
        }
        // Bodies kept for a merge another run did (an adopted L1).
        for l0 in &l0s[folded..next_l0] {
            headers.take_body(store.url(), &l0.key);
        }
        if let Some(next) = l0s.get(next_l0)
            && next.header.min_txid != l1.max_txid.next()
        {
            return Err(CompactError::Inconsistent {
                key: key.clone(),
                reason: format!("ends at {} inside L0 segment {} {}", l1.max_txid, next.key, next.header.range()),
            });
        }
        position = l1.max_txid.next();
        progress.l1_max_txid = Some(l1.max_txid);
        if progress.newest.is_none_or(|n| n.txid < l1.max_txid) && manifest.newest.txid < l1.max_txid {
            // A concurrent run saw more of the L0 chain than this one.
            let trailer = fetch_trailer(store, headers, &key).await?;
            progress.newest = Some(Position {
                txid: l1.max_txid,
                timestamp_ms: l1.timestamp_ms,
                checksum: trailer.post_apply_checksum,
            });
        }

        if let Some(base) = snapshot_base
            && snapshot_due(&base, &l1, config)
        {
            let snapshot = build_snapshot(store, config, generation, base, &l1, dir.path(), &mut cache, report).await?;
            add_to_index(store, generation, snapshot).await?;
            snapshot_base = Some(snapshot);
            progress.snapshot = Some(snapshot);
        }
        current = publish(store, current, &progress, clock, report).await?;
        published = true;
    }
    if !published && (progress.newest.is_some() || progress.l0_kept_min_txid.is_some()) {
        // Nothing was closed, but `newest` or the L0 cursor moved.
        current = publish(store, current, &progress, clock, report).await?;
    }
    // A pass that ran late (an outage, a first run over old segments) may
    // have built L1 segments whose L0 segments are already past retention.
    let l0 = retention::delete_l0(store, config, headers, &current.value, clock.now_ms(), report).await?;
    if l0.moved {
        progress.l0_kept_min_txid = l0.cursor;
        current = publish(store, current, &progress, clock, report).await?;
    }
    if let Some(newest) = progress.newest {
        report.newest = Some(newest.txid);
    }
    Ok(Some(Passed {
        next_l0: l0s.last().map_or(manifest.l0_min_txid, |last| last.header.max_txid.next()),
        pending_ms: l0s.get(next_l0).map(|s| s.header.timestamp_ms),
        manifest: current,
        l0,
    }))
}

/// Walks the L0 chain by name from `min_txid` until a name is not found.
async fn walk_l0(
    store: &dyn Store,
    headers: &HeaderCache,
    generation: GenerationId,
    min_txid: TxId,
) -> Result<Vec<SegmentInfo>, CompactError> {
    let mut chain = Vec::new();
    let mut txid = min_txid;
    loop {
        let key = l0_key(generation, txid);
        let Some(header) = fetch_header_cached(store, headers, &key, generation, Some(txid), Read::Whole).await? else {
            return Ok(chain);
        };
        txid = header.max_txid.next();
        chain.push(SegmentInfo { key, header });
    }
}

/// The first window of `l0s` if it is closed: its segments share the first
/// one's window (or an earlier one, when a clock stepped back), and either a
/// later segment starts a later window, or `now_ms` is a whole window past
/// the window's end (no more syncs are coming for it).
fn closed_run<'a>(l0s: &'a [SegmentInfo], config: &CompactConfig, now_ms: u64) -> Option<&'a [SegmentInfo]> {
    let window_ms = u64::try_from(config.l1_window.as_millis()).unwrap_or(u64::MAX).max(1);
    let first = l0s.first()?;
    let window = first.header.timestamp_ms / window_ms;
    if let Some(end) = l0s.iter().position(|s| s.header.timestamp_ms / window_ms > window) {
        return Some(&l0s[..end]);
    }
    let closes_at = window.saturating_add(2).saturating_mul(window_ms);
    (now_ms >= closes_at).then_some(l0s)
}

/// Whether a snapshot is due at the end of `l1`.
fn snapshot_due(base: &SnapshotRef, l1: &Header, config: &CompactConfig) -> bool {
    let interval_ms = u64::try_from(config.snapshot_interval.as_millis()).unwrap_or(u64::MAX);
    l1.max_txid > base.txid && l1.timestamp_ms >= base.timestamp_ms.saturating_add(interval_ms)
}

/// Merges `run` into `key` (an L1 segment), or adopts the one a concurrent
/// run wrote first. Returns the header of the object now in the store.
async fn build_l1(
    store: &dyn Store,
    config: &CompactConfig,
    key: &str,
    run: &[SegmentInfo],
    dir: &std::path::Path,
    cache: &mut LocalCache<'_>,
    report: &mut CompactReport,
) -> Result<Header, CompactError> {
    let min_txid = run[0].header.min_txid;
    let max_txid = run[run.len() - 1].header.max_txid;
    let span = info_span!("build_l1", key, min_txid = %min_txid, max_txid = %max_txid, inputs = run.len());
    async {
        let mut files = Vec::with_capacity(run.len());
        for input in run {
            files.push((input.key.clone(), download_or_raced(store, cache.headers, &input.key, dir).await?));
        }
        let (path, summary) = merge_blocking(key, files, dir, config.max_fan_in).await?;
        match upload(store, key, &path).await? {
            Upload::Created => {
                report.l1_created += 1;
                info!(size = summary.size, pages = summary.page_count, "L1 segment written");
                cache.l1.push((min_txid, path));
                let header = Header {
                    min_txid,
                    max_txid,
                    timestamp_ms: run[run.len() - 1].header.timestamp_ms,
                    commit: run[run.len() - 1].header.commit,
                    compression: Codecs::union_of(run.iter().map(|input| input.header.compression)),
                    ..run[0].header.clone()
                };
                // L0 retention reads it when the cursor reaches it.
                cache.headers.insert(store.url(), key, &header);
                Ok(header)
            }
            Upload::AlreadyExisted => {
                report.l1_adopted += 1;
                debug!("a concurrent run wrote this L1 segment first; adopting it");
                fetch_header(store, key, run[0].header.generation, Some(min_txid))
                    .await?
                    .ok_or_else(|| CompactError::Raced { key: key.to_string(), attempts: 1 })
            }
        }
    }
    .instrument(span)
    .await
}

/// Builds (or adopts) the snapshot at `l1.max_txid`: the merge of the
/// snapshot `base` with the L1 chain after it.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename these.
async fn build_snapshot(
    store: &dyn Store,
    config: &CompactConfig,
    generation: GenerationId,
    base: SnapshotRef,
    l1: &Header,
    dir: &std::path::Path,
    cache: &mut LocalCache<'_>,
    report: &mut CompactReport,
) -> Result<SnapshotRef, CompactError> {
    let key = snapshot_key(generation, l1.max_txid);
    let span = info_span!("build_snapshot", key, base_txid = %base.txid, max_txid = %l1.max_txid);
    async {
        if let Some(header) = fetch_header(store, &key, generation, None).await? {
            report.snapshots_adopted += 1;
            return snapshot_ref(store, cache.headers, &key, &header).await;
        }
        let base_key = snapshot_key(generation, base.txid);
        let base_path = match cache.snapshot.take() {
            Some((txid, path)) if txid == base.txid => path,
            _ => download_or_raced(store, cache.headers, &base_key, dir).await?,
        };
        let mut files = vec![(base_key, base_path)];
        // The L1 chain from the base to here, by name.
        let mut txid = base.txid.next();
        while txid <= l1.max_txid {
            let l1_key = l1_key(generation, txid);
            let header = fetch_header(store, &l1_key, generation, Some(txid))
                .await?
                .ok_or_else(|| CompactError::Raced { key: l1_key.clone(), attempts: 1 })?;
            let local = cache.l1.iter().position(|(min_txid, _)| *min_txid == txid).map(|i| cache.l1.swap_remove(i).1);
            let path = match local {
                Some(path) => path,
                None => download_or_raced(store, cache.headers, &l1_key, dir).await?,
            };
            files.push((l1_key, path));
            txid = header.max_txid.next();
        }
        if txid != l1.max_txid.next() {
            return Err(CompactError::Inconsistent {
                key: key.clone(),
                reason: format!("the L1 chain from {} passes {} without ending there", base.txid.next(), l1.max_txid),
            });
        }
        let (path, summary) = merge_blocking(&key, files, dir, config.max_fan_in).await?;
        let snapshot = SnapshotRef {
            txid: l1.max_txid,
            timestamp_ms: l1.timestamp_ms,
            size: summary.size,
            commit: l1.commit,
            checksum: summary.trailer.post_apply_checksum,
        };
        match upload(store, &key, &path).await? {
            Upload::Created => {
                report.snapshots_created += 1;
                info!(size = summary.size, pages = summary.page_count, "snapshot written");
                cache.l1.retain(|(min_txid, _)| *min_txid > l1.max_txid);
                cache.snapshot = Some((l1.max_txid, path));
                Ok(snapshot)
            }
            Upload::AlreadyExisted => {
                report.snapshots_adopted += 1;
                let header = fetch_header(store, &key, generation, None)
                    .await?
                    .ok_or_else(|| CompactError::Raced { key: key.clone(), attempts: 1 })?;
                snapshot_ref(store, cache.headers, &key, &header).await
            }
        }
    }
    .instrument(span)
    .await
}

/// The index entry of a snapshot already in the store.
async fn snapshot_ref(
    store: &dyn Store,
    headers: &HeaderCache,
    key: &str,
    header: &Header,
) -> Result<SnapshotRef, CompactError> {
    let meta = store.head(key).await?;
    let trailer = fetch_trailer(store, headers, key).await?;
    Ok(SnapshotRef {
        txid: header.max_txid,
        timestamp_ms: header.timestamp_ms,
        size: meta.size,
        commit: header.commit,
        checksum: trailer.post_apply_checksum,
    })
}

/// Downloads an input the manifest led to; if it is gone, a newer run's
/// retention deleted it and this run must start over from a fresh manifest.
async fn download_or_raced(
    store: &dyn Store,
    headers: &HeaderCache,
    key: &str,
    dir: &std::path::Path,
) -> Result<TempPath, CompactError> {
    match download(store, headers, key, dir).await {
        Err(CompactError::Store(e)) if e.is_not_found() => {
            Err(CompactError::Raced { key: key.to_string(), attempts: 1 })
        }
        other => other,
    }
}

/// Runs [`merge_files`] on a blocking thread: merging is CPU and file I/O.
async fn merge_blocking(
    key: &str,
    inputs: Vec<(String, TempPath)>,
    dir: &std::path::Path,
    fan_in: usize,
) -> Result<(TempPath, crate::format::EncodeSummary), CompactError> {
    let object = key.to_string();
    let dir = dir.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        let local: Vec<LocalSegment> =
            inputs.iter().map(|(key, path)| LocalSegment { key: key.clone(), path: path.to_path_buf() }).collect();
        // `inputs` (and so the temp files) live until the merge is done.
        let result = merge_files(&object, &local, &dir, fan_in);
        drop(inputs);
        result
    });
    task.await.map_err(|e| CompactError::Task { key: key.to_string(), reason: e.to_string() })?
}

/// Adds `snapshot` to its generation's snapshot index (creating the index if
/// needed); a no-op if it is already there.
async fn add_to_index(store: &dyn Store, generation: GenerationId, snapshot: SnapshotRef) -> Result<(), CompactError> {
    update_document(store, &snapshot_index_key(generation), |current: Option<&SnapshotIndex>| {
        let mut index = match current {
            Some(index) if index.snapshots.iter().any(|s| s.txid == snapshot.txid) => return Ok(None),
            Some(index) => index.clone(),
            None => SnapshotIndex { format_version: MANIFEST_FORMAT_VERSION, generation, snapshots: Vec::new() },
        };
        index.snapshots.push(snapshot);
        index.snapshots.sort_by_key(|s| s.txid);
        Ok(Some(index))
    })
    .await?;
    Ok(())
}

/// Moves the manifest forward to include `progress`, by compare-and-swap
/// from `current` (the version last read or written). Each field only
/// moves forward, so concurrent runs' updates combine. Returns the
/// manifest as now stored.
async fn publish(
    store: &dyn Store,
    current: Versioned<Manifest>,
    progress: &Progress,
    clock: &dyn Clock,
    report: &mut CompactReport,
) -> Result<Versioned<Manifest>, CompactError> {
    let mut changed = false;
    let stored = update_manifest_from(store, Some(current), |current| {
        changed = false;
        let Some(current) = current else {
            return Err(manifest_gone());
        };
        Ok(advance(current, progress, clock.now_ms()).inspect(|_| changed = true))
    })
    .await?;
    if changed {
        report.manifest_updates += 1;
    }
    stored.ok_or_else(|| manifest_gone().into())
}

/// The manifest was deleted while the compactor worked (only a person can
/// do that): the run stops rather than write one back.
pub(crate) fn manifest_gone() -> ManifestError {
    ManifestError::Rejected {
        key: MANIFEST_KEY.to_string(),
        reason: "the manifest disappeared during compaction".into(),
    }
}

/// The manifest `current` moved forward by `progress`, or `None` if that
/// changes nothing (or the manifest moved on to another generation).
fn advance(current: &Manifest, progress: &Progress, now_ms: u64) -> Option<Manifest> {
    if current.generation != progress.generation {
        warn!(generation = %current.generation, "a new generation started; leaving the manifest to it");
        return None;
    }
    let mut next = current.clone();
    if let Some(newest) = progress.newest
        && newest.txid > next.newest.txid
    {
        next.newest = newest;
    }
    if let Some(l1_max_txid) = progress.l1_max_txid
        && l1_max_txid >= next.l0_min_txid
    {
        let min_txid = current.l1.map_or(current.l0_min_txid, |chain| chain.min_txid);
        next.l1 = Some(Chain { min_txid, max_txid: l1_max_txid });
        next.l0_min_txid = l1_max_txid.next();
    }
    if let Some(snapshot) = progress.snapshot
        && next.snapshot.is_none_or(|s| s.txid < snapshot.txid)
    {
        next.snapshot = Some(snapshot);
    }
    if let Some(kept) = progress.l0_kept_min_txid
        && next.l0_kept_min_txid.is_none_or(|current| current < kept)
    {
        next.l0_kept_min_txid = Some(kept);
    }
    if next == *current {
        return None;
    }
    next.updated_ms = now_ms;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
    }
}
