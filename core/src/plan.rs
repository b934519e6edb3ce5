//! Planning a read of the log without LIST: from the manifest, the snapshot
//! index and deterministic names, the chain of objects that brings a replica
//! (or an empty file) to a target state.
//!
//! A chain starts from a *base* — the reader's current position on the
//! manifest's generation, or a snapshot — and continues with *links*:
//!
//! - L1 by name: `l1/{t+1}` → `l1/{max+1}` → … until the object ending at
//!   the manifest's `l1.max_txid`;
//! - L0 probed by name: `l0/{t+1}` → … until not found (or the target).
//!
//! [`probe_newest`] is the same L0 walk on its own, for tools that report
//! the store's newest state: the manifest's `newest` moves only when the
//! compactor runs, so it may lag the L0 chain by any number of segments.
//!
//! Object sizes are not known before the objects are fetched, except for
//! snapshots (the manifest and index record them) and L1 objects whose
//! header the planner reads (a 96-byte range request, which also reports the
//! object's size). That is how a reader whose position falls inside an L1
//! object finds its place: it walks L1 headers from the nearest known L1
//! boundary at or before its TXID (the start of the L1 chain, or a snapshot:
//! snapshots are taken at L1 boundaries). By invariant 1 the L1 object
//! `[a, b]` with `a - 1 <= t <= b` brings state `t` to `b`.
//!
//! When both a snapshot and the reader's position can reach the target, the
//! planner compares bytes to download: the snapshot's size against the L1
//! objects that lead from the position to the snapshot (everything after the
//! snapshot is the same for both).

mod l1_walk;
mod probe;

use std::fmt;

use self::l1_walk::walk_l1;
use crate::ids::{Checksum, GenerationId, TxId};
use crate::layout::{Level, l0_key, l1_key, snapshot_key};
use crate::manifest::{Manifest, SnapshotIndex, SnapshotRef};
use crate::store::{Store, StoreError};

pub use self::probe::{probe_newest, probe_newest_sealed};

/// Errors while planning. Each names the TXIDs and keys involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A segment header read while walking a chain is invalid.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// No snapshot with this TXID is kept.
    #[error("plan restore: no snapshot at TXID {txid} in generation {generation} (kept: {kept})")]
    NoSuchSnapshot {
        /// The generation searched.
        generation: GenerationId,
        /// The TXID asked for.
        txid: TxId,
        /// The snapshot TXIDs that are kept, for the message.
        kept: String,
    },
    /// Nothing kept can reach the target: no snapshot at or before it, and
    /// the replica cannot get there from where it is.
    #[error("plan restore: {reason}")]
    Unreachable {
        /// Why, with the TXIDs involved.
        reason: String,
    },
    /// Walking the L1 chain found a hole.
    #[error("plan restore: L1 chain broken at {key}: {reason} (TXIDs [{from_txid}, {to_txid}] unreachable)")]
    Gap {
        /// The object that was expected.
        key: String,
        /// What is wrong.
        reason: String,
        /// First TXID that cannot be reached.
        from_txid: TxId,
        /// Last TXID of the range concerned.
        to_txid: TxId,
    },
    /// An L0 object found by name does not hold what its name says.
    #[error("probe {key}: {reason} (the L0 chain is damaged: run `distributary verify`)")]
    Misnamed {
        /// The object.
        key: String,
        /// What it holds instead.
        reason: String,
    },
}

/// The state a read should reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryPoint {
    /// The newest state in the store (L0 probed until not found).
    Newest,
    /// Exactly this transaction.
    TxId(TxId),
    /// The newest transaction committed at or before this time
    /// (milliseconds since the Unix epoch).
    Timestamp(u64),
    /// Exactly the snapshot at this TXID, nothing applied after it.
    Snapshot(TxId),
}

impl fmt::Display for HistoryPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryPoint::Newest => f.write_str("newest"),
            HistoryPoint::TxId(txid) => write!(f, "TXID {txid}"),
            HistoryPoint::Timestamp(ms) => write!(f, "timestamp {ms} ms"),
            HistoryPoint::Snapshot(txid) => write!(f, "snapshot {txid}"),
        }
    }
}

/// Where a replica is: what its sidecar state records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaPosition {
    /// The lineage the replica follows.
    pub generation: GenerationId,
    /// The last transaction applied.
    pub txid: TxId,
    /// Rolling checksum of the replica at `txid`.
    pub checksum: Checksum,
    /// Commit time of `txid`, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// What the chain starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// The replica as it is.
    Replica(ReplicaPosition),
    /// A snapshot, applied first (to an empty file or over the replica).
    Snapshot(SnapshotRef),
}

