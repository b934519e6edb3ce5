//! A test-only producer of the log: a real SQLite database in WAL mode,
//! and after each transaction its page images diffed against the previous
//! ones into an L0 segment, as `docs/FORMAT.md` says (§3.7: every page that
//! differs, including pages that appear when the file grows). It starts a
//! generation with a SNAPSHOT at TXID 1, keeps the snapshot index and the
//! manifest, and can make the compacted shapes (L1 objects and snapshots
//! merged with `distributary_core::merge::merge`) that the compactor makes
//! for real. Timestamps are synthetic (`BASE_MS + 1000 * txid`) so restores
//! by time are deterministic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use distributary_core::format::{Compression, Flags, Header, KeyCheck, PageCodec, SegmentEncoder, SegmentReader};
use distributary_core::layout::{l0_key, l1_key, snapshot_index_key, snapshot_key};
use distributary_core::manifest::{
    Chain, MANIFEST_FORMAT_VERSION, Manifest, Position, SnapshotIndex, SnapshotRef, update_document, update_manifest,
};
use distributary_core::store::{PutMode, Store};
use distributary_core::{Checksum, GenerationId, PageNo, TxId};
use rusqlite::Connection;

/// Commit time of TXID 0 in the synthetic clock.
pub const BASE_MS: u64 = 1_700_000_000_000;

/// The synthetic commit time of `txid`.
pub fn time_of(txid: u64) -> u64 {
    BASE_MS + 1000 * txid
}

/// A primary database and the log it has written to a store.
pub struct History {
    /// The primary's file.
    pub path: PathBuf,
    /// The primary's connection.
    pub conn: Connection,
    /// The store written.
    pub store: Arc<dyn Store>,
    /// The generation.
    pub generation: GenerationId,
    /// The page size.
    pub page_size: u32,
    /// The newest TXID.
    pub txid: TxId,
    /// Checksum of the primary at each TXID (index = TXID).
    pub checksums: Vec<Checksum>,
    /// L0 segments written, as (min_txid, max_txid).
    pub l0: Vec<(u64, u64)>,
    /// Snapshots kept.
    pub snapshots: Vec<SnapshotRef>,
    image: Vec<Vec<u8>>,
    codec: PageCodec,
    l1: Option<Chain>,
    l0_min_txid: TxId,
}

impl History {
    /// Creates the primary at `path` (WAL mode), runs `setup` as TXID 1 and
    /// publishes it as the generation's first snapshot.
    pub async fn create(path: &Path, store: Arc<dyn Store>, setup: &str) -> History {
        History::create_generation(path, store, setup, GenerationId::new(BASE_MS).unwrap()).await
    }

    /// A history of the accounts workload ([`crate::accounts`]): its setup
    /// at TXID 1, then `transfers` transfers.
    pub async fn of_transfers(path: &Path, store: Arc<dyn Store>, transfers: u64) -> History {
        let mut history = History::create(path, store, &crate::accounts::accounts_setup()).await;
        for step in 0..transfers {
            history.commit(&crate::accounts::transfer(step)).await;
        }
        history
    }

