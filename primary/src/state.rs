//! The replicator's metadata folder beside the database
//! (`<db>-distributary/`): a small SQLite database holding what has been
//! captured from the WAL (position, database checksum, a hash per page) and,
//! per store, the generation and TXIDs; plus one `pending/` folder per store
//! holding captured segments not yet uploaded.
//!
//! Everything captured is committed here in one SQLite transaction, after the
//! pending segment files are written, so a killed process leaves either the
//! old or the new state; pending files newer than the state are orphans of a
//! crash and are removed on open.
//!
//! Nothing here is fsynced on the hot path (`synchronous=NORMAL`, pending
//! files written but not synced): a killed process loses nothing the kernel
//! holds, and only a machine restart (power loss, kernel crash) can lose
//! writes. So the folder records the boot it was written in; a start in
//! another boot checks the pending files and the store before resuming
//! (`crate::resume`).

use std::cell::{RefCell, RefMut};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use distributary_core::format::KeyCheck;
use distributary_core::{Checksum, GenerationId, TxId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::wal::WalPosition;

/// What has been captured from the database, whichever store it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureState {
    /// Page size of the database when captured.
    pub page_size: u32,
    /// Database size in pages.
    pub commit: u32,
    /// Rolling checksum of the database at the captured position.
    pub checksum: Checksum,
    /// Where capture continues in the WAL (`None`: at the start of whatever
    /// WAL exists; only right after a resync with an empty WAL).
    pub wal: Option<WalPosition>,
}

/// Per-store progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreProgress {
    /// The store's URL (its identity in this folder).
    pub url: String,
    /// The store's current generation.
    pub generation: GenerationId,
    /// The newest TXID captured for this store (in `pending/` or uploaded).
    pub captured_txid: TxId,
    /// The newest TXID known to be in the store.
    pub shipped_txid: TxId,
    /// The encryption key the generation's segments are sealed with
    /// ([`KeyCheck::NONE`]: plaintext); `None` in metadata written before
    /// it was recorded. A generation never mixes keys: a store whose key
    /// differs from this one is not resumed.
    pub key_check: Option<KeyCheck>,
}

