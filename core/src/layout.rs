//! Object keys: the bucket layout of `docs/FORMAT.md`, relative to the
//! store's prefix. TXIDs print as 16 lowercase hex digits so keys sort in
//! TXID order.
//!
//! ```text
//! manifest.json
//! <generation>/l0/<min_txid>.seg
//! <generation>/l1/<min_txid>.seg
//! <generation>/snapshots/<max_txid>.seg
//! <generation>/snapshots/index.json
//! ```

use std::fmt;

use crate::ids::{GenerationId, TxId};

/// Key of the manifest, the only object updated in place.
pub const MANIFEST_KEY: &str = "manifest.json";

/// The levels of segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// One segment per replicator sync, named by its `min_txid`.
    L0,
    /// Merged L0 windows, named by their `min_txid`.
    L1,
    /// Full database images, named by their `max_txid`.
    Snapshot,
}

impl Level {
    fn folder(self) -> &'static str {
        match self {
            Level::L0 => "l0",
            Level::L1 => "l1",
            Level::Snapshot => "snapshots",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

/// The folder of a generation, with a trailing slash (a list prefix).
pub fn generation_prefix(generation: GenerationId) -> String {
    format!("{generation}/")
}

/// The L0 segment starting at `min_txid`.
pub fn l0_key(generation: GenerationId, min_txid: TxId) -> String {
    SegmentKey { generation, level: Level::L0, txid: min_txid }.to_string()
}

/// The L1 segment starting at `min_txid`.
pub fn l1_key(generation: GenerationId, min_txid: TxId) -> String {
    SegmentKey { generation, level: Level::L1, txid: min_txid }.to_string()
}

/// The snapshot of the database at `max_txid`.
pub fn snapshot_key(generation: GenerationId, max_txid: TxId) -> String {
    SegmentKey { generation, level: Level::Snapshot, txid: max_txid }.to_string()
}

/// The snapshot history of a generation.
pub fn snapshot_index_key(generation: GenerationId) -> String {
    format!("{generation}/snapshots/index.json")
}

/// A parsed segment key. `txid` is the `min_txid` for L0 and L1, the
/// `max_txid` for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey {
    /// The lineage.
    pub generation: GenerationId,
    /// The level.
    pub level: Level,
    /// The TXID in the name.
    pub txid: TxId,
}

impl SegmentKey {
    /// Parses a key produced by [`SegmentKey`]'s `Display`; `None` for any
    /// other key (the manifest, an index, a stray object).
    pub fn parse(key: &str) -> Option<SegmentKey> {
        let mut parts = key.split('/');
        let (generation, folder, file) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let level = match folder {
            "l0" => Level::L0,
            "l1" => Level::L1,
            "snapshots" => Level::Snapshot,
            _ => return None,
        };
        let txid = TxId::from_hex(file.strip_suffix(".seg")?)?;
        Some(SegmentKey { generation: generation.parse().ok()?, level, txid })
    }
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}.seg", self.generation, self.level, self.txid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout_and_parse_back() {
        let generation: GenerationId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let key = l0_key(generation, TxId(0x41));
        assert_eq!(key, "0123456789abcdef0123456789abcdef/l0/0000000000000041.seg");
        assert_eq!(SegmentKey::parse(&key), Some(SegmentKey { generation, level: Level::L0, txid: TxId(0x41) }));
        assert_eq!(
            snapshot_key(generation, TxId(2)),
            "0123456789abcdef0123456789abcdef/snapshots/0000000000000002.seg"
        );
        assert_eq!(SegmentKey::parse(&snapshot_index_key(generation)), None);
        assert_eq!(SegmentKey::parse(MANIFEST_KEY), None);
        assert!(l1_key(generation, TxId(9)) < l1_key(generation, TxId(10)), "keys sort by TXID");
    }
}