    /// [`History::create`] as `generation` (a store's newer lineage needs a
    /// later id: ids order by their creation time, then by chance).
    pub async fn create_generation(
        path: &Path,
        store: Arc<dyn Store>,
        setup: &str,
        generation: GenerationId,
    ) -> History {
        let conn = Connection::open(path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch(setup).unwrap();
        let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let codec = PageCodec::new(generation, None, Compression::default()).unwrap();
        let mut history = History {
            path: path.to_path_buf(),
            conn,
            store,
            generation,
            page_size,
            txid: TxId(1),
            checksums: vec![Checksum::EMPTY],
            l0: Vec::new(),
            snapshots: Vec::new(),
            image: Vec::new(),
            codec,
            l1: None,
            l0_min_txid: TxId(2),
        };
        history.image = history.read_image();
        let checksum = image_checksum(&history.image);
        history.checksums.push(checksum);
        let pages: Vec<(u32, Vec<u8>)> =
            history.image.iter().enumerate().map(|(i, p)| (i as u32 + 1, p.clone())).collect();
        let bytes = history.encode(true, 1, 1, Checksum::EMPTY, checksum, &pages);
        let size = bytes.len() as u64;
        history.store.put(&snapshot_key(generation, TxId(1)), bytes.into(), PutMode::Create).await.unwrap();
        history.snapshots.push(SnapshotRef {
            txid: TxId(1),
            timestamp_ms: time_of(1),
            size,
            commit: history.image.len() as u32,
            checksum,
        });
        history.publish().await;
        history
    }

    /// Runs each SQL batch as its own transaction and ships them together as
    /// one L0 segment (one TXID per batch).
    pub async fn commit_many(&mut self, batches: &[String]) {
        let before = self.image.clone();
        let pre = *self.checksums.last().unwrap();
        let min_txid = self.txid.0 + 1;
        let mut smallest = before.len();
        for sql in batches {
            self.conn.execute_batch(&format!("BEGIN; {sql}; COMMIT;")).unwrap();
            self.txid = self.txid.next();
            let image = self.read_image();
            smallest = smallest.min(image.len());
            self.checksums.push(image_checksum(&image));
            self.image = image;
        }
        let post = *self.checksums.last().unwrap();
        // Every page that differs from the pre state, and every page past the
        // smallest size within the range (FORMAT.md §3.7).
        let pages: Vec<(u32, Vec<u8>)> = self
            .image
            .iter()
            .enumerate()
            .filter(|(i, page)| *i >= smallest || before.get(*i) != Some(page))
            .map(|(i, page)| (i as u32 + 1, page.clone()))
            .collect();
        let bytes = self.encode(false, min_txid, self.txid.0, pre, post, &pages);
        self.store.put(&l0_key(self.generation, TxId(min_txid)), bytes.into(), PutMode::Create).await.unwrap();
        self.l0.push((min_txid, self.txid.0));
    }

    /// One transaction, one L0 segment.
    pub async fn commit(&mut self, sql: &str) {
        self.commit_many(&[sql.to_string()]).await;
        self.publish().await;
    }

    /// Updates the manifest's newest position (the replicator's job).
    pub async fn publish(&self) {
        let generation = self.generation;
        let page_size = self.page_size;
        let newest =
            Position { txid: self.txid, timestamp_ms: time_of(self.txid.0), checksum: *self.checksums.last().unwrap() };
        let snapshot = self.snapshots.last().copied();
        let (l1, l0_min_txid) = (self.l1, self.l0_min_txid);
        update_manifest(self.store.as_ref(), |_| {
            Ok(Some(Manifest {
                format_version: MANIFEST_FORMAT_VERSION,
                generation,
                page_size,
                key_check: None,
                newest,
                snapshot,
                l1,
                l0_min_txid,
                l0_kept_min_txid: None,
                updated_ms: newest.timestamp_ms,
            }))
        })
        .await
        .unwrap();
        let snapshots = self.snapshots.clone();
        update_document(self.store.as_ref(), &snapshot_index_key(generation), |_: Option<&SnapshotIndex>| {
            Ok(Some(SnapshotIndex {
                format_version: MANIFEST_FORMAT_VERSION,
                generation,
                snapshots: snapshots.clone(),
            }))
        })
        .await
        .unwrap();
    }

    /// Compacts: each window of whole L0 segments `[min, max]` becomes
    /// `l1/{min}`, and a snapshot is taken at `snapshot_at` (an L1
    /// boundary) by merging the previous snapshot with the L0 run after it.
    pub async fn compact(&mut self, windows: &[(u64, u64)], snapshot_at: Option<u64>) {
        for &(min_txid, max_txid) in windows {
            let keys: Vec<String> = self
                .l0
                .iter()
                .filter(|(a, b)| *a >= min_txid && *b <= max_txid)
                .map(|(a, _)| l0_key(self.generation, TxId(*a)))
                .collect();
            let merged = self.merge(&keys, &l1_key(self.generation, TxId(min_txid))).await;
            self.store.put(&l1_key(self.generation, TxId(min_txid)), merged.into(), PutMode::Create).await.unwrap();
        }
        if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
            let min_txid = self.l1.map_or(first.0, |c| c.min_txid.0);
            self.l1 = Some(Chain { min_txid: TxId(min_txid), max_txid: TxId(last.1) });
            self.l0_min_txid = TxId(last.1 + 1);
        }
        if let Some(at) = snapshot_at {
            let base = *self.snapshots.last().unwrap();
            let mut keys = vec![snapshot_key(self.generation, base.txid)];
            keys.extend(
                self.l0
                    .iter()
                    .filter(|(a, b)| *a > base.txid.0 && *b <= at)
                    .map(|(a, _)| l0_key(self.generation, TxId(*a))),
            );
            let key = snapshot_key(self.generation, TxId(at));
            let merged = self.merge(&keys, &key).await;
            let size = merged.len() as u64;
            let commit = SegmentReader::open(key.clone(), &merged[..]).unwrap().header().commit;
            self.store.put(&key, merged.into(), PutMode::Create).await.unwrap();
            self.snapshots.push(SnapshotRef {
                txid: TxId(at),
                timestamp_ms: time_of(at),
                size,
                commit,
                checksum: self.checksums[at as usize],
            });
        }
        self.publish().await;
    }