/// The metadata folder of one database.
pub struct StateDir {
    root: PathBuf,
    /// `state.db`, opened when first needed and closed by
    /// [`StateDir::release`] while the database is idle (three descriptors
    /// per database in a process replicating a thousand).
    db: RefCell<Option<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS capture (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    page_size INTEGER NOT NULL,
    commit_pages INTEGER NOT NULL,
    checksum INTEGER NOT NULL,
    wal_salt1 INTEGER, wal_salt2 INTEGER, wal_frame INTEGER, wal_sum0 INTEGER, wal_sum1 INTEGER
);
CREATE TABLE IF NOT EXISTS page_hash (pgno INTEGER PRIMARY KEY, hash INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replica (
    url TEXT PRIMARY KEY,
    generation TEXT NOT NULL,
    captured_txid INTEGER NOT NULL,
    shipped_txid INTEGER NOT NULL,
    key_check INTEGER
);
CREATE TABLE IF NOT EXISTS host (id INTEGER PRIMARY KEY CHECK (id = 1), boot_id TEXT NOT NULL);
";

/// What a database's metadata folder adds to its name.
pub const FOLDER_SUFFIX: &str = "-distributary";

impl StateDir {
    /// The metadata folder of `db_path`: `<db_path>-distributary`.
    pub fn path_for(db_path: &Path) -> PathBuf {
        let mut name = db_path.as_os_str().to_owned();
        name.push(FOLDER_SUFFIX);
        PathBuf::from(name)
    }

    /// Opens (creating if needed) the metadata folder of `db_path`.
    pub fn open(db_path: &Path) -> Result<StateDir> {
        let root = StateDir::path_for(db_path);
        std::fs::create_dir_all(&root).with_context(|| {
            format!("create metadata folder {} (the database's folder must be writable)", root.display())
        })?;
        let state = StateDir { root, db: RefCell::new(None) };
        state.connection()?;
        Ok(state)
    }

    /// The open connection to `state.db`, opening (and on the first open,
    /// creating or upgrading) it if needed.
    fn connection(&self) -> Result<RefMut<'_, Connection>> {
        let mut db = self.db.borrow_mut();
        if db.is_none() {
            let path = self.root.join("state.db");
            let connection = Connection::open(&path).with_context(|| format!("open {}", path.display()))?;
            connection.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
            connection.execute_batch(SCHEMA).with_context(|| format!("initialise {}", path.display()))?;
            add_key_check_column(&connection).with_context(|| format!("upgrade {}", path.display()))?;
            *db = Some(connection);
        }
        Ok(RefMut::map(db, |db| db.as_mut().expect("opened above")))
    }

    /// Closes `state.db` until it is needed again.
    pub fn release(&self) {
        self.db.borrow_mut().take();
    }

    /// The folder of pending (captured, not yet uploaded) segments of a store.
    pub fn pending_dir(&self, url: &str) -> PathBuf {
        let digest = xxhash_rust::xxh3::xxh3_64(url.as_bytes());
        self.root.join(format!("pending-{digest:016x}"))
    }

    /// The capture state, `None` if nothing was captured yet (or the folder
    /// was deleted).
    pub fn capture(&self) -> Result<Option<CaptureState>> {
        self.connection()?
            .query_row(
                "SELECT page_size, commit_pages, checksum, wal_salt1, wal_salt2, wal_frame, wal_sum0, wal_sum1
                 FROM capture WHERE id = 1",
                [],
                |row| {
                    let salt1: Option<i64> = row.get(3)?;
                    let wal = match salt1 {
                        None => None,
                        Some(salt1) => Some(WalPosition {
                            salt1: salt1 as u32,
                            salt2: row.get::<_, i64>(4)? as u32,
                            frame: row.get::<_, i64>(5)? as u64,
                            checksum: (row.get::<_, i64>(6)? as u32, row.get::<_, i64>(7)? as u32),
                        }),
                    };
                    Ok(CaptureState {
                        page_size: row.get(0)?,
                        commit: row.get(1)?,
                        checksum: Checksum(row.get::<_, i64>(2)? as u64),
                        wal,
                    })
                },
            )
            .optional()
            .context("read capture state")
    }

    /// The state of every store known here.
    pub fn replicas(&self) -> Result<Vec<StoreProgress>> {
        let db = self.connection()?;
        let mut statement =
            db.prepare("SELECT url, generation, captured_txid, shipped_txid, key_check FROM replica ORDER BY url")?;
        let rows = statement.query_map([], |row| {
            let generation: String = row.get(1)?;
            let key_check: Option<i64> = row.get(4)?;
            Ok((row.get::<_, String>(0)?, generation, row.get::<_, i64>(2)?, row.get::<_, i64>(3)?, key_check))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (url, generation, captured, shipped, key_check) = row?;
            out.push(StoreProgress {
                url,
                generation: generation.parse().context("metadata names an invalid generation")?,
                captured_txid: TxId(captured as u64),
                shipped_txid: TxId(shipped as u64),
                key_check: key_check.map(|k| KeyCheck(k as u64)),
            });
        }
        Ok(out)
    }

    /// The hash of every page, by page number (1-based; index 0 unused).
    pub fn page_hashes(&self) -> Result<Vec<Option<u64>>> {
        let db = self.connection()?;
        let mut statement = db.prepare("SELECT pgno, hash FROM page_hash ORDER BY pgno")?;
        let mut out: Vec<Option<u64>> = vec![None];
        let rows = statement.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?;
        for row in rows {
            let (pgno, hash) = row?;
            let pgno = pgno as usize;
            if out.len() <= pgno {
                out.resize(pgno + 1, None);
            }
            out[pgno] = Some(hash as u64);
        }
        Ok(out)
    }

    /// Records one capture atomically: new capture state, changed page
    /// hashes, pages removed past the new size, and each store's new
    /// captured TXID.
    pub fn commit_capture(&mut self, update: &CaptureUpdate<'_>) -> Result<()> {
        let mut db = self.connection()?;
        let transaction = db.transaction()?;
        if update.replace_all_hashes {
            transaction.execute("DELETE FROM page_hash", [])?;
        }
        {
            let mut upsert =
                transaction.prepare_cached("INSERT OR REPLACE INTO page_hash (pgno, hash) VALUES (?1, ?2)")?;
            for (pgno, hash) in update.hashes {
                upsert.execute(params![pgno, *hash as i64])?;
            }
        }
        transaction.execute("DELETE FROM page_hash WHERE pgno > ?1", [update.state.commit])?;
        let wal = update.state.wal;
        transaction.execute(
            "INSERT OR REPLACE INTO capture
             (id, page_size, commit_pages, checksum, wal_salt1, wal_salt2, wal_frame, wal_sum0, wal_sum1)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                update.state.page_size,
                update.state.commit,
                update.state.checksum.0 as i64,
                wal.map(|w| i64::from(w.salt1)),
                wal.map(|w| i64::from(w.salt2)),
                wal.map(|w| w.frame as i64),
                wal.map(|w| i64::from(w.checksum.0)),
                wal.map(|w| i64::from(w.checksum.1)),
            ],
        )?;
        for replica in update.replicas {
            transaction.execute(
                "INSERT INTO replica (url, generation, captured_txid, shipped_txid, key_check)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (url) DO UPDATE SET generation = ?2, captured_txid = ?3, key_check = ?5,
                 -- the shippers record their progress themselves (set_shipped):
                 -- within a generation it only moves forward.
                 shipped_txid = CASE WHEN generation = ?2 THEN max(shipped_txid, ?4) ELSE ?4 END",
                params![
                    replica.url,
                    replica.generation.to_string(),
                    replica.captured_txid.0 as i64,
                    replica.shipped_txid.0 as i64,
                    replica.key_check.map(|k| k.0 as i64),
                ],
            )?;
        }
        transaction.commit().context("commit capture state")?;
        Ok(())
    }

    /// The boot of the machine the folder was last written in (`None`: not
    /// recorded, as in folders written before it was).
    pub fn boot_id(&self) -> Result<Option<String>> {
        self.connection()?
            .query_row("SELECT boot_id FROM host WHERE id = 1", [], |row| row.get(0))
            .optional()
            .context("read the recorded boot")
    }

    /// Records that the folder is written in `boot_id` from now on.
    pub fn set_boot_id(&self, boot_id: &str) -> Result<()> {
        self.connection()?.execute("INSERT OR REPLACE INTO host (id, boot_id) VALUES (1, ?1)", [boot_id])?;
        Ok(())
    }

    /// Records that a store now holds everything up to `shipped_txid`.
    pub fn set_shipped(&self, url: &str, shipped_txid: TxId) -> Result<()> {
        self.connection()?.execute(
            "UPDATE replica SET shipped_txid = max(shipped_txid, ?2) WHERE url = ?1",
            params![url, shipped_txid.0 as i64],
        )?;
        Ok(())
    }
}

/// Metadata written before the key check was recorded lacks its column;
/// its stores read as `key_check: None` and are not resumed blindly.
fn add_key_check_column(db: &Connection) -> Result<()> {
    let has_column: bool =
        db.query_row("SELECT count(*) FROM pragma_table_info('replica') WHERE name = 'key_check'", [], |row| {
            row.get::<_, i64>(0).map(|n| n > 0)
        })?;
    if !has_column {
        db.execute_batch("ALTER TABLE replica ADD COLUMN key_check INTEGER")?;
    }
    Ok(())
}

/// One capture to record with [`StateDir::commit_capture`].
pub struct CaptureUpdate<'a> {
    /// The new capture state.
    pub state: CaptureState,
    /// Pages whose hash changed (or appeared).
    pub hashes: &'a [(u32, u64)],
    /// Whether `hashes` is the complete map (a full resync).
    pub replace_all_hashes: bool,
    /// The stores' new states.
    pub replicas: &'a [StoreProgress],
}