/// One step of a chain after its base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// An object whose header the planner already read.
    Object {
        /// Its key.
        key: String,
        /// Its level.
        level: Level,
        /// First TXID covered.
        min_txid: TxId,
        /// Last TXID covered.
        max_txid: TxId,
        /// Size in bytes.
        size: u64,
    },
    /// Follow L1 by name from `from_txid` until an object ends at `until_txid`.
    L1 {
        /// The first object's name.
        from_txid: TxId,
        /// The `max_txid` of the last object of the chain.
        until_txid: TxId,
    },
    /// Probe L0 by name from `from_txid` until not found or the target.
    L0 {
        /// The first object's name.
        from_txid: TxId,
    },
}

/// A chain of objects that reaches a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The generation read.
    pub generation: GenerationId,
    /// The database's page size.
    pub page_size: u32,
    /// Where the chain starts.
    pub base: Base,
    /// The links after the base, in order.
    pub links: Vec<Link>,
    /// The target.
    pub target: HistoryPoint,
    /// The newest TXID the manifest knows (the store may hold newer L0).
    pub manifest_newest: TxId,
    /// Bytes known in advance (snapshot and walked objects); L0 sizes are
    /// only known once fetched.
    pub known_bytes: u64,
    /// Why this chain, for `--dry-run` and logs.
    pub reason: String,
}

impl Plan {
    /// The key of the base snapshot, if the chain starts from one.
    pub fn snapshot_key(&self) -> Option<String> {
        match self.base {
            Base::Snapshot(snapshot) => Some(snapshot_key(self.generation, snapshot.txid)),
            Base::Replica(_) => None,
        }
    }

    /// A multi-line description of the plan.
    pub fn describe(&self) -> String {
        let mut out = format!("generation {}\ntarget     {}\n", self.generation, self.target);
        match self.base {
            Base::Replica(position) => {
                out += &format!("from       replica at TXID {} (checksum {})\n", position.txid, position.checksum)
            }
            Base::Snapshot(s) => {
                out += &format!(
                    "from       {} ({} bytes, {} pages)\n",
                    snapshot_key(self.generation, s.txid),
                    s.size,
                    s.commit
                )
            }
        }
        for link in &self.links {
            out += &match link {
                Link::Object { key, min_txid, max_txid, size, .. } => {
                    format!("then       {key} [{min_txid}, {max_txid}] ({size} bytes)\n")
                }
                Link::L1 { from_txid, until_txid } => {
                    format!("then       l1 by name from {from_txid} to {until_txid}\n")
                }
                Link::L0 { from_txid } => format!("then       l0 probed by name from {from_txid}\n"),
            };
        }
        out += &format!("known size {} bytes\nwhy        {}\n", self.known_bytes, self.reason);
        out
    }
}

/// All snapshots known for the manifest's generation, ascending: the index,
/// plus the manifest's newest (the index may lag behind it).
pub fn known_snapshots(manifest: &Manifest, index: Option<&SnapshotIndex>) -> Vec<SnapshotRef> {
    let mut snapshots: Vec<SnapshotRef> = index
        .filter(|index| index.generation == manifest.generation)
        .map(|index| index.snapshots.clone())
        .unwrap_or_default();
    if let Some(newest) = manifest.snapshot {
        snapshots.push(newest);
    }
    let mut snapshots = crate::order::sorted_by_key(snapshots, |s| u128::from(s.txid.0));
    snapshots.dedup_by_key(|s| s.txid);
    snapshots
}