    /// Deletes the L0 segments that end at or before `txid` (retention).
    pub async fn drop_l0_through(&mut self, txid: u64) {
        let keys: Vec<String> =
            self.l0.iter().filter(|(_, b)| *b <= txid).map(|(a, _)| l0_key(self.generation, TxId(*a))).collect();
        self.store.delete(&keys).await.unwrap();
    }

    /// Where a file store keeps `key` (for corrupting it).
    pub fn object_path(root: &Path, key: &str) -> PathBuf {
        root.join(key)
    }

    async fn merge(&self, keys: &[String], object: &str) -> Vec<u8> {
        let mut inputs = Vec::new();
        for key in keys {
            let (bytes, _) = self.store.get_bytes(key).await.unwrap();
            inputs.push(bytes);
        }
        let readers: Vec<_> =
            inputs.iter().zip(keys).map(|(bytes, key)| SegmentReader::open(key.clone(), &bytes[..]).unwrap()).collect();
        distributary_core::merge::merge(object, readers, Vec::new()).unwrap().0
    }

    fn encode(
        &mut self,
        snapshot: bool,
        min_txid: u64,
        max_txid: u64,
        pre: Checksum,
        post: Checksum,
        pages: &[(u32, Vec<u8>)],
    ) -> Vec<u8> {
        let header = Header {
            flags: Flags(if snapshot { Flags::SNAPSHOT } else { 0 }),
            page_size: self.page_size,
            commit: self.image.len() as u32,
            min_txid: TxId(min_txid),
            max_txid: TxId(max_txid),
            timestamp_ms: time_of(max_txid),
            pre_apply_checksum: pre,
            generation: self.generation,
            key_check: KeyCheck::NONE,
            compression: Compression::default().codecs(),
        };
        let mut encoder = SegmentEncoder::new("history", header, Vec::new()).unwrap();
        for (pgno, page) in pages {
            encoder.write_page(&mut self.codec, PageNo(*pgno), page).unwrap();
        }
        encoder.finish(post).unwrap().0
    }

    /// Every page of the primary as SQLite sees it (WAL included).
    fn read_image(&self) -> Vec<Vec<u8>> {
        let mut statement = self.conn.prepare("SELECT data FROM sqlite_dbpage ORDER BY pgno").unwrap();
        statement.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }
}

/// The rolling checksum of a page image.
pub fn image_checksum(image: &[Vec<u8>]) -> Checksum {
    image.iter().enumerate().fold(Checksum::EMPTY, |c, (i, p)| c.toggle_page(PageNo(i as u32 + 1), p))
}
