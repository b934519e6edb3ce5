//! What every reader does before it fetches anything, whatever holds its
//! database (a SQLite file, an image in memory, a lazy replica): read the
//! manifest (or take one the caller read a moment ago), find where the
//! replica is, read the snapshot index when the target may need a snapshot
//! the manifest does not name, and plan the chain; then, before a replica
//! is continued, check that the store's pages are the size of its own.

use super::{ApplyError, SyncSummary};
use crate::ids::TxId;
use crate::layout::MANIFEST_KEY;
use crate::manifest::{Manifest, SnapshotIndex, read_manifest, read_snapshot_index};
use crate::plan::{HistoryPoint, Plan, ReplicaPosition, plan};
use crate::store::Store;

/// Plans the chain from `store` to `target`: reads the manifest unless
/// `known` is given, asks `position` where the replica is on it (a native
/// replica first checks there that the file is this store's), reads the
/// snapshot index unless the target is the newest state (the manifest
/// names the newest snapshot), and plans. Returns the plan and the summary
/// of a run that has applied nothing yet.
pub(crate) async fn prepare(
    store: &dyn Store,
    known: Option<Manifest>,
    target: HistoryPoint,
    position: impl AsyncFnOnce(&Manifest) -> Result<Option<ReplicaPosition>, ApplyError>,
) -> Result<(Plan, SyncSummary), ApplyError> {
    let manifest = match known {
        Some(manifest) => manifest,
        None => read_current(store).await?,
    };
    let position = position(&manifest).await?;
    let index = match target {
        HistoryPoint::Newest => None,
        _ => read_snapshot_index(store, manifest.generation).await?.map(|v| v.value),
    };
    planned(store, &manifest, index.as_ref(), position, target).await
}

/// The store's manifest, or the error that names a store without one.
pub(crate) async fn read_current(store: &dyn Store) -> Result<Manifest, ApplyError> {
    Ok(read_manifest(store).await?.ok_or_else(|| ApplyError::NoManifest { url: store.url().to_string() })?.value)
}

/// Plans the chain from `position` to `target` on `manifest` (with the
/// snapshot `index` when the target may need it), and the summary of a run
/// that has applied nothing yet. The lazy replica, which only follows the
/// newest state, calls this after [`read_current`] rather than [`prepare`]:
/// the .wasm reader then carries no snapshot-index reader.
pub(crate) async fn planned(
    store: &dyn Store,
    manifest: &Manifest,
    index: Option<&SnapshotIndex>,
    position: Option<ReplicaPosition>,
    target: HistoryPoint,
) -> Result<(Plan, SyncSummary), ApplyError> {
    let plan = plan(store, manifest, index, position, target).await?;
    tracing::debug!(plan = %plan.describe(), "planned");
    let summary = SyncSummary::planned(&plan, position, manifest.newest.txid);
    Ok((plan, summary))
}

/// Refuses to write `plan`'s pages into a database whose pages are
/// `page_size` bytes when the store's are another size: `holder` names the
/// database in the message, `fix` says what to do about it.
pub(crate) fn check_page_size(plan: &Plan, page_size: u32, holder: &str, fix: &str) -> Result<(), ApplyError> {
    if page_size == plan.page_size {
        return Ok(());
    }
    Err(ApplyError::Discontinuous {
        key: MANIFEST_KEY.to_string(),
        range: crate::format::TxRange { min_txid: TxId::ZERO, max_txid: plan.manifest_newest },
        reason: format!(
            "the store's page size is {} but {holder} has pages of {page_size} bytes ({fix})",
            plan.page_size
        ),
    })
}