/// Plans the chain from `from` (the replica's position, if it has one) to
/// `target`. Reads L1 headers (96-byte range requests) only when the
/// replica's position falls inside the L1 chain; otherwise it makes no
/// request at all.
pub async fn plan(
    store: &dyn Store,
    manifest: &Manifest,
    index: Option<&SnapshotIndex>,
    from: Option<ReplicaPosition>,
    target: HistoryPoint,
) -> Result<Plan, PlanError> {
    let generation = manifest.generation;
    let snapshots = known_snapshots(manifest, index);
    let kept = || snapshots.iter().map(|s| s.txid.0.to_string()).collect::<Vec<_>>().join(", ");
    let mut plan = Plan {
        generation,
        page_size: manifest.page_size,
        base: Base::Replica(ReplicaPosition {
            generation,
            txid: TxId::ZERO,
            checksum: Checksum::EMPTY,
            timestamp_ms: 0,
        }),
        links: Vec::new(),
        target,
        manifest_newest: manifest.newest.txid,
        known_bytes: 0,
        reason: String::new(),
    };

    if let HistoryPoint::Snapshot(txid) = target {
        let snapshot = snapshots.iter().find(|s| s.txid == txid).copied().ok_or_else(|| PlanError::NoSuchSnapshot {
            generation,
            txid,
            kept: kept(),
        })?;
        plan.base = Base::Snapshot(snapshot);
        plan.known_bytes = snapshot.size;
        plan.reason = "the snapshot asked for".into();
        return Ok(plan);
    }

    // The best snapshot: the newest one that does not pass the target.
    let best_snapshot = snapshots
        .iter()
        .rev()
        .find(|s| match target {
            HistoryPoint::TxId(txid) => s.txid <= txid,
            HistoryPoint::Timestamp(ms) => s.timestamp_ms <= ms,
            HistoryPoint::Newest | HistoryPoint::Snapshot(_) => true,
        })
        .copied();

    // The replica's position is usable if it is on this generation, not
    // past the target, and not behind what retention keeps.
    let floor = match manifest.l1 {
        Some(l1) => TxId(l1.min_txid.0.saturating_sub(1)),
        None => TxId(manifest.l0_min_txid.0.saturating_sub(1)),
    };
    let usable = from.filter(|position| {
        position.generation == generation
            && position.txid >= floor
            && match target {
                HistoryPoint::TxId(txid) => position.txid <= txid,
                HistoryPoint::Timestamp(ms) => position.timestamp_ms <= ms,
                HistoryPoint::Newest | HistoryPoint::Snapshot(_) => true,
            }
    });

    let choice = match (usable, best_snapshot) {
        (None, None) => {
            let why = match from {
                Some(p) if p.generation != generation => {
                    format!(
                        "the replica follows generation {} and the store has no snapshot to switch to",
                        p.generation
                    )
                }
                Some(p) if p.txid < floor => format!(
                    "the replica at TXID {} is behind the retention floor {} and no snapshot is kept at or before {target}",
                    p.txid, floor
                ),
                _ => format!("no snapshot at or before {target} (kept: {})", kept()),
            };
            return Err(PlanError::Unreachable { reason: why });
        }
        (Some(position), None) => Choice::Replica(position, Vec::new(), "no snapshot reaches the target".into()),
        (None, Some(snapshot)) => {
            let why = match from {
                None => "the replica has no position: bootstrap from the best snapshot".to_string(),
                Some(p) if p.generation != generation => {
                    format!("the replica follows generation {}: switch to {generation} by snapshot", p.generation)
                }
                Some(p) => format!("the replica at TXID {} cannot reach the target from where it is", p.txid),
            };
            Choice::Snapshot(snapshot, why)
        }
        (Some(position), Some(snapshot)) if position.txid >= snapshot.txid => {
            Choice::Replica(position, Vec::new(), "the replica is at or past the newest usable snapshot".into())
        }
        (Some(position), Some(snapshot)) => {
            // Both work: compare what the replica would download to reach
            // the snapshot's TXID against the snapshot itself.
            match walk_l1(store, manifest, &snapshots, position.txid, Some((snapshot.txid, snapshot.size))).await? {
                Some((links, bytes)) => Choice::Replica(
                    position,
                    links,
                    format!("{bytes} bytes of L1 segments beat the snapshot's {} bytes", snapshot.size),
                ),
                None => Choice::Snapshot(
                    snapshot,
                    format!("the snapshot's {} bytes beat the segments from TXID {}", snapshot.size, position.txid),
                ),
            }
        }
    };

    let (start_txid, mut links) = match choice {
        Choice::Replica(position, walked, reason) => {
            plan.base = Base::Replica(position);
            plan.reason = reason;
            let mut links = walked;
            if links.is_empty() && manifest.l1.is_some_and(|l1| position.txid < l1.max_txid) {
                // Inside the L1 chain: find the object covering position+1.
                if let Some((found, _)) = walk_l1(store, manifest, &snapshots, position.txid, None).await? {
                    links = found;
                }
            }
            (position.txid, links)
        }
        Choice::Snapshot(snapshot, reason) => {
            plan.base = Base::Snapshot(snapshot);
            plan.reason = reason;
            (snapshot.txid, Vec::new())
        }
    };

    // Continue by name: the rest of L1 (if the chain goes on past where the
    // walk stopped), then L0.
    let reached = links
        .iter()
        .rev()
        .find_map(|link| match link {
            Link::Object { max_txid, .. } => Some(*max_txid),
            _ => None,
        })
        .unwrap_or(start_txid);
    match manifest.l1 {
        Some(l1) if reached < l1.max_txid && reached.next() >= l1.min_txid => {
            links.push(Link::L1 { from_txid: reached.next(), until_txid: l1.max_txid });
            links.push(Link::L0 { from_txid: l1.max_txid.next() });
        }
        _ => links.push(Link::L0 { from_txid: reached.next() }),
    }
    plan.known_bytes = links
        .iter()
        .map(|link| match link {
            Link::Object { size, .. } => *size,
            _ => 0,
        })
        .sum::<u64>()
        + match plan.base {
            Base::Snapshot(s) => s.size,
            Base::Replica(_) => 0,
        };
    plan.links = links;
    Ok(plan)
}

enum Choice {
    Replica(ReplicaPosition, Vec<Link>, String),
    Snapshot(SnapshotRef, String),
}

/// The key of the object a link names first.
pub fn first_key(generation: GenerationId, link: &Link) -> String {
    match link {
        Link::Object { key, .. } => key.clone(),
        Link::L1 { from_txid, .. } => l1_key(generation, *from_txid),
        Link::L0 { from_txid } => l0_key(generation, *from_txid),
    }
}

#[cfg(test)]
mod tests;
