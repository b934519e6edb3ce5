//! What a compaction did, for logs, metrics and tests.

use crate::ids::{GenerationId, TxId};
use crate::manifest::Manifest;

/// What a [`compact`] call did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The prefix had no manifest: nothing to do.
    pub no_manifest: bool,
    /// The generation compacted.
    pub generation: Option<GenerationId>,
    /// `newest` in the manifest after the run.
    pub newest: Option<TxId>,
    /// L1 segments this run wrote.
    pub l1_created: u32,
    /// L1 segments found already written (by an earlier or concurrent run).
    pub l1_adopted: u32,
    /// Snapshots this run wrote.
    pub snapshots_created: u32,
    /// Snapshots found already written.
    pub snapshots_adopted: u32,
    /// L0 segments deleted by retention.
    pub l0_deleted: u32,
    /// L1 segments deleted by retention.
    pub l1_deleted: u32,
    /// Snapshots deleted by retention.
    pub snapshots_deleted: u32,
    /// Manifest updates written.
    pub manifest_updates: u32,
    /// The manifest as the run left it (its last read or write), so a
    /// caller that reports on it (the Lambda's metrics) needs no GET of its
    /// own; `None` when the prefix has none.
    pub manifest: Option<Manifest>,
}
