//! The lazy replica of `distributary_core::lazy` (the wasm reader's lazy
//! mode) against stores written by the real `distributary replicate` and
//! `distributary compact`: every page it reads is the primary's at the
//! version's TXID, across snapshots, small and large L0 segments, a
//! database that shrinks, and compaction; an old version stays readable
//! after a newer one is published; a corrupt frame or index is refused and
//! named; a point read costs an index chunk and a frame; a resident replica
//! (the wasm full mode) holds every page of its version and only those.

use std::path::Path;
use std::sync::Arc;

use distributary_core::lazy::{LazyOptions, LazyReplica, Version};
use distributary_core::store::FileStore;
use distributary_tests::synthetic::Rng;
use distributary_tests::wal_primary::WalPrimary;

/// The `t` table's primary: rows of text that compresses about 2:1.
struct Primary {
    wal: WalPrimary,
    rng: Rng,
    next: i64,
}

impl Primary {
    fn new() -> Primary {
        Primary {
            wal: WalPrimary::create("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"),
            rng: Rng::new(19),
            next: 1,
        }
    }

    /// Text that compresses about 2:1, like real rows.
    fn body(&mut self) -> String {
        (0..100).map(|_| format!("{:02x}", self.rng.below(256))).collect()
    }

    /// Runs `sql` statements in one transaction, then ships them.
    fn commit(&mut self, inserts: usize, sql: &str) {
        let mut connection = rusqlite::Connection::open(self.wal.db()).unwrap();
        let tx = connection.transaction().unwrap();
        for _ in 0..inserts {
            let body = self.body();
            tx.execute("INSERT INTO t (id, body) VALUES (?1, ?2)", rusqlite::params![self.next, body]).unwrap();
            self.next += 1;
        }
        tx.execute_batch(sql).unwrap();
        tx.commit().unwrap();
        drop(connection);
        self.wal.ship();
    }
}

fn replica(store: &Path) -> LazyReplica {
    LazyReplica::new(Arc::new(FileStore::new(store)), LazyOptions::default())
}

/// Reads every page of `version` through the replica (the checksum over
/// them is checked against the chain's) and returns the database.
async fn read_all(replica: &LazyReplica, version: &Version) -> Vec<u8> {
    let mut image = Vec::with_capacity(version.len() as usize);
    replica.verify(version, |_, page| image.extend_from_slice(page)).await.unwrap();
    image
}

#[tokio::test]
async fn every_page_read_lazily_is_the_primarys_at_its_version() {
    let mut primary = Primary::new();
    primary.commit(3000, ""); // ~1.3 MB: a snapshot read far past its first 64 KiB
    let lazy = replica(&primary.wal.store());
    lazy.sync(false).await.unwrap();
    let first = lazy.current().unwrap();
    assert_eq!(first.position().checksum, primary.wal.checksum());
    let first_image = read_all(&lazy, &first).await;

    // A small L0 (read whole), changing pages inside the snapshot's range.
    primary.commit(10, "UPDATE t SET body = 'changed' WHERE id % 97 = 0");
    // A large L0 (read through its index).
    primary.commit(400, "UPDATE t SET body = upper(body) WHERE id % 3 = 0");
    lazy.sync(false).await.unwrap();
    let second = lazy.current().unwrap();
    assert!(second.position().txid > first.position().txid);
    assert_eq!(second.position().checksum, primary.wal.checksum());
    read_all(&lazy, &second).await;
    // The first version still reads as it was.
    assert_eq!(read_all(&lazy, &first).await, first_image);

    // The database shrinks.
    primary.commit(0, "DELETE FROM t WHERE id > 500");
    let connection = rusqlite::Connection::open(primary.wal.db()).unwrap();
    connection.execute_batch("VACUUM").unwrap();
    drop(connection);
    primary.wal.ship();
    lazy.sync(false).await.unwrap();
    let shrunk = lazy.current().unwrap();
    assert!(shrunk.pages() < second.pages(), "{} pages after {}", shrunk.pages(), second.pages());
    assert_eq!(shrunk.position().checksum, primary.wal.checksum());
    read_all(&lazy, &shrunk).await;

    // Compacted into a new snapshot and L1: a new replica starts from them,
    // and the old one follows on.
    primary.commit(200, "");
    primary.wal.compact();
    let fresh = replica(&primary.wal.store());
    fresh.sync(false).await.unwrap();
    let compacted = fresh.current().unwrap();
    assert_eq!(compacted.position().checksum, primary.wal.checksum());
    read_all(&fresh, &compacted).await;
    lazy.sync(false).await.unwrap();
    assert_eq!(lazy.current().unwrap().position(), compacted.position());
    read_all(&lazy, &lazy.current().unwrap()).await;
}

#[tokio::test]
async fn a_point_read_costs_an_index_chunk_and_a_frame_and_then_nothing() {
    let mut primary = Primary::new();
    primary.commit(6000, "");
    let lazy = replica(&primary.wal.store());
    lazy.sync(false).await.unwrap();
    let version = lazy.current().unwrap();
    let opened = lazy.stats();
    // The manifest, the snapshot's first 64 KiB, the L0 probe.
    assert_eq!(opened.requests, 3, "{opened:?}");
    assert!(lazy.page(&version, 1).unwrap().is_some(), "page 1 came with the snapshot's head");

    let far = version.pages() - 10;
    assert!(lazy.page(&version, far).unwrap().is_none());
    lazy.fetch(&version, &[far]).await.unwrap();
    let after = lazy.stats();
    assert_eq!(after.requests - opened.requests, 2, "one index chunk and one frame: {after:?}");
    assert!(after.bytes - opened.bytes < 12 << 10, "{after:?}");
    assert!(lazy.page(&version, far).unwrap().is_some());
    // A neighbour's index entry is in the same chunk: one request.
    lazy.fetch(&version, &[far + 1]).await.unwrap();
    assert_eq!(lazy.stats().requests - after.requests, 1);
}

