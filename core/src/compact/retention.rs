//! Retention: what the compactor deletes, and in which order so that no run,
//! crashed or concurrent, ever removes an object a reader is sent to.
//!
//! Rules (thresholds from [`CompactConfig`]):
//!
//! - **L0**: the L0 segments of an L1 segment are deleted once the L1
//!   segment's timestamp (that of its last transaction) is
//!   [`CompactConfig::l0_retention`] old, so readers polling `l0/{t+1}` by
//!   name keep finding them that long. The manifest's `l0_kept_min_txid`
//!   is the cursor: L0 segments start there. Within one L1 segment they are
//!   deleted newest first, so after a crash the survivors are a prefix that
//!   the next run finds again by name from the cursor; only then does the
//!   cursor move.
//! - **Snapshots**: kept while younger than
//!   [`CompactConfig::snapshot_retention`] by timestamp; the manifest's
//!   snapshot (the newest) is always kept. The oldest kept snapshot is the
//!   restore floor.
//! - **L1**: kept after the oldest kept snapshot (each kept snapshot's
//!   restore chain, and every state since, stays reachable); the segments
//!   up to it are deleted, but never one whose L0 segments have not been
//!   deleted yet (the L0 cursor finds them through it).
//!
//! Order for snapshots and L1: (1) the manifest's `l1.min_txid` moves past
//! the floor, so it no longer points at what goes; (2) the L1 segments up to
//! the floor are deleted newest first, found by name from the oldest
//! snapshot still in the index; (3) the old snapshot objects are deleted;
//! (4) the index drops them. A crash before (4) leaves the index naming the
//! old snapshots, so the next run finds and finishes the same work.

use tracing::{Instrument, debug, info, info_span, warn};

use super::headers::HeaderCache;
use super::objects::{Read, fetch_header, fetch_header_cached};
use super::{CompactConfig, CompactError, CompactReport};
use crate::ids::{GenerationId, TxId};
use crate::layout::{l0_key, l1_key, snapshot_index_key, snapshot_key};
use crate::manifest::{Manifest, SnapshotIndex, Versioned, read_snapshot_index, update_document, update_manifest_from};
use crate::store::Store;

/// Most L1 segments whose L0 segments one run deletes: bounds a run's work
/// after a long outage (the next runs continue).
const MAX_L0_GROUPS_PER_RUN: usize = 1_000;

/// What [`delete_l0`] did, and when it has work again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct L0Retention {
    /// The first TXID whose L0 segments are kept, if the store has L1.
    pub cursor: Option<TxId>,
    /// The cursor moved past the manifest's: the caller's next manifest
    /// update carries it (`l0_kept_min_txid` moves only after the deletes).
    pub moved: bool,
    /// When the oldest L0 segments still kept expire (`None`: no L1 segment
    /// waits for it; a new one comes with a pass that has work anyway).
    pub due_ms: Option<u64>,
}

