//! The README's quick start for the foundation: a SQLite database in WAL
//! mode is captured page by page into a snapshot segment in a local-folder
//! store (`file://`), the manifest and snapshot index are published by
//! compare-and-swap, and a second copy of the database is rebuilt from the
//! store alone and verified (rolling checksum and `PRAGMA integrity_check`).
//!
//! Usage: `quickstart [DIR]` (default `./demo`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use distributary_core::checksum::{database_file_checksum, sqlite_page_size};
use distributary_core::format::{Compression, Flags, Header, KeyCheck, PageCodec, SegmentEncoder, SegmentReader};
use distributary_core::layout::{snapshot_index_key, snapshot_key};
use distributary_core::manifest::{
    MANIFEST_FORMAT_VERSION, Manifest, Position, SnapshotIndex, SnapshotRef, read_manifest, update_document,
    update_manifest,
};
use distributary_core::store::{Payload, PutMode, Store, StoreError, open};
use distributary_core::{Checksum, GenerationId, PageNo, TxId, clock};

#[tokio::main]
async fn main() -> Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "demo".into()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let db_path = dir.join("app.db");
    let store_url = format!("file://{}", dir.join("store").display());
    let store = open(&store_url).await?;

    let rows = write_app_database(&db_path)?;
    println!("app database   {} ({rows} rows, WAL mode)", db_path.display());

    let (generation, snapshot) = publish_snapshot(store.as_ref(), &db_path).await?;
    println!("store          {store_url}");
    println!("generation     {generation}");
    println!(
        "snapshot       {} ({} pages, {} bytes, checksum {})",
        snapshot_key(generation, snapshot.txid),
        snapshot.commit,
        snapshot.size,
        snapshot.checksum
    );

    let restored = dir.join("restored.db");
    let checksum = rebuild_from_store(store.as_ref(), &restored).await?;
    let (primary_checksum, _) = database_file_checksum(&db_path)?;
    ensure!(checksum == primary_checksum, "restored checksum {checksum} != primary {primary_checksum}");
    let connection = rusqlite::Connection::open(&restored)?;
    let integrity: String = connection.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    let count: i64 = connection.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    ensure!(integrity == "ok", "integrity_check: {integrity}");
    ensure!(count == rows, "restored {count} rows, expected {rows}");
    println!("restored       {} ({count} rows, checksum {checksum}, integrity_check ok)", restored.display());
    Ok(())
}

/// Creates (or extends) a small database in WAL mode and checkpoints it so
/// the main file holds every page.
fn write_app_database(path: &Path) -> Result<i64> {
    let connection = rusqlite::Connection::open(path)?;
    let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    ensure!(mode == "wal", "could not switch {} to WAL mode (got {mode})", path.display());
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, body TEXT NOT NULL);",
    )?;
    let transaction = connection.unchecked_transaction()?;
    for i in 0..1_000 {
        transaction.execute(
            "INSERT INTO events (at, body) VALUES (?1, ?2)",
            rusqlite::params![clock::now_ms() as i64, format!("event {i}: {}", "x".repeat(i % 200))],
        )?;
    }
    transaction.commit()?;
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(connection.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?)
}

/// Encodes every page of the database into a snapshot segment (streamed to a
/// temp file, then uploaded create-if-absent) and points a new generation's
/// manifest at it.
async fn publish_snapshot(store: &dyn Store, db_path: &Path) -> Result<(GenerationId, SnapshotRef)> {
    let mut file = BufReader::new(File::open(db_path)?);
    let mut header_bytes = [0u8; 100];
    file.read_exact(&mut header_bytes)?;
    let page_size = sqlite_page_size(&header_bytes).context("not a SQLite database")?;
    let pages = u32::try_from(std::fs::metadata(db_path)?.len() / u64::from(page_size))?;
    let now = clock::now_ms();
    let generation = GenerationId::new(now)?;
    let header = Header {
        flags: Flags(Flags::SNAPSHOT),
        page_size,
        commit: pages,
        min_txid: TxId(1),
        max_txid: TxId(1),
        timestamp_ms: now,
        pre_apply_checksum: Checksum::EMPTY,
        generation,
        key_check: KeyCheck::NONE,
    };
    let key = snapshot_key(generation, TxId(1));
    let temp = tempfile::NamedTempFile::new()?;
    let mut codec = PageCodec::new(generation, None, Compression::default())?;
    let mut encoder = SegmentEncoder::new(key.clone(), header, BufWriter::new(temp.reopen()?))?;
    let mut file = BufReader::new(File::open(db_path)?);
    let mut page = vec![0u8; page_size as usize];
    let mut checksum = Checksum::EMPTY;
    for pgno in 1..=pages {
        file.read_exact(&mut page)?;
        checksum = checksum.toggle_page(PageNo(pgno), &page);
        encoder.write_page(&mut codec, PageNo(pgno), &page)?;
    }
    let (_, summary) = encoder.finish(checksum)?;
    match store.put(&key, Payload::File(temp.path().to_path_buf()), PutMode::Create).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let snapshot = SnapshotRef { txid: TxId(1), timestamp_ms: now, size: summary.size, commit: pages, checksum };
    update_document(store, &snapshot_index_key(generation), |_: Option<&SnapshotIndex>| {
        Ok(Some(SnapshotIndex { format_version: MANIFEST_FORMAT_VERSION, generation, snapshots: vec![snapshot] }))
    })
    .await?;
    update_manifest(store, |_| {
        Ok(Some(Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            generation,
            page_size,
            key_check: None,
            newest: Position { txid: TxId(1), timestamp_ms: now, checksum },
            snapshot: Some(snapshot),
            l1: None,
            l0_min_txid: TxId(2),
            updated_ms: clock::now_ms(),
        }))
    })
    .await?;
    Ok((generation, snapshot))
}

/// Reads the manifest, downloads the snapshot it names, verifies it and
/// writes the pages to a new database file.
async fn rebuild_from_store(store: &dyn Store, out: &Path) -> Result<Checksum> {
    let Some(manifest) = read_manifest(store).await? else { bail!("the store has no manifest") };
    let manifest = manifest.value;
    let snapshot = manifest.snapshot.context("the manifest names no snapshot")?;
    let key = snapshot_key(manifest.generation, snapshot.txid);
    let (bytes, _) = store.get_bytes(&key).await?;
    let mut reader = SegmentReader::open(key.clone(), &bytes[..])?;
    let mut codec = PageCodec::new(reader.header().generation, None, Compression::default())?;
    let mut page = vec![0u8; reader.header().page_size as usize];
    let temp = out.with_extension("db.tmp");
    let mut writer = BufWriter::new(File::create(&temp)?);
    let mut checksum = Checksum::EMPTY;
    while let Some(pgno) = reader.next_page(&mut codec, &mut page)? {
        checksum = checksum.toggle_page(pgno, &page);
        std::io::Write::write_all(&mut writer, &page)?;
    }
    let trailer = *reader.trailer().context("segment not fully read")?;
    ensure!(trailer.post_apply_checksum == checksum, "{key}: post-apply checksum mismatch");
    writer.into_inner()?.sync_all()?;
    std::fs::rename(&temp, out)?;
    Ok(checksum)
}
