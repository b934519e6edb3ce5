//! Integration tests of the core library: segment round trips and
//! corruption, merge equivalence, and the store conformance suite on the
//! in-process backends (S3 and HTTP run in the `tests` crate, against a
//! real S3-compatible server).

use std::sync::Arc;

use distributary_core::checksum::page_hash;
use distributary_core::format::{
    Codecs, Compression, EncryptionKey, Flags, FormatError, Header, KeyCheck, PageCodec, SegmentEncoder, SegmentReader,
};
use distributary_core::merge::{MergeError, merge};
use distributary_core::store::{FileStore, MemoryStore, conformance};
use distributary_core::{Checksum, GenerationId, PageNo, TxId};
use proptest::prelude::*;

const PAGE: usize = 512;

fn generation() -> GenerationId {
    GenerationId([7; 16])
}

/// A database image: page `i` is `pages[i - 1]`.
type Image = Vec<Vec<u8>>;

fn checksum_of(image: &Image) -> Checksum {
    image.iter().enumerate().fold(Checksum::EMPTY, |c, (i, p)| c.toggle_page(PageNo(i as u32 + 1), p))
}

struct SegmentSpec {
    snapshot: bool,
    min_txid: u64,
    max_txid: u64,
    commit: u32,
    pre: Checksum,
    post: Checksum,
    pages: Vec<(u32, Vec<u8>)>,
}

fn encode(spec: &SegmentSpec, key: Option<&EncryptionKey>) -> Vec<u8> {
    encode_with(spec, key, Compression::default())
}

fn encode_with(spec: &SegmentSpec, key: Option<&EncryptionKey>, compression: Compression) -> Vec<u8> {
    let mut codec = PageCodec::new(generation(), key, compression).unwrap();
    let mut flags = if spec.snapshot { Flags::SNAPSHOT } else { 0 };
    if key.is_some() {
        flags |= Flags::ENCRYPTED;
    }
    let header = Header {
        flags: Flags(flags),
        page_size: PAGE as u32,
        commit: spec.commit,
        min_txid: TxId(spec.min_txid),
        max_txid: TxId(spec.max_txid),
        timestamp_ms: 1_700_000_000_000 + spec.max_txid,
        pre_apply_checksum: spec.pre,
        generation: generation(),
        key_check: codec.key_check(),
        compression: codec.compression().codecs(),
    };
    let mut encoder = SegmentEncoder::new("test.seg", header, Vec::new()).unwrap();
    for (pgno, page) in &spec.pages {
        encoder.write_page(&mut codec, PageNo(*pgno), page).unwrap();
    }
    encoder.finish(spec.post).unwrap().0
}

/// Applies a segment to an image the way a replica does: verify the
/// pre-apply checksum (unless a snapshot), write pages, resize to commit,
/// verify the post-apply checksum.
fn apply(image: &mut Image, bytes: &[u8], key: Option<&EncryptionKey>) -> Result<(), String> {
    let mut reader = SegmentReader::open("apply.seg", bytes).map_err(|e| e.to_string())?;
    let header = reader.header().clone();
    if !header.flags.snapshot() && checksum_of(image) != header.pre_apply_checksum {
        return Err("pre-apply checksum mismatch".into());
    }
    let mut codec = PageCodec::new(header.generation, key, Compression::default()).unwrap();
    let mut page = vec![0u8; PAGE];
    let mut next = image.clone();
    next.resize(header.commit as usize, vec![0u8; PAGE]);
    while let Some(pgno) = reader.next_page(&mut codec, &mut page).map_err(|e| e.to_string())? {
        next[pgno.0 as usize - 1] = page.clone();
    }
    let trailer = *reader.trailer().unwrap();
    if checksum_of(&next) != trailer.post_apply_checksum {
        return Err("post-apply checksum mismatch".into());
    }
    *image = next;
    Ok(())
}