/// Deletes the L0 segments of every L1 segment old enough, from the cursor
/// on (the manifest's `l0_kept_min_txid`). Does not write the manifest:
/// the caller publishes the new cursor with its own update, so deleting a
/// minute's L0 segments costs no manifest write of its own.
pub(crate) async fn delete_l0(
    store: &dyn Store,
    config: &CompactConfig,
    headers: &HeaderCache,
    manifest: &Manifest,
    now_ms: u64,
    report: &mut CompactReport,
) -> Result<L0Retention, CompactError> {
    let generation = manifest.generation;
    let Some(start) = manifest.l0_kept_min_txid.or(manifest.l1.map(|chain| chain.min_txid)) else {
        return Ok(L0Retention::default());
    };
    let retention_ms = u64::try_from(config.l0_retention.as_millis()).unwrap_or(u64::MAX);
    let mut cursor = start;
    let mut due_ms = None;
    for group in 0..=MAX_L0_GROUPS_PER_RUN {
        if cursor >= manifest.l0_min_txid {
            break;
        }
        if group == MAX_L0_GROUPS_PER_RUN {
            // More after a long outage: the next pass goes on at once.
            due_ms = Some(now_ms);
            break;
        }
        let key = l1_key(generation, cursor);
        let Some(l1) = fetch_header_cached(store, headers, &key, generation, Some(cursor), Read::Header).await? else {
            warn!(key, "the L1 segment at the L0 retention cursor is missing; keeping the L0 segments after it");
            break;
        };
        let expires_ms = l1.timestamp_ms.saturating_add(retention_ms);
        if expires_ms > now_ms {
            due_ms = Some(expires_ms);
            break;
        }
        // Find this L1 segment's L0 segments by name, then delete them newest
        // first so that a crash leaves a prefix the next run can still walk.
        let mut keys = Vec::new();
        let mut txid = cursor;
        while txid <= l1.max_txid {
            let l0 = l0_key(generation, txid);
            match fetch_header_cached(store, headers, &l0, generation, Some(txid), Read::Header).await? {
                Some(header) => {
                    keys.push(l0);
                    txid = header.max_txid.next();
                }
                // Deleted by an earlier (crashed) or concurrent run.
                None => break,
            }
        }
        delete_chain(store, &keys).await?;
        for key in &keys {
            headers.forget(store.url(), key);
        }
        report.l0_deleted += u32::try_from(keys.len()).unwrap_or(u32::MAX);
        headers.forget(store.url(), &key);
        debug!(l1 = key, deleted = keys.len(), "deleted the L0 segments covered by an L1 segment");
        cursor = l1.max_txid.next();
    }
    Ok(L0Retention { cursor: Some(cursor), moved: cursor > start, due_ms })
}

/// What [`retire_snapshots`] leaves: the manifest as now stored, and when
/// the oldest snapshot kept expires (`None` when it is the newest, which is
/// always kept, or when the L0 cursor holds it back: L0 retention's own
/// deadline comes first then).
pub(crate) struct Retired {
    pub manifest: Versioned<Manifest>,
    pub due_ms: Option<u64>,
}

