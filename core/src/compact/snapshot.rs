//! Snapshots: when one is due, merging the previous snapshot with the L1
//! chain after it (or adopting the one a concurrent run wrote), and adding
//! it to the generation's snapshot index.

use tracing::{Instrument, info, info_span};

use super::headers::HeaderCache;
use super::objects::{Upload, fetch_header, fetch_trailer, upload};
use super::staging::{LocalCache, download_or_raced, merge_blocking};
use super::{CompactConfig, CompactError, CompactReport};
use crate::format::Header;
use crate::ids::GenerationId;
use crate::layout::{l1_key, snapshot_index_key, snapshot_key};
use crate::manifest::{MANIFEST_FORMAT_VERSION, SnapshotIndex, SnapshotRef, update_document};
use crate::store::Store;

/// Whether a snapshot is due at the end of `l1`.
pub(crate) fn snapshot_due(base: &SnapshotRef, l1: &Header, config: &CompactConfig) -> bool {
    let interval_ms = u64::try_from(config.snapshot_interval.as_millis()).unwrap_or(u64::MAX);
    l1.max_txid > base.txid && l1.timestamp_ms >= base.timestamp_ms.saturating_add(interval_ms)
}

/// Builds (or adopts) the snapshot at `l1.max_txid`: the merge of the
/// snapshot `base` with the L1 chain after it.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename these.
pub(crate) async fn build_snapshot(
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

/// Adds `snapshot` to its generation's snapshot index (creating the index if
/// needed); a no-op if it is already there.
pub(crate) async fn add_to_index(
    store: &dyn Store,
    generation: GenerationId,
    snapshot: SnapshotRef,
) -> Result<(), CompactError> {
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