#[tokio::test]
async fn a_corrupt_frame_or_index_is_refused_and_named() {
    let mut primary = Primary::new();
    primary.commit(3000, "");
    let snapshot = std::fs::read_dir(primary.wal.store())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("snapshots")))
        .find(|p| p.is_dir())
        .map(|dir| {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "seg"))
                .unwrap()
        })
        .unwrap();
    let pristine = std::fs::read(&snapshot).unwrap();
    let lazy = replica(&primary.wal.store());
    lazy.sync(false).await.unwrap();
    let version = lazy.current().unwrap();
    let page = version.pages() - 1;

    // Flip a byte in the middle of the last frames, where no head fetch reaches.
    let mut bytes = pristine.clone();
    let commit = version.pages() as usize;
    let index_offset = bytes.len() - 32 - 16 * commit;
    let entry = index_offset + 16 * (page as usize - 1);
    let offset = u64::from_be_bytes(bytes[entry + 4..entry + 12].try_into().unwrap()) as usize;
    bytes[offset + 8 + 20] ^= 0x40;
    std::fs::write(&snapshot, &bytes).unwrap();
    let error = lazy.fetch(&version, &[page]).await.unwrap_err().to_string();
    assert!(error.contains(&format!("decode page {page} of segment")), "{error}");

    // An index entry pointing elsewhere.
    let mut bytes = pristine.clone();
    bytes[entry + 11] ^= 0x10;
    std::fs::write(&snapshot, &bytes).unwrap();
    let fresh = replica(&primary.wal.store());
    fresh.sync(false).await.unwrap();
    let error = fresh.fetch(&fresh.current().unwrap(), &[page]).await.unwrap_err().to_string();
    assert!(error.contains("read segment") && error.contains(&format!("page {page}")), "{error}");
}

#[tokio::test]
async fn a_replica_holding_many_segments_starts_again_from_a_newer_snapshot() {
    let mut primary = Primary::new();
    primary.commit(3000, "");
    // The smallest cache: segments held past a quarter of it (256 KiB) send
    // the next sync back to the newest snapshot.
    let options = LazyOptions { cache_bytes: 1 << 20, ..LazyOptions::default() };
    let lazy = LazyReplica::new(Arc::new(FileStore::new(primary.wal.store())), options);
    lazy.sync(false).await.unwrap();
    let first = lazy.current().unwrap().snapshot_txid();
    for _ in 0..20 {
        primary.commit(150, "");
        lazy.sync(false).await.unwrap();
    }
    assert_eq!(lazy.current().unwrap().snapshot_txid(), first, "no newer snapshot yet");
    primary.wal.compact();
    primary.commit(1, "");
    lazy.sync(false).await.unwrap();
    let version = lazy.current().unwrap();
    assert!(version.snapshot_txid() > first, "{:?} after {first:?}", version.snapshot_txid());
    assert_eq!(version.position().checksum, primary.wal.checksum());
    read_all(&lazy, &version).await;
}

/// A resident replica (the wasm reader's full mode): a sync reads each
/// object whole, in one request, and publishes the version only once every
/// page is in memory and the checksum over them is the chain's; queries
/// then need no fetch. Pages the database no longer reads leave the cache,
/// and a database growing past the limit is refused at the object that
/// grows it, the replica keeping its state.
#[tokio::test]
async fn a_resident_replica_holds_every_page_and_only_those() {
    let mut primary = Primary::new();
    primary.commit(3000, "");
    let options = LazyOptions { resident: true, cache_bytes: 1 << 20, ..LazyOptions::default() };
    let full = LazyReplica::new(Arc::new(FileStore::new(primary.wal.store())), options);
    full.sync(false).await.unwrap();
    let first = full.current().unwrap();
    assert_eq!(first.position().checksum, primary.wal.checksum());
    // The manifest, the snapshot whole, the L0 probe.
    assert_eq!(full.stats().requests, 3, "{:?}", full.stats());
    let held_exactly = |version: &Version, cached: u64| {
        // Each page plus the cache's 64 bytes of bookkeeping per entry.
        assert_eq!(cached, version.len() + 64 * u64::from(version.pages()), "only the current pages are cached");
        for pgno in 1..=version.pages() {
            assert!(full.page(version, pgno).unwrap().is_some(), "page {pgno} is in memory");
        }
    };
    held_exactly(&first, full.stats().cached_bytes);

    primary.commit(10, "UPDATE t SET body = 'changed' WHERE id % 97 = 0");
    let before = full.stats().requests;
    full.sync(false).await.unwrap();
    let second = full.current().unwrap();
    assert_eq!(second.position().checksum, primary.wal.checksum());
    // The manifest, the new L0 whole, the probe past it.
    assert_eq!(full.stats().requests - before, 3, "{:?}", full.stats());
    held_exactly(&second, full.stats().cached_bytes);
    let mut image = Vec::new();
    full.verify(&second, |_, page| image.extend_from_slice(page)).await.unwrap();
    assert_eq!(image.len() as u64, second.len());

    primary.commit(3000, ""); // past the 1 MiB limit
    let error = full.sync(false).await.unwrap_err().to_string();
    assert!(error.contains("past this replica's memory limit of 1048576 bytes"), "{error}");
    assert_eq!(full.current().unwrap().position(), second.position(), "the replica keeps its state");
    held_exactly(&second, full.stats().cached_bytes);
}
