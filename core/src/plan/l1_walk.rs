//! Walking L1 headers by name: how a reader whose position falls inside an
//! L1 object finds its place, and how the planner counts the bytes of L1
//! objects from a position to a snapshot.

use super::{Link, PlanError};
use crate::format::{HEADER_SIZE, read_segment_header};
use crate::ids::TxId;
use crate::layout::{Level, l1_key};
use crate::manifest::{Manifest, SnapshotRef};
use crate::store::{ByteRange, Store};

/// Walks L1 headers from the nearest known L1 boundary at or before
/// `txid` to the object covering `txid + 1`, and on to `until` (a TXID and
/// a byte budget) if given. Returns the objects from the covering one on,
/// and their total size; `None` if the budget ran out first.
pub(super) async fn walk_l1(
    store: &dyn Store,
    manifest: &Manifest,
    snapshots: &[SnapshotRef],
    txid: TxId,
    until: Option<(TxId, u64)>,
) -> Result<Option<(Vec<Link>, u64)>, PlanError> {
    let Some(l1) = manifest.l1 else {
        // No L1: the replica continues in L0, whose sizes are unknown until
        // fetched; the snapshot wins only if the replica cannot continue.
        return Ok(Some((Vec::new(), 0)));
    };
    let chain_start = TxId(l1.min_txid.0.saturating_sub(1));
    // Snapshots sit at L1 boundaries: the newest one at or before `txid`
    // inside the chain is the closest place to start walking.
    let mut boundary = snapshots
        .iter()
        .map(|s| s.txid)
        .filter(|&s| s >= chain_start && s <= txid && s < l1.max_txid)
        .max()
        .unwrap_or(chain_start)
        .max(chain_start);
    let stop = until.map_or(txid.next(), |(stop, _)| stop);
    let mut links = Vec::new();
    let mut bytes = 0u64;
    while boundary < l1.max_txid && boundary < stop {
        let key = l1_key(manifest.generation, boundary.next());
        let result = store
            .get(
                &key,
                crate::store::GetOptions {
                    range: Some(ByteRange::Bounded { start: 0, end: HEADER_SIZE as u64 }),
                    if_none_match: None,
                },
            )
            .await;
        let result = match result {
            Ok(result) => result,
            Err(e) if e.is_not_found() => {
                return Err(PlanError::Gap {
                    key,
                    reason: "not found".into(),
                    from_txid: boundary.next(),
                    to_txid: l1.max_txid,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        let prefix = result.bytes().await?;
        let header = read_segment_header(&key, &prefix)?;
        if header.min_txid != boundary.next() || header.generation != manifest.generation {
            return Err(PlanError::Gap {
                key,
                reason: format!("holds {} of generation {}", header.range(), header.generation),
                from_txid: boundary.next(),
                to_txid: l1.max_txid,
            });
        }
        if header.max_txid >= txid {
            // Covers txid + 1 (or ends exactly at txid, a no-op to skip).
            if header.max_txid > txid {
                bytes += size;
                if let Some((_, budget)) = until
                    && bytes > budget
                {
                    return Ok(None);
                }
                links.push(Link::Object {
                    key,
                    level: Level::L1,
                    min_txid: header.min_txid,
                    max_txid: header.max_txid,
                    size,
                });
            }
            if until.is_none() {
                break;
            }
        }
        boundary = header.max_txid;
    }
    Ok(Some((links, bytes)))
}
