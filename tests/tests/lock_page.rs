//! Databases that reach SQLite's lock-byte page: the page holding byte
//! offset `PENDING_BYTE` (1 GiB by default: page 262,145 of 4 KiB) is never
//! used for data, reads as zeros through `sqlite_dbpage`, and SQLite refuses
//! to write it (`sqlite3PagerGet` returns `SQLITE_CORRUPT`). So every
//! database larger than 1 GiB puts that page in its snapshots, and a reader
//! must apply them without writing it. `bench/restore.py` found that
//! `distributary restore` of a 1.08 GB database fails ("commit to ...:
//! database disk image is malformed"); see docs/BENCHMARKS.md, "Restore".
//!
//! To test this without a 1 GiB fixture, this process moves the lock-byte
//! page to 64 KiB (page 17) with `SQLITE_TESTCTRL_PENDING_BYTE`. That setting
//! is process-wide and must precede every open database, hence a test binary
//! of its own with one test, and restores in process only (the CLIs keep the
//! default).

use std::sync::Arc;

use distributary_core::TxId;
use distributary_core::apply::{IntegrityCheck, RestoreOptions, SyncOptions, database_checksum, restore, sync};
use distributary_core::plan::HistoryPoint;
use distributary_core::store::{FileStore, Store};
use distributary_tests::history::History;

const PENDING_BYTE: u32 = 0x1_0000;
/// The lock-byte page with 4 KiB pages.
const LOCK_PAGE: u32 = PENDING_BYTE / 4096 + 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_past_the_lock_byte_page_restores_and_syncs() {
    // SAFETY: a documented test control, called before any database is
    // opened in this process. It returns the previous value, so the second
    // call proves the first took effect.
    let set = || unsafe {
        rusqlite::ffi::sqlite3_test_control(
            rusqlite::ffi::SQLITE_TESTCTRL_PENDING_BYTE,
            PENDING_BYTE as std::ffi::c_uint,
        )
    };
    set();
    assert_eq!(set() as u32, PENDING_BYTE, "SQLITE_TESTCTRL_PENDING_BYTE");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(root));
    // Eight pages of rows to start with, below the lock-byte page.
    let mut history = History::create(
        &dir.path().join("primary.db"),
        Arc::clone(&store),
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 32)
         INSERT INTO blobs (body) SELECT randomblob(1000) FROM n;",
    )
    .await;
    let replica = dir.path().join("replica.db");
    sync(Arc::clone(&store), &replica, &SyncOptions::default()).await.unwrap();
    // Then grow past it one page at a time: L0 segments that cross it.
    for _ in 0..16 {
        history.commit("INSERT INTO blobs (body) SELECT randomblob(1000) FROM blobs LIMIT 4").await;
    }
    let (_, pages) = database_checksum(&history.path).unwrap();
    assert!(pages > LOCK_PAGE + 2, "the primary has {pages} pages, the lock-byte page is {LOCK_PAGE}");

    // A replica following the L0 segments across the lock-byte page.
    let summary = sync(Arc::clone(&store), &replica, &SyncOptions::default()).await.unwrap();
    assert_eq!(summary.to_txid, history.txid);

    // A snapshot that holds the lock-byte page (as zeros), restored.
    let newest = history.txid.0;
    history.compact(&[], Some(newest)).await;
    let out = dir.path().join("restored.db");
    let options = RestoreOptions {
        sync: SyncOptions { target: HistoryPoint::Snapshot(TxId(newest)), keep_state: false, ..SyncOptions::default() },
        force: false,
        integrity: IntegrityCheck::Full,
    };
    restore(Arc::clone(&store), &out, &options).await.unwrap();
    let (checksum, _) = database_checksum(&out).unwrap();
    assert_eq!(checksum, history.checksums[newest as usize], "the restored file is the primary's");
}