fn page_of(fill: u8, salt: u32) -> Vec<u8> {
    // Half repetitive, half varied: compressible like real pages.
    (0..PAGE).map(|i| if i < PAGE / 2 { fill } else { (i as u32 ^ salt).wrapping_mul(31) as u8 }).collect()
}

/// One transaction: a new size and pages rewritten.
#[derive(Clone, Debug)]
struct Txn {
    commit: u32,
    writes: Vec<(u32, u8)>,
}

fn txn_strategy() -> impl Strategy<Value = Txn> {
    (1u32..24, prop::collection::vec((1u32..24, any::<u8>()), 0..8)).prop_map(|(commit, writes)| Txn { commit, writes })
}

/// Builds the history: an initial snapshot (TXID 1) and one L0 segment per
/// transaction, following the producer rule of FORMAT.md §3.7 (pages that
/// appear when the file grows are in the segment).
fn history(initial: u32, txns: &[Txn], key: Option<&EncryptionKey>) -> (Vec<Vec<u8>>, Vec<Image>) {
    let mut image: Image = (1..=initial).map(|p| page_of(p as u8, p)).collect();
    let mut states = vec![image.clone()];
    let snapshot = SegmentSpec {
        snapshot: true,
        min_txid: 1,
        max_txid: 1,
        commit: initial,
        pre: Checksum::EMPTY,
        post: checksum_of(&image),
        pages: image.iter().enumerate().map(|(i, p)| (i as u32 + 1, p.clone())).collect(),
    };
    let mut segments = vec![encode(&snapshot, key)];
    for (n, txn) in txns.iter().enumerate() {
        let txid = n as u64 + 2;
        let pre = checksum_of(&image);
        let old_len = image.len() as u32;
        image.resize(txn.commit as usize, vec![0u8; PAGE]);
        let mut changed = std::collections::BTreeMap::new();
        for pgno in old_len + 1..=txn.commit {
            let page = page_of(0xEE, pgno ^ txid as u32);
            image[pgno as usize - 1] = page.clone();
            changed.insert(pgno, page);
        }
        for (pgno, fill) in &txn.writes {
            if *pgno <= txn.commit {
                let page = page_of(*fill, *pgno);
                image[*pgno as usize - 1] = page.clone();
                changed.insert(*pgno, page);
            }
        }
        let spec = SegmentSpec {
            snapshot: false,
            min_txid: txid,
            max_txid: txid,
            commit: txn.commit,
            pre,
            post: checksum_of(&image),
            pages: changed.into_iter().collect(),
        };
        segments.push(encode(&spec, key));
        states.push(image.clone());
    }
    (segments, states)
}

