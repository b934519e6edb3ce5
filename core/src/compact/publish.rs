//! Publishing a pass's progress: the manifest moves forward by
//! compare-and-swap from the version the pass last read or wrote, each
//! field only forward, so concurrent runs' updates combine.

use tracing::warn;

use super::{Clock, CompactError, CompactReport};
use crate::ids::{GenerationId, TxId};
use crate::layout::MANIFEST_KEY;
use crate::manifest::{Chain, Manifest, ManifestError, Position, SnapshotRef, Versioned, update_manifest_from};
use crate::store::Store;

/// Progress of one pass, published to the manifest after each step.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) generation: GenerationId,
    pub(crate) newest: Option<Position>,
    pub(crate) l1_max_txid: Option<TxId>,
    pub(crate) snapshot: Option<SnapshotRef>,
    /// L0 retention's cursor, once it moved (its deletes are done).
    pub(crate) l0_kept_min_txid: Option<TxId>,
}

/// Moves the manifest forward to include `progress`, by compare-and-swap
/// from `current` (the version last read or written). Each field only
/// moves forward, so concurrent runs' updates combine. Returns the
/// manifest as now stored.
pub(crate) async fn publish(
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
