use super::*;
use crate::manifest::{Chain, MANIFEST_FORMAT_VERSION, Position};
use crate::store::MemoryStore;

fn manifest(snapshot: Option<SnapshotRef>, l1: Option<Chain>, l0_min_txid: u64) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        generation: GenerationId([1; 16]),
        page_size: 4096,
        key_check: None,
        newest: Position { txid: TxId(100), timestamp_ms: 100, checksum: Checksum(1) },
        snapshot,
        l1,
        l0_min_txid: TxId(l0_min_txid),
        l0_kept_min_txid: None,
        updated_ms: 0,
    }
}

fn snapshot(txid: u64, size: u64) -> SnapshotRef {
    SnapshotRef { txid: TxId(txid), timestamp_ms: txid * 10, size, commit: 3, checksum: Checksum(txid) }
}

#[tokio::test]
async fn an_empty_replica_starts_from_the_best_snapshot_and_probes_l0() {
    let store = MemoryStore::new();
    let m = manifest(Some(snapshot(1, 1000)), None, 2);
    let plan = super::plan(&store, &m, None, None, HistoryPoint::Newest).await.unwrap();
    assert_eq!(plan.base, Base::Snapshot(snapshot(1, 1000)));
    assert_eq!(plan.links, vec![Link::L0 { from_txid: TxId(2) }]);
}

#[tokio::test]
async fn a_replica_on_the_generation_continues_in_l0_without_requests() {
    let store = MemoryStore::new();
    let m = manifest(Some(snapshot(1, 1000)), None, 2);
    let position = ReplicaPosition { generation: m.generation, txid: TxId(40), checksum: Checksum(4), timestamp_ms: 0 };
    let plan = super::plan(&store, &m, None, Some(position), HistoryPoint::Newest).await.unwrap();
    assert_eq!(plan.base, Base::Replica(position));
    assert_eq!(plan.links, vec![Link::L0 { from_txid: TxId(41) }]);
}

#[tokio::test]
async fn another_generation_or_a_position_past_the_target_bootstraps_from_a_snapshot() {
    let store = MemoryStore::new();
    let m = manifest(Some(snapshot(1, 1000)), None, 2);
    let other =
        ReplicaPosition { generation: GenerationId([2; 16]), txid: TxId(5), checksum: Checksum(0), timestamp_ms: 0 };
    let plan1 = super::plan(&store, &m, None, Some(other), HistoryPoint::Newest).await.unwrap();
    assert!(matches!(plan1.base, Base::Snapshot(_)));
    let ahead = ReplicaPosition { generation: m.generation, txid: TxId(50), checksum: Checksum(0), timestamp_ms: 0 };
    let plan2 = super::plan(&store, &m, None, Some(ahead), HistoryPoint::TxId(TxId(20))).await.unwrap();
    assert!(matches!(plan2.base, Base::Snapshot(_)));
    let err = super::plan(&store, &m, None, None, HistoryPoint::Snapshot(TxId(7))).await.unwrap_err().to_string();
    assert!(err.contains("no snapshot at TXID 0000000000000007") && err.contains("kept: 1"), "{err}");
}

#[tokio::test]
async fn after_compaction_a_snapshot_continues_with_l1_then_l0() {
    let store = MemoryStore::new();
    let m = manifest(Some(snapshot(10, 1000)), Some(Chain { min_txid: TxId(2), max_txid: TxId(30) }), 31);
    let plan = super::plan(&store, &m, None, None, HistoryPoint::Newest).await.unwrap();
    assert_eq!(
        plan.links,
        vec![Link::L1 { from_txid: TxId(11), until_txid: TxId(30) }, Link::L0 { from_txid: TxId(31) }]
    );
    let behind = ReplicaPosition { generation: m.generation, txid: TxId(0), checksum: Checksum(0), timestamp_ms: 0 };
    let m2 = manifest(Some(snapshot(10, 1000)), Some(Chain { min_txid: TxId(5), max_txid: TxId(30) }), 31);
    let plan = super::plan(&store, &m2, None, Some(behind), HistoryPoint::Newest).await.unwrap();
    assert!(matches!(plan.base, Base::Snapshot(_)), "behind the retention floor: {plan:?}");
}