fn merge_bytes(inputs: &[Vec<u8>]) -> Result<Vec<u8>, MergeError> {
    let readers = inputs
        .iter()
        .enumerate()
        .map(|(i, bytes)| SegmentReader::open(format!("in-{i}.seg"), &bytes[..]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(merge("merged.seg", readers, Vec::new())?.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Encoding then decoding returns the header, every page and the
    /// checksums, with and without encryption.
    #[test]
    fn encode_decode_round_trip(
        pages in prop::collection::btree_map(1u32..200, any::<u8>(), 0..40),
        extra in 0u32..10,
        encrypted in any::<bool>(),
    ) {
        let key = encrypted.then(|| EncryptionKey::from_bytes([3; 32]));
        let commit = pages.keys().last().copied().unwrap_or(0) + extra;
        let spec = SegmentSpec {
            snapshot: false, min_txid: 5, max_txid: 9, commit,
            pre: Checksum(11), post: Checksum(22),
            pages: pages.iter().map(|(p, f)| (*p, page_of(*f, *p))).collect(),
        };
        let bytes = encode(&spec, key.as_ref());
        let mut reader = SegmentReader::open("rt.seg", &bytes[..]).unwrap();
        prop_assert_eq!(reader.header().commit, commit);
        prop_assert_eq!(reader.header().range().min_txid, TxId(5));
        let mut codec = PageCodec::new(generation(), key.as_ref(), Compression::default()).unwrap();
        let mut page = vec![0u8; PAGE];
        let mut decoded = Vec::new();
        while let Some(pgno) = reader.next_page(&mut codec, &mut page).unwrap() {
            decoded.push((pgno.0, page.clone()));
        }
        prop_assert_eq!(decoded, spec.pages);
        prop_assert_eq!(reader.trailer().unwrap().post_apply_checksum, Checksum(22));
    }

    /// Applying merge(a..n) equals applying a..n in order: from empty for a
    /// run starting at the snapshot, and from the state before the run for
    /// any later sub-run.
    #[test]
    fn merge_equals_sequential_apply(
        initial in 1u32..16,
        txns in prop::collection::vec(txn_strategy(), 1..12),
        split in any::<prop::sample::Index>(),
        encrypted in any::<bool>(),
    ) {
        let key = encrypted.then(|| EncryptionKey::from_bytes([9; 32]));
        let (segments, states) = history(initial, &txns, key.as_ref());

        let mut sequential = Image::new();
        for segment in &segments {
            apply(&mut sequential, segment, key.as_ref()).unwrap();
        }
        prop_assert_eq!(&sequential, states.last().unwrap());

        let merged = merge_bytes(&segments).unwrap();
        let mut from_merge = Image::new();
        apply(&mut from_merge, &merged, key.as_ref()).unwrap();
        prop_assert_eq!(&from_merge, states.last().unwrap());

        // A sub-run [start..] applied to the state just before it.
        let start = 1 + split.index(segments.len() - 1);
        let merged_tail = merge_bytes(&segments[start..]).unwrap();
        let mut image = states[start - 1].clone();
        apply(&mut image, &merged_tail, key.as_ref()).unwrap();
        prop_assert_eq!(&image, states.last().unwrap());
    }

    /// The decoder never panics, whatever the bytes, and either fails or
    /// reads to the trailer.
    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(mut reader) = SegmentReader::open("fuzz.seg", &bytes[..]) {
            while let Ok(Some(_)) = reader.next_frame() {}
        }
    }

    /// Nor on a valid segment with random bytes overwritten.
    #[test]
    fn decoder_never_panics_on_damaged_segments(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (segments, _) = history(4, &[Txn { commit: 6, writes: vec![(2, 1)] }], None);
        let mut bytes = segments[1].clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(mut reader) = SegmentReader::open("damaged.seg", &bytes[..]) {
            while let Ok(Some(_)) = reader.next_frame() {}
        }
    }
}

fn read_fully(bytes: &[u8], key: Option<&EncryptionKey>) -> Result<(), FormatError> {
    let mut reader = SegmentReader::open("l0/0000000000000002.seg", bytes)?;
    let mut codec = PageCodec::new(reader.header().generation, key, Compression::default()).unwrap();
    let mut page = vec![0u8; PAGE];
    while reader.next_page(&mut codec, &mut page)?.is_some() {}
    Ok(())
}

#[test]
fn every_single_bit_flip_is_detected_and_names_the_segment() {
    for key in [None, Some(EncryptionKey::from_bytes([1; 32]))] {
        let (segments, _) = history(3, &[Txn { commit: 5, writes: vec![(1, 9), (3, 4)] }], key.as_ref());
        let bytes = &segments[1];
        read_fully(bytes, key.as_ref()).unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let err = read_fully(&flipped, key.as_ref()).expect_err(&format!("flip of bit {bit} went unnoticed"));
            assert!(err.to_string().contains("l0/0000000000000002.seg"), "bit {bit}: {err}");
        }
    }
}

#[test]
fn truncation_and_trailing_bytes_are_detected() {
    let (segments, _) = history(3, &[], None);
    let bytes = &segments[0];
    for len in [0, 10, 95, 96, bytes.len() / 2, bytes.len() - 1] {
        assert!(read_fully(&bytes[..len], None).is_err(), "truncated to {len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    // Read through a SegmentReader (what sync, restore and compaction use),
    // the byte is refused by name once the trailer checks out.
    let err = read_fully(&longer, None).expect_err("a byte after the trailer was accepted");
    assert!(
        err.to_string().contains("l0/0000000000000002.seg") && err.to_string().contains("after the trailer"),
        "{err}"
    );
    // The trailer is read and verified; the extra byte is refused after it.
    let mut decoder = distributary_core::format::SegmentDecoder::new("x.seg");
    decoder.push(&longer);
    decoder.finish_input();
    let mut result = Ok(None);
    for _ in 0..100 {
        result = decoder.next_event();
        if result.is_err() {
            break;
        }
    }
    assert!(result.unwrap_err().to_string().contains("after the trailer"));
}

#[test]
fn a_wrong_key_is_reported_as_a_wrong_key() {
    let right = EncryptionKey::from_bytes([1; 32]);
    let wrong = EncryptionKey::from_bytes([2; 32]);
    let (segments, _) = history(3, &[], Some(&right));
    let err = read_fully(&segments[0], Some(&wrong)).unwrap_err();
    assert!(matches!(err, FormatError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("wrong encryption key"), "{err}");
    let err = read_fully(&segments[0], None).unwrap_err();
    assert!(err.to_string().contains("no encryption key is configured"), "{err}");
    read_fully(&segments[0], Some(&right)).unwrap();
}

#[test]
fn encoder_refuses_misuse_precisely() {
    let header = Header {
        flags: Flags(Flags::SNAPSHOT),
        page_size: PAGE as u32,
        commit: 3,
        min_txid: TxId(1),
        max_txid: TxId(1),
        timestamp_ms: 0,
        pre_apply_checksum: Checksum::EMPTY,
        generation: generation(),
        key_check: KeyCheck::NONE,
        compression: Compression::default().codecs(),
    };
    let mut codec = PageCodec::new(generation(), None, Compression::default()).unwrap();
    let mut encoder = SegmentEncoder::new("misuse.seg", header.clone(), Vec::new()).unwrap();
    encoder.write_page(&mut codec, PageNo(2), &[0; PAGE]).unwrap();
    let err = encoder.write_page(&mut codec, PageNo(2), &[0; PAGE]).unwrap_err().to_string();
    assert!(err.contains("strictly increasing"), "{err}");
    let err = encoder.write_page(&mut codec, PageNo(4), &[0; PAGE]).unwrap_err().to_string();
    assert!(err.contains("past the database size"), "{err}");
    let err = encoder.write_page(&mut codec, PageNo(3), &[0; 100]).unwrap_err().to_string();
    assert!(err.contains("page size"), "{err}");
    let err = encoder.finish(Checksum::EMPTY).unwrap_err().to_string();
    assert!(err.contains("snapshot holds 1 pages but commit is 3"), "{err}");
    let bad = Header { min_txid: TxId(0), ..header.clone() };
    let err = SegmentEncoder::new("misuse.seg", bad, Vec::new()).err().unwrap().to_string();
    assert!(err.contains("min_txid is 0"), "{err}");
    let zstd_only = Header { compression: Codecs(Codecs::ZSTD), ..header };
    let mut encoder = SegmentEncoder::new("misuse.seg", zstd_only, Vec::new()).unwrap();
    let err = encoder.write_page(&mut codec, PageNo(1), &[0; PAGE]).unwrap_err().to_string();
    assert!(err.contains("compresses with lz4, which the header's compression byte does not list"), "{err}");
}

/// A store whose writer changed codec: a merge copies both kinds of frame,
/// says so in its header, and applies like the inputs one by one.
#[test]
fn segments_of_both_codecs_merge_and_apply() {
    let base = vec![page_of(1, 1), page_of(2, 2), page_of(3, 3)];
    let mut changed = base.clone();
    changed[1] = page_of(9, 9);
    let snapshot = SegmentSpec {
        snapshot: true,
        min_txid: 1,
        max_txid: 1,
        commit: 3,
        pre: Checksum::EMPTY,
        post: checksum_of(&base),
        pages: base.iter().enumerate().map(|(i, p)| (i as u32 + 1, p.clone())).collect(),
    };
    let change = SegmentSpec {
        snapshot: false,
        min_txid: 2,
        max_txid: 2,
        commit: 3,
        pre: checksum_of(&base),
        post: checksum_of(&changed),
        pages: vec![(2, changed[1].clone())],
    };
    for key in [None, Some(EncryptionKey::from_bytes([3; 32]))] {
        let old = encode_with(&snapshot, key.as_ref(), Compression::Zstd { level: 3 });
        let new = encode_with(&change, key.as_ref(), Compression::Lz4);
        let merged = merge_bytes(&[old.clone(), new.clone()]).unwrap();
        let header = SegmentReader::open("merged.seg", &merged[..]).unwrap().header().clone();
        assert_eq!(header.compression, Codecs(Codecs::ZSTD | Codecs::LZ4));
        let mut image = Image::new();
        apply(&mut image, &merged, key.as_ref()).unwrap();
        assert_eq!(image, changed);
    }
}

#[test]
fn an_unknown_codec_bit_is_refused_before_any_frame() {
    let spec = SegmentSpec {
        snapshot: true,
        min_txid: 1,
        max_txid: 1,
        commit: 1,
        pre: Checksum::EMPTY,
        post: checksum_of(&vec![page_of(1, 1)]),
        pages: vec![(1, page_of(1, 1))],
    };
    let mut bytes = encode(&spec, None);
    bytes[72] |= 0x04;
    let checksum = xxhash_rust::xxh3::xxh3_64(&bytes[..88]);
    bytes[88..96].copy_from_slice(&checksum.to_be_bytes());
    let err = SegmentReader::open("future.seg", &bytes[..]).err().unwrap().to_string();
    assert!(err.contains("future.seg") && err.contains("unknown compression 0x06 at offset 72"), "{err}");
}

#[test]
fn merge_refuses_gaps_and_mixed_databases() {
    let txns = vec![Txn { commit: 4, writes: vec![(1, 1)] }, Txn { commit: 4, writes: vec![(2, 2)] }];
    let (segments, _) = history(3, &txns, None);
    let err = merge_bytes(&[segments[0].clone(), segments[2].clone()]).unwrap_err().to_string();
    assert!(err.contains("not contiguous"), "{err}");
    let (encrypted, _) = history(3, &txns, Some(&EncryptionKey::from_bytes([4; 32])));
    let err = merge_bytes(&[segments[0].clone(), encrypted[1].clone()]).unwrap_err().to_string();
    assert!(err.contains("different keys"), "{err}");
    assert!(matches!(merge_bytes(&[]), Err(MergeError::Empty)));
}

#[test]
fn merge_refuses_a_broken_checksum_chain() {
    let (segments, states) = history(3, &[Txn { commit: 3, writes: vec![(1, 1)] }], None);
    // Same range and pages as segments[1], but claiming another pre-state.
    let forged = SegmentSpec {
        snapshot: false,
        min_txid: 2,
        max_txid: 2,
        commit: 3,
        pre: Checksum(12345),
        post: checksum_of(&states[1]),
        pages: vec![(1, page_of(1, 1))],
    };
    let err = merge_bytes(&[segments[0].clone(), encode(&forged, None)]).unwrap_err().to_string();
    assert!(err.contains("checksum chain broken"), "{err}");
}

#[test]
fn page_hash_is_seeded_by_page_number() {
    let page = [5u8; PAGE];
    assert_ne!(page_hash(PageNo(1), &page), page_hash(PageNo(2), &page));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(Arc::new(FileStore::new(dir.path().join("store")))).await;
    // Temp and lock files never show up as objects.
    let store = FileStore::new(dir.path().join("store"));
    let listed = distributary_core::store::Store::list(&store, "").await.unwrap();
    assert!(listed.iter().all(|m| !m.key.split('/').any(|p| p.starts_with('.'))), "{listed:?}");
}
