//! What a walk knows: objects read, documents read, and per generation the
//! chains found and the checksums objects claim.

use std::collections::BTreeMap;

use distributary_core::apply::{ObjectApplier, PageHashes};
use distributary_core::format::{Header, KeyCheck};
use distributary_core::{Checksum, GenerationId, TxId};

/// An object read and decoded: what its header and trailer say.
#[derive(Clone, Debug)]
pub(super) struct Info {
    pub(super) header: Header,
    pub(super) post_apply: Checksum,
    pub(super) size: u64,
}

/// The result of looking an object up by name.
#[derive(Clone, Debug)]
pub(super) enum Fetched {
    /// Read, decoded; its problems (if any) were reported.
    Found(Info),
    /// Not in the store.
    Missing,
    /// In the store but unreadable (reported): a chain cannot go past it.
    Bad,
}

/// A document read (manifest, snapshot index).
pub(super) enum Doc<T> {
    Found(T),
    Missing,
    /// Unreadable (reported).
    Bad,
}

/// A segment of a chain, by its `min_txid`.
#[derive(Clone, Debug)]
pub(super) struct Seg {
    pub(super) max_txid: TxId,
    pub(super) key: String,
    pub(super) timestamp_ms: u64,
}

/// What is known about one generation while it is verified.
pub(super) struct GenState {
    pub(super) generation: GenerationId,
    /// What every header must say (from the manifest), if known.
    pub(super) page_size: Option<u32>,
    pub(super) key_check: Option<KeyCheck>,
    /// The database's checksum at a TXID, and who said so first.
    pub(super) claims: BTreeMap<TxId, (Checksum, String)>,
    pub(super) l1: BTreeMap<TxId, Seg>,
    pub(super) l0: BTreeMap<TxId, Seg>,
    /// Snapshots found and sound, by TXID.
    pub(super) snapshots: BTreeMap<TxId, Seg>,
    /// The snapshot `--deep` replays the chain from.
    pub(super) replay_base: Option<TxId>,
}

impl GenState {
    pub(super) fn new(generation: GenerationId, page_size: Option<u32>, key_check: Option<KeyCheck>) -> GenState {
        GenState {
            generation,
            page_size,
            key_check,
            claims: BTreeMap::new(),
            l1: BTreeMap::new(),
            l0: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            replay_base: None,
        }
    }

    /// The TXID of the newest state any object of the generation reaches.
    pub(super) fn newest_seen(&self) -> TxId {
        let ends = self.l1.values().chain(self.l0.values()).chain(self.snapshots.values());
        ends.map(|s| s.max_txid).max().unwrap_or(TxId::ZERO)
    }

    /// The object ending exactly at `txid`, if any.
    pub(super) fn ending_at(&self, txid: TxId) -> Option<&Seg> {
        let mut all = self.l0.values().chain(self.l1.values()).chain(self.snapshots.values());
        all.find(|s| s.max_txid == txid)
    }
}

/// `--deep`'s replay: the state of the chain in page hashes.
pub(super) struct Replay {
    pub(super) applier: ObjectApplier,
    pub(super) sink: PageHashes,
}
