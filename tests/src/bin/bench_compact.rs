//! Benchmark: the compactor end to end on a local folder store. A database
//! of `--db-mb` MB (default 1,024) gets a genesis snapshot, then 1,000 L0
//! segments; one `compact` run merges them into L1 segments and a snapshot
//! of the whole database (the previous snapshot plus every L1), and the
//! table reports throughput (input bytes read by merges per second) and the
//! process's peak RSS during compaction.
//!
//! Usage: `cargo run --release -p distributary-tests --bin bench_compact -- [--db-mb N] [--segments N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use distributary_core::clock::ManualClock;
use distributary_core::compact::{CompactConfig, compact};
use distributary_core::format::{Compression, Flags, Header, KeyCheck, PageCodec, SegmentEncoder};
use distributary_core::layout::l0_key;
use distributary_core::layout::{snapshot_index_key, snapshot_key};
use distributary_core::manifest::{
    MANIFEST_FORMAT_VERSION, Manifest, Position, SnapshotIndex, SnapshotRef, update_document, update_manifest,
};
use distributary_core::store::{FileStore, Payload, PutMode, Store};
use distributary_core::{Checksum, GenerationId, PageNo, TxId};
use distributary_tests::synthetic::Rng;

#[path = "../../../core/examples/support/peak_rss.rs"]
mod peak_rss;
use peak_rss::{peak_rss_kib, reset_peak_rss};

const PAGE_SIZE: u32 = 4096;
const T0: u64 = 1_767_225_600_000;

fn arg(name: &str, default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).context("missing value")?.parse().with_context(|| format!("parse {name}")),
        None => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "Usage: bench_compact [--db-mb N] [--segments N]\n\n\
             Compacts a generated store (a database of N MB, default 1,024, then N L0\n\
             segments, default 1,000) in a folder under $BENCH_DIR (default /tmp) and\n\
             prints throughput and peak RSS."
        );
        return Ok(());
    }
    let db_mb = arg("--db-mb", 1_024)?;
    let segments = arg("--segments", 1_000)? as u32;
    let pages = (db_mb * 1_000_000 / u64::from(PAGE_SIZE)) as u32;
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("store")));
    let generation = GenerationId([3; 16]);

    // The genesis snapshot, streamed to a file (never the whole database in memory).
    let started = Instant::now();
    let (checksum, snapshot_size) = write_genesis(store.as_ref(), generation, pages, dir.path()).await?;
    let genesis_seconds = started.elapsed().as_secs_f64();

    // 1,000 L0 segments of 1 s each over ~17 minutes, 50 random pages apiece
    // (a database of this size sees writes scattered over it).
    let mut db = SparseDb { generation, versions: vec![0; pages as usize], checksum, txid: TxId(1), rng: Rng::new(7) };
    let mut l0_bytes = 0u64;
    for i in 0..segments {
        let (key, bytes) = db.next_l0(50, T0 + u64::from(i + 1) * 1_000)?;
        l0_bytes += bytes.len() as u64;
        store.put(&key, bytes.into(), PutMode::Create).await?;
    }

    let config = CompactConfig {
        l1_window: Duration::from_secs(60),
        // Due at the last window: one snapshot folds in all the segments.
        snapshot_interval: Duration::from_secs(u64::from(segments).saturating_sub(40)),
        temp_dir: Some(dir.path().to_path_buf()),
        ..CompactConfig::default()
    };
    let clock = ManualClock::new(T0 + u64::from(segments) * 1_000 + 180_000);
    reset_peak_rss();
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let report = compact(store.as_ref(), &config, &clock).await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak_rss_kib();
    // Merges read every L0 once (into L1), and the snapshot reads the previous
    // snapshot plus the L1 segments: bytes through the merge per second.
    let l1_bytes: u64 = list_size(store.as_ref(), &format!("{generation}/l1/")).await?;
    let snapshots_bytes: u64 = list_size(store.as_ref(), &format!("{generation}/snapshots/")).await?;
    let merged_input = l0_bytes + snapshot_size * u64::from(report.snapshots_created.min(1)) + l1_bytes;
    println!(
        "| database | L0 segments | L0 MB | L1 created | snapshots created | snapshot MB | compact seconds | merge input MB/s | peak RSS MB (before run) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.0} MB ({pages} pages of {PAGE_SIZE}) | {segments} | {:.1} | {} | {} | {:.0} | {seconds:.1} | {:.0} | {:.0} ({:.0}) |",
        db_mb as f64,
        l0_bytes as f64 / 1e6,
        report.l1_created,
        report.snapshots_created,
        (snapshots_bytes - snapshot_size) as f64 / 1e6,
        merged_input as f64 / 1e6 / seconds,
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    );
    eprintln!("(genesis snapshot of {:.0} MB written in {genesis_seconds:.1} s)", snapshot_size as f64 / 1e6);
    Ok(())
}

