//! What the metadata (`state.db`) records, and when. The replicator is its
//! one writer. A capture moves the position, page hashes and each store's
//! captured TXID in memory; the metadata records a capture only once every
//! store holds its segments or they are spilled to its pending folder, so
//! that a restart from the recorded position misses nothing: everything a
//! store lacks past its recorded upload progress is in its pending folder,
//! and everything after the recorded position is still in the WAL (or lost
//! continuity, caught up by page hashes). With one store and a reachable
//! store that is one commit per acknowledged upload and no segment file.

use anyhow::Result;
use distributary_core::TxId;

use super::{Replicator, StoreReplica};
use crate::queue::remove_files;
use crate::state::{CaptureState, CaptureUpdate, StoreProgress};
use crate::wal;

/// A capture not yet written to the metadata.
pub(super) struct CaptureRecord {
    /// Its number; segments carry it (see [`crate::queue::Queued::seq`]).
    seq: u64,
    /// The capture state after it.
    state: CaptureState,
    /// Page hashes it changed.
    hashes: Vec<(u32, u64)>,
    /// Whether `hashes` is the complete map (a full scan).
    replace_all: bool,
}

/// Segments held in memory by one store, past which they are spilled: a
/// store that is down (or slow) costs disk, not the app's memory.
pub(super) const SPILL_BYTES: u64 = 8 << 20;

impl Replicator {
    /// Remembers the capture just made (segments already queued under
    /// `self.next_seq`), and records it at once if nothing holds it back.
    pub(super) fn commit_state(&mut self, hashes: &[(u32, u64)], replace_all: bool) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        for store in &mut self.stores {
            store.captured_at.push_back((seq, store.target.captured_txid));
        }
        self.unrecorded.push_back(CaptureRecord { seq, state: self.capture, hashes: hashes.to_vec(), replace_all });
        for store in &mut self.stores {
            if store.queue.memory_bytes() > self.spill_bytes {
                tracing::debug!(store = %store.spec.url, "spilling queued segments to the pending folder");
                store.queue.spill(u64::MAX)?;
            }
        }
        self.record_ready(None)
    }

    /// Writes to the metadata every capture record no store holds back,
    /// with each store's upload progress; `acknowledged` is a store whose
    /// upload just succeeded (its progress is written even when no record
    /// is ready, in the same one commit). A record held back only by
    /// stores with no upload under way (a store with a longer interval) is
    /// made ready by spilling their segments: a store that uploads keeps
    /// its progress recorded.
    pub(super) fn record_ready(&mut self, acknowledged: Option<usize>) -> Result<()> {
        if let Some(index) = acknowledged {
            // The newest record the acknowledged store no longer holds back.
            let acked = &self.stores[index].queue;
            let last = self.unrecorded.iter().take_while(|r| !acked.holds_back(r.seq)).last().map(|r| r.seq);
            if let Some(last) = last {
                for (other, store) in self.stores.iter_mut().enumerate() {
                    if other != index && !store.upload.in_flight && store.queue.holds_back(last) {
                        store.queue.spill(last)?;
                    }
                }
            }
        }
        let ready = self
            .unrecorded
            .iter()
            .take_while(|record| self.stores.iter().all(|s| !s.queue.holds_back(record.seq)))
            .count();
        if ready == 0 {
            if let Some(index) = acknowledged {
                let store = &self.stores[index];
                self.state.set_shipped(&store.spec.url, store.shipped)?;
            }
            return Ok(());
        }
        let records: Vec<CaptureRecord> = self.unrecorded.drain(..ready).collect();
        let through = records.last().expect("ready > 0").seq;
        let mut hashes = std::collections::BTreeMap::new();
        let mut replace_all = false;
        for record in &records {
            if record.replace_all {
                hashes.clear();
                replace_all = true;
            }
            hashes.extend(record.hashes.iter().copied());
        }
        let hashes: Vec<(u32, u64)> = hashes.into_iter().collect();
        let replicas: Vec<StoreProgress> = self.stores.iter_mut().map(|s| s.recorded_state(through)).collect();
        self.state.commit_capture(&CaptureUpdate {
            state: records.last().expect("ready > 0").state,
            hashes: &hashes,
            replace_all_hashes: replace_all,
            replicas: &replicas,
        })
    }

    /// The store at `index` holds everything up to `through`: records it
    /// (with any capture it made ready), then removes the spilled files it
    /// no longer needs. A crash between the two leaves files the restart
    /// removes as shipped.
    pub(super) fn acknowledge(&mut self, index: usize, through: TxId) -> Result<()> {
        let store = &mut self.stores[index];
        store.shipped = store.shipped.max(through);
        let files = store.queue.acknowledge(through);
        self.record_ready(Some(index))?;
        remove_files(&files)
    }

    /// Publishes each store's capture progress and the WAL's size.
    pub(super) fn publish_progress(&self) {
        let now = distributary_core::clock::now_ms();
        for store in &self.stores {
            let target = &store.target;
            self.metrics.update_replica(&self.db_label, &target.url, |status| {
                status.generation = target.generation.to_string();
                if status.captured_txid != target.captured_txid.0 && status.oldest_unshipped_ms.is_none() {
                    status.oldest_unshipped_ms = Some(now);
                }
                status.captured_txid = target.captured_txid.0;
            });
        }
        let wal_bytes = std::fs::metadata(wal::wal_path(self.source.db_path())).map_or(0, |m| m.len());
        self.metrics.set_wal_bytes(&self.db_label, wal_bytes);
    }
}

impl StoreReplica {
    /// The store's row in the metadata once records up to `through` are
    /// written: its captured TXID as of that record, its upload progress.
    fn recorded_state(&mut self, through: u64) -> StoreProgress {
        let mut captured = self.recorded_captured;
        while let Some(&(seq, txid)) = self.captured_at.front() {
            if seq > through {
                break;
            }
            captured = txid;
            self.captured_at.pop_front();
        }
        self.recorded_captured = captured;
        StoreProgress {
            url: self.target.url.clone(),
            generation: self.target.generation,
            captured_txid: captured,
            shipped_txid: self.shipped,
            key_check: Some(self.target.codec.key_check()),
        }
    }
}
