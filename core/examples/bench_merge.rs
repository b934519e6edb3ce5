//! Benchmark: k-way merge of many L0 segments from files, as the compactor
//! does. Prints throughput and peak RSS for several shapes, to show that
//! memory follows the number of inputs, not their size.
//!
//! Usage: `cargo run --release -p distributary-core --no-default-features --example bench_merge [-- --quick]`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
use distributary_core::format::{Compression, Flags, Header, KeyCheck, PageCodec, SegmentEncoder, SegmentReader};
use distributary_core::merge::merge;
use distributary_core::{Checksum, GenerationId, PageNo, TxId};

#[path = "support/peak_rss.rs"]
mod peak_rss;
use peak_rss::{peak_rss_kib, reset_peak_rss};

const PAGE_SIZE: usize = 4096;

struct Shape {
    segments: u32,
    pages_per_segment: u32,
    db_pages: u32,
}

const USAGE: &str = "Usage: bench_merge [--quick]\n\n\
    Merges 100 to 1,000 generated L0 segments per shape (--quick: one small shape)\n\
    and prints a table of throughput and peak RSS.";

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let shapes: Vec<Shape> = if quick {
        vec![Shape { segments: 100, pages_per_segment: 20, db_pages: 2_000 }]
    } else {
        vec![
            Shape { segments: 100, pages_per_segment: 100, db_pages: 20_000 },
            Shape { segments: 1_000, pages_per_segment: 25, db_pages: 20_000 },
            Shape { segments: 1_000, pages_per_segment: 100, db_pages: 20_000 },
            Shape { segments: 1_000, pages_per_segment: 400, db_pages: 100_000 },
        ]
    };
    println!("| inputs | pages/input | input MB | output MB | seconds | input MB/s | peak RSS MB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for shape in shapes {
        let dir = tempfile::tempdir()?;
        let input_bytes = generate(dir.path(), &shape)?;
        let (seconds, output_bytes, peak_rss) = run_merge(dir.path(), shape.segments)?;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |",
            shape.segments,
            shape.pages_per_segment,
            mb(input_bytes),
            mb(output_bytes),
            seconds,
            mb(input_bytes) / seconds,
            peak_rss as f64 / 1024.0
        );
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Writes `shape.segments` contiguous L0 segments, each rewriting
/// `pages_per_segment` pseudo-random pages of the database. Checksums form
/// a consistent chain (each page's hash is XORed out and in).
fn generate(dir: &Path, shape: &Shape) -> Result<u64> {
    let generation = GenerationId([1; 16]);
    let mut codec = PageCodec::new(generation, None, Compression::default())?;
    let mut checksum = Checksum(0x5eed);
    let mut total = 0;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut page = vec![0u8; PAGE_SIZE];
    for i in 0..shape.segments {
        let mut pgnos: Vec<u32> = (0..shape.pages_per_segment)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % u64::from(shape.db_pages)) as u32 + 1
            })
            .collect();
        pgnos.sort_unstable();
        pgnos.dedup();
        let txid = u64::from(i) + 2;
        let header = Header {
            flags: Flags(0),
            page_size: PAGE_SIZE as u32,
            commit: shape.db_pages,
            min_txid: TxId(txid),
            max_txid: TxId(txid),
            timestamp_ms: 1_700_000_000_000 + txid,
            pre_apply_checksum: checksum,
            generation,
            key_check: KeyCheck::NONE,
            compression: Compression::default().codecs(),
        };
        let file = BufWriter::new(File::create(dir.join(format!("{i:06}.seg")))?);
        let mut encoder = SegmentEncoder::new(format!("{i:06}.seg"), header, file)?;
        for pgno in pgnos {
            // Half text-like, half noise: compresses roughly like real pages.
            for (j, byte) in page.iter_mut().enumerate() {
                *byte = if j < PAGE_SIZE / 2 { b'a' + (j % 26) as u8 } else { (state >> (j % 56)) as u8 ^ j as u8 };
            }
            page[0..4].copy_from_slice(&i.to_be_bytes());
            checksum = checksum.toggle_page(PageNo(pgno), &page);
            encoder.write_page(&mut codec, PageNo(pgno), &page)?;
        }
        let (_, summary) = encoder.finish(checksum)?;
        total += summary.size;
    }
    Ok(total)
}

fn run_merge(dir: &Path, segments: u32) -> Result<(f64, u64, u64)> {
    reset_peak_rss();
    let start = Instant::now();
    let mut inputs = Vec::with_capacity(segments as usize);
    for i in 0..segments {
        let name = format!("{i:06}.seg");
        // A small buffer per input: merge memory is per input.
        let reader = BufReader::with_capacity(8 * 1024, File::open(dir.join(&name))?);
        inputs.push(SegmentReader::open(name, reader)?);
    }
    let out = BufWriter::new(File::create(dir.join("merged.seg"))?);
    let (_, summary) = merge("merged.seg", inputs, out)?;
    let seconds = start.elapsed().as_secs_f64();
    Ok((seconds, summary.size, peak_rss_kib()))
}