async fn list_size(store: &dyn Store, prefix: &str) -> Result<u64> {
    Ok(store.list(prefix).await?.iter().map(|m| m.size).sum())
}

/// Streams a snapshot of `pages` random pages to a file and uploads it, with
/// the index and manifest; returns the checksum and the snapshot's size.
async fn write_genesis(
    store: &dyn Store,
    generation: GenerationId,
    pages: u32,
    dir: &std::path::Path,
) -> Result<(Checksum, u64)> {
    let path = dir.join("genesis.seg");
    let key = snapshot_key(generation, TxId(1));
    let (checksum, size) = tokio::task::spawn_blocking({
        let (path, key) = (path.clone(), key.clone());
        move || -> Result<(Checksum, u64)> {
            let header = Header {
                flags: Flags(Flags::SNAPSHOT),
                page_size: PAGE_SIZE,
                commit: pages,
                min_txid: TxId(1),
                max_txid: TxId(1),
                timestamp_ms: T0,
                pre_apply_checksum: Checksum::EMPTY,
                generation,
                key_check: KeyCheck::NONE,
                compression: Compression::default().codecs(),
            };
            let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
            let mut encoder = SegmentEncoder::new(key, header, file)?;
            let mut codec = PageCodec::new(generation, None, Compression::default())?;
            let mut checksum = Checksum::EMPTY;
            let mut page = vec![0u8; PAGE_SIZE as usize];
            for pgno in 1..=pages {
                fill_page(pgno, 0, &mut page);
                checksum = checksum.toggle_page(PageNo(pgno), &page);
                encoder.write_page(&mut codec, PageNo(pgno), &page)?;
            }
            let (_, summary) = encoder.finish(checksum)?;
            Ok((checksum, summary.size))
        }
    })
    .await??;
    store.put(&key, Payload::File(path.clone()), PutMode::Create).await?;
    std::fs::remove_file(&path)?;
    let snapshot = SnapshotRef { txid: TxId(1), timestamp_ms: T0, size, commit: pages, checksum };
    update_document(store, &snapshot_index_key(generation), |_: Option<&SnapshotIndex>| {
        Ok(Some(SnapshotIndex { format_version: MANIFEST_FORMAT_VERSION, generation, snapshots: vec![snapshot] }))
    })
    .await?;
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        generation,
        page_size: PAGE_SIZE,
        key_check: None,
        newest: Position { txid: TxId(1), timestamp_ms: T0, checksum },
        snapshot: Some(snapshot),
        l1: None,
        l0_min_txid: TxId(2),
        l0_kept_min_txid: None,
        updated_ms: T0,
    };
    update_manifest(store, |_| Ok(Some(manifest.clone()))).await?;
    Ok((checksum, size))
}

/// Page `pgno` at `version`: regenerated on demand, so the benchmark holds a
/// 4-byte version per page instead of the database.
fn fill_page(pgno: u32, version: u32, page: &mut [u8]) {
    let mut rng = Rng::new((u64::from(pgno) << 32) | u64::from(version));
    // Half random, half zero: compresses about like real pages.
    let half = page.len() / 2;
    rng.fill(&mut page[..half]);
    page[half..].fill(0);
}

/// A database known by page versions only; each L0 rewrites random pages.
struct SparseDb {
    generation: GenerationId,
    versions: Vec<u32>,
    checksum: Checksum,
    txid: TxId,
    rng: Rng,
}

impl SparseDb {
    fn next_l0(&mut self, changes: u32, timestamp_ms: u64) -> Result<(String, Vec<u8>)> {
        let txid = self.txid.next();
        let mut pgnos: Vec<u32> = (0..changes).map(|_| self.rng.below(self.versions.len() as u64) as u32 + 1).collect();
        pgnos.sort_unstable();
        pgnos.dedup();
        let header = Header {
            flags: Flags(0),
            page_size: PAGE_SIZE,
            commit: self.versions.len() as u32,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms,
            pre_apply_checksum: self.checksum,
            generation: self.generation,
            key_check: KeyCheck::NONE,
            compression: Compression::default().codecs(),
        };
        let key = l0_key(self.generation, txid);
        let mut encoder = SegmentEncoder::new(key.clone(), header, Vec::new())?;
        let mut codec = PageCodec::new(self.generation, None, Compression::default())?;
        let (mut old, mut new) = (vec![0u8; PAGE_SIZE as usize], vec![0u8; PAGE_SIZE as usize]);
        for pgno in pgnos {
            let version = &mut self.versions[pgno as usize - 1];
            fill_page(pgno, *version, &mut old);
            *version += 1;
            fill_page(pgno, *version, &mut new);
            self.checksum = self.checksum.replace_page(PageNo(pgno), &old, &new);
            encoder.write_page(&mut codec, PageNo(pgno), &new)?;
        }
        let (bytes, _) = encoder.finish(self.checksum)?;
        self.txid = txid;
        Ok((key, bytes))
    }
}
