//! The database at one TXID ([`Version`]: which object holds each page),
//! and the next one built object by object during a sync ([`Draft`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::source::Source;
use crate::apply::{ApplyError, empty_position};
use crate::ids::TxId;
use crate::plan::{Plan, ReplicaPosition};

/// The database at one TXID: which object holds each page.
pub struct Version {
    pub(super) id: u64,
    pub(super) position: ReplicaPosition,
    pub(super) page_size: u32,
    pub(super) commit: u32,
    /// The snapshot the chain starts from, if any.
    pub(super) base: Option<Arc<Source>>,
    /// Pages of the base not cut off since (the database may have shrunk).
    pub(super) base_limit: u32,
    /// Objects applied after the base, in order.
    pub(super) sources: Vec<Arc<Source>>,
    /// Page -> index in `sources` of the newest object holding it.
    pub(super) overlay: HashMap<u32, u32>,
    /// Payload bytes the sources after the base hold in memory.
    pub(super) held_bytes: usize,
}

impl Version {
    /// Identifies this version among the replica's.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Generation, TXID, checksum and commit time.
    pub fn position(&self) -> ReplicaPosition {
        self.position
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Database size in pages.
    pub fn pages(&self) -> u32 {
        self.commit
    }

    /// Database size in bytes.
    pub fn len(&self) -> u64 {
        u64::from(self.commit) * u64::from(self.page_size)
    }

    /// The TXID of the snapshot this version reads its other pages from.
    pub fn snapshot_txid(&self) -> Option<TxId> {
        self.base.as_ref().map(|base| base.header.max_txid)
    }

    /// Whether the database has no page (never: a synced version has one).
    pub fn is_empty(&self) -> bool {
        self.commit == 0
    }

    /// This version with its objects' payloads dropped (a resident
    /// replica's, whose every page is decoded in the cache).
    pub(super) fn without_payloads(self) -> Version {
        let strip = |source: &Arc<Source>| Arc::new(source.without_payloads());
        Version {
            base: self.base.as_ref().map(strip),
            sources: self.sources.iter().map(strip).collect(),
            held_bytes: 0,
            ..self
        }
    }

    /// The object holding page `pgno` at this version.
    pub(super) fn locate(&self, pgno: u32) -> Option<&Arc<Source>> {
        if pgno == 0 || pgno > self.commit {
            return None;
        }
        match self.overlay.get(&pgno) {
            Some(&slot) => self.sources.get(slot as usize),
            None if pgno <= self.base_limit => self.base.as_ref(),
            None => None,
        }
    }
}

// Short Debug output by hand: derived ones would print every page source
// and cost the .wasm the formatting of all of it.
impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version").field("id", &self.id).field("txid", &self.position.txid).finish_non_exhaustive()
    }
}

/// The next version, built object by object during a sync.
pub(super) struct Draft {
    /// The version so far (its id and held bytes are set when published).
    pub(super) next: Version,
    pub(super) objects: u64,
    pub(super) bytes: u64,
}

impl Draft {
    /// A draft continuing `current` (or empty, at the plan's generation).
    pub(super) fn from(current: Option<&Version>, plan: &Plan) -> Draft {
        let next = match current {
            Some(v) => Version {
                id: 0,
                position: v.position,
                page_size: v.page_size,
                commit: v.commit,
                base: v.base.clone(),
                base_limit: v.base_limit,
                sources: v.sources.clone(),
                overlay: v.overlay.clone(),
                held_bytes: 0,
            },
            None => Version {
                id: 0,
                position: empty_position(plan.generation),
                page_size: plan.page_size,
                commit: 0,
                base: None,
                base_limit: 0,
                sources: Vec::new(),
                overlay: HashMap::new(),
                held_bytes: 0,
            },
        };
        Draft { next, objects: 0, bytes: 0 }
    }

    /// Starts again from `snapshot`.
    pub(super) fn rebase(&mut self, snapshot: Source, position: ReplicaPosition, page_size: u32) {
        let v = &mut self.next;
        v.commit = snapshot.header.commit;
        v.base_limit = snapshot.header.commit;
        v.base = Some(Arc::new(snapshot));
        v.sources.clear();
        v.overlay.clear();
        v.page_size = page_size;
        v.position = position;
    }

    /// Lays `source` over the pages it holds; the database then has
    /// `source.header.commit` pages and is at `position`.
    pub(super) fn apply(&mut self, source: Source, position: ReplicaPosition) -> Result<(), ApplyError> {
        let v = &mut self.next;
        let header = source.header.clone();
        let pages = source.pages();
        if header.commit > v.commit {
            let grown = pages.iter().filter(|&&p| p > v.commit).count() as u32;
            if grown != header.commit - v.commit {
                return Err(ApplyError::Discontinuous {
                    key: source.key.clone(),
                    range: header.range(),
                    reason: format!(
                        "the database grows from {} to {} pages but the segment holds {grown} of the new pages",
                        v.commit, header.commit
                    ),
                });
            }
        }
        let slot = v.sources.len() as u32;
        v.sources.push(Arc::new(source));
        for pgno in pages {
            v.overlay.insert(pgno, slot);
        }
        if header.commit < v.commit {
            v.overlay.retain(|&pgno, _| pgno <= header.commit);
        }
        v.base_limit = v.base_limit.min(header.commit);
        v.commit = header.commit;
        v.position = position;
        Ok(())
    }

    /// The version, without the objects whose every page a later one replaced.
    pub(super) fn publish(self, id: u64) -> Version {
        let mut v = self.next;
        let mut used = vec![false; v.sources.len()];
        for &slot in v.overlay.values() {
            used[slot as usize] = true;
        }
        if used.contains(&false) {
            let mut renumber = vec![0u32; v.sources.len()];
            let mut kept = Vec::with_capacity(v.sources.len());
            for (slot, source) in v.sources.into_iter().enumerate() {
                if used[slot] {
                    renumber[slot] = kept.len() as u32;
                    kept.push(source);
                }
            }
            for slot in v.overlay.values_mut() {
                *slot = renumber[*slot as usize];
            }
            v.sources = kept;
        }
        v.held_bytes = v.sources.iter().flat_map(|s| s.held.iter()).map(|(_, payload)| payload.len()).sum();
        v.id = id;
        v
    }
}
