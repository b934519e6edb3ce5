//! One compaction run: read the manifest, delete expired L0 segments, walk
//! the L0 chain, turn each closed window into an L1 segment (and a snapshot
//! when one is due), publish after each, then hand the manifest to snapshot
//! retention and to the schedule of the next run.

use tracing::{Instrument, debug, info, info_span};

use super::headers::HeaderCache;
use super::l1::{build_l1, closed_run};
use super::objects::{Read, SegmentInfo, fetch_header_cached, fetch_trailer};
use super::publish::{Progress, publish};
use super::retention;
use super::schedule::Outlook;
use super::snapshot::{add_to_index, build_snapshot, snapshot_due};
use super::staging::LocalCache;
use super::{Clock, CompactConfig, CompactError, CompactMemory, CompactReport};
use crate::ids::{GenerationId, TxId};
use crate::layout::{l0_key, l1_key};
use crate::manifest::{Manifest, Position, Versioned, read_manifest};
use crate::store::Store;

/// How many times a run starts over when the chain changed under it (a
/// segment it was about to read was deleted by a newer run's retention).
const RACE_ATTEMPTS: u32 = 5;

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
    compact_from(store, config, clock, memory, None).await
}

/// [`compact_with`] starting from `known`, the manifest as the caller just
/// read it (the watching pass's check), instead of reading it again. A run
/// that starts over after a race reads it afresh.
pub(crate) async fn compact_from(
    store: &dyn Store,
    config: &CompactConfig,
    clock: &dyn Clock,
    memory: &CompactMemory,
    known: Option<Versioned<Manifest>>,
) -> Result<CompactReport, CompactError> {
    let mut known = known;
    let span = info_span!("compact", store = store.url());
    async {
        memory.forget_outlook(store.url());
        let mut report = CompactReport::default();
        let mut attempt = 0;
        let passed = loop {
            attempt += 1;
            match compact_pass(store, config, clock, &memory.headers, known.take(), &mut report).await {
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
            report.manifest = Some(retired.manifest.value);
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

async fn compact_pass(
    store: &dyn Store,
    config: &CompactConfig,
    clock: &dyn Clock,
    headers: &HeaderCache,
    known: Option<Versioned<Manifest>>,
    report: &mut CompactReport,
) -> Result<Option<Passed>, CompactError> {
    let read = match known {
        Some(known) => Some(known),
        None => read_manifest(store).await?,
    };
    let Some(read) = read else {
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
