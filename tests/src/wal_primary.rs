//! A WAL-mode SQLite primary in a temporary folder, shipped to a folder
//! store beside it by the real `distributary replicate --once` and
//! compacted by the real `distributary compact`: the store the readers'
//! tests (the lazy replica, the small static build, the wasm reader) read,
//! written the way users write theirs. Each test adds its own table's
//! writes on top.

use std::path::{Path, PathBuf};

use distributary_core::Checksum;

use crate::chain::database_checksum;
use crate::programs::{distributary, replicate_once};

/// `app.db` and the folder store `store/` in one temporary folder.
pub struct WalPrimary {
    dir: tempfile::TempDir,
}

impl WalPrimary {
    /// A new `app.db` with `schema` run on it, then switched to WAL like
    /// every primary (run in rollback mode, a large schema is not written
    /// twice, through the WAL and then the file).
    pub fn create(schema: &str) -> WalPrimary {
        let dir = tempfile::tempdir().unwrap();
        let connection = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
        connection.execute_batch(schema).unwrap();
        connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        WalPrimary { dir }
    }

    /// The temporary folder, for a test's other files.
    pub fn folder(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("app.db")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn store_url(&self) -> String {
        format!("file://{}", self.store().display())
    }

    /// `distributary replicate --once`: uploads what the WAL holds.
    pub fn ship(&self) {
        replicate_once(&self.db(), &self.store_url(), &[], &[]);
    }

    /// `distributary compact` with every window elapsed: the L0 segments
    /// into L1, and a new snapshot, now.
    pub fn compact(&self) {
        let output =
            distributary(&["compact", "--snapshot-interval", "1ms", "--l1-window", "1ms", &self.store_url()], &[]);
        assert!(output.status.success(), "compact: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// The database's rolling checksum, as the chain records it.
    pub fn checksum(&self) -> Checksum {
        database_checksum(&self.db()).unwrap()
    }
}