/// Deletes snapshots past retention and the L1 segments up to the oldest
/// kept snapshot, in the crash-safe order of the module docs. `manifest` is
/// the manifest as the caller last read or wrote it.
pub(crate) async fn retire_snapshots(
    store: &dyn Store,
    config: &CompactConfig,
    manifest: Versioned<Manifest>,
    l0_cursor: Option<TxId>,
    now_ms: u64,
    report: &mut CompactReport,
) -> Result<Retired, CompactError> {
    let generation = manifest.value.generation;
    let (Some(newest), Some(l0_cursor)) = (manifest.value.snapshot, l0_cursor) else {
        return Ok(Retired { manifest, due_ms: None });
    };
    let Some(index) = read_snapshot_index(store, generation).await? else {
        return Ok(Retired { manifest, due_ms: None });
    };
    let index = index.value;
    let Some(oldest) = index.snapshots.first().copied() else {
        return Ok(Retired { manifest, due_ms: None });
    };
    let retention_ms = u64::try_from(config.snapshot_retention.as_millis()).unwrap_or(u64::MAX);
    let cutoff_ms = now_ms.saturating_sub(retention_ms);
    // When a snapshot other than the newest is first past retention (the
    // floor below keeps one exactly `retention` old).
    let expiry = |txid: TxId| {
        let snapshot = index.snapshots.iter().find(|s| s.txid == txid)?;
        let expires_ms = snapshot.timestamp_ms.saturating_add(retention_ms).saturating_add(1);
        (snapshot.txid < newest.txid && expires_ms > now_ms).then_some(expires_ms)
    };
    // The floor: the oldest snapshot kept. Kept are those young enough and
    // the newest (and any newer the index already lists). The floor may not
    // pass the L0 cursor: the L1 segments before it would be deleted while
    // the cursor still needs them to find L0 segments.
    let Some(floor) =
        index.snapshots.iter().filter(|s| s.timestamp_ms >= cutoff_ms || s.txid >= newest.txid).map(|s| s.txid).min()
    else {
        return Ok(Retired { manifest, due_ms: expiry(oldest.txid) });
    };
    let floor = match index.snapshots.iter().map(|s| s.txid).filter(|&t| t <= floor && t < l0_cursor).max() {
        Some(floor) => floor,
        None => return Ok(Retired { manifest, due_ms: expiry(oldest.txid) }),
    };
    if floor <= oldest.txid {
        return Ok(Retired { manifest, due_ms: expiry(oldest.txid) });
    }
    let span = info_span!("retire", floor = %floor, oldest = %oldest.txid);
    async {
        // (1) The manifest stops pointing at the L1 segments up to the floor.
        let manifest = update_manifest_from(store, Some(manifest), |current| {
            let Some(current) = current else { return Ok(None) };
            let Some(chain) = current.l1 else { return Ok(None) };
            if current.generation != generation || chain.min_txid > floor {
                return Ok(None);
            }
            let mut next = current.clone();
            next.l1 = (chain.max_txid > floor).then(|| crate::manifest::Chain { min_txid: floor.next(), ..chain });
            Ok(Some(next))
        })
        .await?
        .ok_or_else(super::manifest_gone)?;
        // (2) L1 segments from the oldest snapshot to the floor, newest first.
        let l1_keys = walk_l1_keys(store, generation, oldest.txid.next(), floor).await?;
        delete_chain(store, &l1_keys).await?;
        report.l1_deleted += u32::try_from(l1_keys.len()).unwrap_or(u32::MAX);
        // (3) The snapshot objects below the floor.
        let retired: Vec<String> =
            index.snapshots.iter().filter(|s| s.txid < floor).map(|s| snapshot_key(generation, s.txid)).collect();
        store.delete(&retired).await?;
        report.snapshots_deleted += u32::try_from(retired.len()).unwrap_or(u32::MAX);
        // (4) The index forgets them.
        update_document(store, &snapshot_index_key(generation), |current: Option<&SnapshotIndex>| {
            let Some(current) = current else { return Ok(None) };
            if current.snapshots.iter().all(|s| s.txid >= floor) {
                return Ok(None);
            }
            let mut next = current.clone();
            next.snapshots.retain(|s| s.txid >= floor);
            Ok(Some(next))
        })
        .await?;
        info!(l1_deleted = l1_keys.len(), snapshots_deleted = retired.len(), "retired old snapshots");
        Ok(Retired { manifest, due_ms: expiry(floor) })
    }
    .instrument(span)
    .await
}

/// The keys of the L1 chain from `min_txid` to `max_txid`, by name, stopping
/// early at a missing name (the rest were deleted newest-first by a run that
/// crashed).
async fn walk_l1_keys(
    store: &dyn Store,
    generation: GenerationId,
    min_txid: TxId,
    max_txid: TxId,
) -> Result<Vec<String>, CompactError> {
    let mut keys = Vec::new();
    let mut txid = min_txid;
    while txid <= max_txid {
        let key = l1_key(generation, txid);
        let Some(header) = fetch_header(store, &key, generation, Some(txid)).await? else {
            break;
        };
        if header.max_txid > max_txid {
            // Snapshots sit on L1 boundaries, so this does not happen; if it
            // did, the segment is still needed after the floor.
            break;
        }
        keys.push(key);
        txid = header.max_txid.next();
    }
    Ok(keys)
}

/// Deletes `keys`, a chain oldest first, in batched requests (S3 takes 1,000
/// keys per request; one request per key made retention most of an idle
/// store's bill) listing the newest first: the file store deletes in that
/// order, so a crash leaves a prefix the next run can still walk by name,
/// and S3 carries a batch it received to its end. S3 may still refuse single
/// keys of a batch; the batch is sent again (deleting a key already gone
/// succeeds), so a run that returns `Ok` leaves no hole in the chain.
async fn delete_chain(store: &dyn Store, keys: &[String]) -> Result<(), CompactError> {
    const ATTEMPTS: u32 = 3;
    let newest_first: Vec<String> = keys.iter().rev().cloned().collect();
    let mut attempt = 1;
    loop {
        match store.delete(&newest_first).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                debug!(error = %e, attempt, "batched delete refused some keys; sending it again");
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
