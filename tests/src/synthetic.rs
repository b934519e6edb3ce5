//! Synthetic databases for compactor tests and benchmarks: a generation's
//! genesis (snapshot at TXID 1, index, manifest) and L0 segments with random
//! page content and a consistent rolling checksum, written the way the
//! replicator writes them. And the other end: restoring a snapshot and its
//! chain with core's decoder, recomputing the checksum page by page.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use distributary_core::format::{
    Compression, EncryptionKey, Flags, Header, KeyCheck, PageCodec, SegmentEncoder, SegmentReader, read_segment_header,
};
use distributary_core::layout::{l0_key, l1_key, snapshot_index_key, snapshot_key};
use distributary_core::manifest::{
    MANIFEST_FORMAT_VERSION, Manifest, Position, SnapshotIndex, SnapshotRef, read_manifest, read_snapshot_index,
    update_document, update_manifest,
};
use distributary_core::store::{ByteRange, PutMode, Store};
use distributary_core::{Checksum, GenerationId, PageNo, TxId};

/// A small deterministic random number generator (xorshift64*), so two
/// stores can be fed byte-identical histories.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// One object to write: its key and bytes.
pub type Object = (String, Vec<u8>);

/// A simulated primary: the database's pages, its checksum history, and an
/// encoder for the segments the replicator would ship.
pub struct SyntheticDb {
    /// The lineage.
    pub generation: GenerationId,
    /// Page size in bytes.
    pub page_size: u32,
    pages: Vec<Vec<u8>>,
    checksum: Checksum,
    txid: TxId,
    /// Checksum after every TXID that ended a segment.
    pub history: BTreeMap<TxId, Checksum>,
    key: Option<EncryptionKey>,
    rng: Rng,
}

impl SyntheticDb {
    /// A database of `pages` random pages of `page_size` bytes, sealed with
    /// `key` if given; randomness from `seed`.
    pub fn new(generation: GenerationId, page_size: u32, pages: u32, key: Option<EncryptionKey>, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut db = SyntheticDb {
            generation,
            page_size,
            pages: Vec::new(),
            checksum: Checksum::EMPTY,
            txid: TxId::ZERO,
            history: BTreeMap::new(),
            key,
            rng: rng.clone(),
        };
        for _ in 0..pages {
            let page = random_page(&mut rng, page_size);
            db.checksum = db.checksum.toggle_page(PageNo(db.pages.len() as u32 + 1), &page);
            db.pages.push(page);
        }
        db.rng = rng;
        db
    }

    /// The newest TXID.
    pub fn txid(&self) -> TxId {
        self.txid
    }

    /// The checksum at the newest TXID.
    pub fn checksum(&self) -> Checksum {
        self.checksum
    }

    fn codec(&self) -> PageCodec {
        PageCodec::new(self.generation, self.key.as_ref(), Compression::default()).expect("zstd initialises")
    }

    fn key_check(&self) -> KeyCheck {
        self.key.as_ref().map_or(KeyCheck::NONE, EncryptionKey::check)
    }

    /// The genesis objects of the generation, as the replicator writes them:
    /// the snapshot at TXID 1 (pre-apply checksum 0), committed at `now_ms`.
    pub fn genesis(&mut self, now_ms: u64) -> Result<(Object, SnapshotRef)> {
        ensure!(self.txid == TxId::ZERO, "genesis comes first");
        self.txid = TxId(1);
        let header = self.header(true, TxId(1), TxId(1), now_ms, Checksum::EMPTY);
        let key = snapshot_key(self.generation, TxId(1));
        let mut codec = self.codec();
        let mut encoder = SegmentEncoder::new(key.clone(), header, Vec::new())?;
        for (i, page) in self.pages.iter().enumerate() {
            encoder.write_page(&mut codec, PageNo(i as u32 + 1), page)?;
        }
        let (bytes, summary) = encoder.finish(self.checksum)?;
        self.history.insert(TxId(1), self.checksum);
        let snapshot = SnapshotRef {
            txid: TxId(1),
            timestamp_ms: now_ms,
            size: summary.size,
            commit: self.pages.len() as u32,
            checksum: self.checksum,
        };
        Ok(((key, bytes), snapshot))
    }

    /// Writes the genesis snapshot, the snapshot index and the manifest to
    /// `store`, as the replicator does when it starts a generation.
    pub async fn create_generation(&mut self, store: &dyn Store, now_ms: u64) -> Result<()> {
        let ((key, bytes), snapshot) = self.genesis(now_ms)?;
        store.put(&key, bytes.into(), PutMode::Create).await?;
        let generation = self.generation;
        update_document(store, &snapshot_index_key(generation), |_: Option<&SnapshotIndex>| {
            Ok(Some(SnapshotIndex { format_version: MANIFEST_FORMAT_VERSION, generation, snapshots: vec![snapshot] }))
        })
        .await?;
        let manifest = self.genesis_manifest(snapshot, now_ms);
        update_manifest(store, |_| Ok(Some(manifest.clone()))).await?;
        Ok(())
    }

    /// The manifest of a fresh generation.
    pub fn genesis_manifest(&self, snapshot: SnapshotRef, now_ms: u64) -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            generation: self.generation,
            page_size: self.page_size,
            key_check: self.key.as_ref().map(EncryptionKey::check),
            newest: Position { txid: TxId(1), timestamp_ms: now_ms, checksum: snapshot.checksum },
            snapshot: Some(snapshot),
            l1: None,
            l0_min_txid: TxId(2),
            l0_kept_min_txid: None,
            updated_ms: now_ms,
        }
    }

    /// The next L0 segment: `transactions` TXIDs committed by `timestamp_ms`,
    /// rewriting up to `changes` random pages, sometimes growing or shrinking
    /// the file. Follows the producer rule: every page whose content differs
    /// between the states before and after is in the segment.
    pub fn next_l0(&mut self, transactions: u64, changes: u32, timestamp_ms: u64) -> Result<Object> {
        ensure!(self.txid >= TxId(1), "call genesis first");
        let min_txid = self.txid.next();
        let max_txid = TxId(self.txid.0 + transactions.max(1));
        let pre_apply = self.checksum;
        let old_len = self.pages.len() as u32;
        let mut new_len = old_len;
        match self.rng.below(10) {
            0 if old_len > 4 => new_len = old_len - 1 - self.rng.below(2) as u32,
            1 => new_len = old_len + 1 + self.rng.below(3) as u32,
            _ => {}
        }
        // Shrink: pages past the new end leave the checksum.
        while self.pages.len() as u32 > new_len {
            let pgno = PageNo(self.pages.len() as u32);
            let page = self.pages.pop().expect("len > new_len >= 0");
            self.checksum = self.checksum.toggle_page(pgno, &page);
        }
        let mut changed: std::collections::BTreeSet<u32> = (0..changes.min(new_len))
            .map(|_| self.rng.below(u64::from(new_len.min(old_len).max(1))) as u32 + 1)
            .filter(|&p| p <= new_len)
            .collect();
        // Grow: every new page is in the segment.
        changed.extend(old_len + 1..=new_len);
        for &pgno in &changed {
            let page = random_page(&mut self.rng, self.page_size);
            let index = pgno as usize - 1;
            if index < self.pages.len() {
                self.checksum = self.checksum.replace_page(PageNo(pgno), &self.pages[index], &page);
                self.pages[index] = page;
            } else {
                self.checksum = self.checksum.toggle_page(PageNo(pgno), &page);
                self.pages.push(page);
            }
        }
        let header = self.header(false, min_txid, max_txid, timestamp_ms, pre_apply);
        let key = l0_key(self.generation, min_txid);
        let mut codec = self.codec();
        let mut encoder = SegmentEncoder::new(key.clone(), header, Vec::new())?;
        for &pgno in &changed {
            encoder.write_page(&mut codec, PageNo(pgno), &self.pages[pgno as usize - 1])?;
        }
        let (bytes, _) = encoder.finish(self.checksum)?;
        self.txid = max_txid;
        self.history.insert(max_txid, self.checksum);
        Ok((key, bytes))
    }

    fn header(&self, snapshot: bool, min_txid: TxId, max_txid: TxId, timestamp_ms: u64, pre: Checksum) -> Header {
        let mut flags = if snapshot { Flags::SNAPSHOT } else { 0 };
        if self.key.is_some() {
            flags |= Flags::ENCRYPTED;
        }
        Header {
            flags: Flags(flags),
            page_size: self.page_size,
            commit: self.pages.len() as u32,
            min_txid,
            max_txid,
            timestamp_ms,
            pre_apply_checksum: pre,
            generation: self.generation,
            key_check: self.key_check(),
            compression: Compression::default().codecs(),
        }
    }
}

fn random_page(rng: &mut Rng, page_size: u32) -> Vec<u8> {
    let mut page = vec![0u8; page_size as usize];
    // Half random, half repetitive: compresses like real pages, and random
    // enough that no two versions of a page collide.
    rng.fill(&mut page[..page_size as usize / 2]);
    page
}

/// Writes `object` with create-if-absent (a duplicate is fine: same bytes).
pub async fn put(store: &dyn Store, object: &Object) -> Result<()> {
    match store.put(&object.0, object.1.clone().into(), PutMode::Create).await {
        Ok(_) => Ok(()),
        Err(distributary_core::store::StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A database image being restored, with its recomputed checksum.
struct Image {
    pages: Vec<Vec<u8>>,
    txid: TxId,
}

impl Image {
    fn checksum(&self) -> Checksum {
        self.pages.iter().enumerate().fold(Checksum::EMPTY, |c, (i, p)| c.toggle_page(PageNo(i as u32 + 1), p))
    }
}

/// Applies segment `key` to `image` (or starts it, for a snapshot), checking
/// every verification rule a reader checks, and returns the header.
async fn apply(store: &dyn Store, key: &str, image: &mut Option<Image>, codec: &mut PageCodec) -> Result<Header> {
    let (bytes, _) = store.get_bytes(key).await.with_context(|| format!("get {key}"))?;
    let mut reader = SegmentReader::open(key.to_string(), &bytes[..])?;
    let header = reader.header().clone();
    let page_size = header.page_size as usize;
    let mut page = vec![0u8; page_size];
    let mut writes = Vec::new();
    while let Some(pgno) = reader.next_page(codec, &mut page)? {
        writes.push((pgno, page.clone()));
    }
    let trailer = *reader.trailer().expect("fully read");
    match image {
        None => {
            ensure!(header.flags.snapshot(), "{key}: a restore starts from a snapshot");
            *image = Some(Image { pages: Vec::new(), txid: TxId::ZERO });
        }
        Some(current) => {
            ensure!(
                header.min_txid <= current.txid.next() && current.txid <= header.max_txid,
                "{key}: covers {} but the image is at {}",
                header.range(),
                current.txid
            );
            if header.min_txid == current.txid.next() {
                ensure!(
                    header.pre_apply_checksum == current.checksum(),
                    "{key}: pre-apply checksum {} but the image has {}",
                    header.pre_apply_checksum,
                    current.checksum()
                );
            }
        }
    }
    let current = image.as_mut().expect("set above");
    current.pages.resize(header.commit as usize, vec![0u8; page_size]);
    for (pgno, page) in writes {
        current.pages[pgno.0 as usize - 1] = page;
    }
    current.txid = header.max_txid;
    let computed = current.checksum();
    ensure!(
        computed == trailer.post_apply_checksum,
        "{key}: post-apply checksum {} but the restored image has {computed}",
        trailer.post_apply_checksum
    );
    Ok(header)
}

/// Restores snapshot `txid` alone; returns the recomputed checksum.
pub async fn restore_snapshot(
    store: &dyn Store,
    generation: GenerationId,
    txid: TxId,
    key: Option<&EncryptionKey>,
) -> Result<Checksum> {
    let mut codec = PageCodec::new(generation, key, Compression::default())?;
    let mut image = None;
    let snapshot = snapshot_key(generation, txid);
    let header = apply(store, &snapshot, &mut image, &mut codec).await?;
    ensure!(header.max_txid == txid, "{snapshot} ends at {}", header.max_txid);
    Ok(image.expect("applied").checksum())
}

/// Restores from snapshot `from` through the L1 chain and then the L0 chain,
/// by name, as far as they go; returns the final TXID and recomputed
/// checksum. Fails on any gap or checksum mismatch.
pub async fn restore_chain(
    store: &dyn Store,
    generation: GenerationId,
    from: TxId,
    key: Option<&EncryptionKey>,
) -> Result<(TxId, Checksum)> {
    let mut codec = PageCodec::new(generation, key, Compression::default())?;
    let mut image = None;
    apply(store, &snapshot_key(generation, from), &mut image, &mut codec).await?;
    let mut txid = from;
    loop {
        let next = txid.next();
        let l1 = l1_key(generation, next);
        let l0 = l0_key(generation, next);
        let key = if exists(store, &l1).await? {
            l1
        } else if exists(store, &l0).await? {
            l0
        } else {
            break;
        };
        txid = apply(store, &key, &mut image, &mut codec).await?.max_txid;
    }
    let image = image.expect("applied");
    Ok((image.txid, image.checksum()))
}

async fn exists(store: &dyn Store, key: &str) -> Result<bool> {
    match store.head(key).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Checks that every object the manifest references exists and fits: the
/// newest snapshot, the L1 chain from `l1.min_txid` to `l1.max_txid` by name,
/// and the L0 chain from `l0_min_txid` up to `newest`. Returns the manifest.
///
/// With compactions running meanwhile, the manifest read first may be
/// replaced (and what only it named deleted by retention) before the check
/// ends; a failure counts only when the manifest did not change during the
/// check, since readers too start over from a fresh manifest.
pub async fn check_references(store: &dyn Store) -> Result<Manifest> {
    const ATTEMPTS: usize = 50;
    let mut attempt = 0;
    loop {
        let read = read_manifest(store).await?.context("no manifest")?;
        let failure = match check_manifest_references(store, &read.value).await {
            Ok(()) => return Ok(read.value),
            Err(failure) => failure,
        };
        let now = read_manifest(store).await?.context("no manifest")?;
        attempt += 1;
        if now.etag == read.etag {
            return Err(failure.context("the manifest did not change during the check"));
        }
        if attempt == ATTEMPTS {
            return Err(failure.context(format!("the manifest changed during each of {ATTEMPTS} checks")));
        }
    }
}

async fn check_manifest_references(store: &dyn Store, manifest: &Manifest) -> Result<()> {
    let generation = manifest.generation;
    if let Some(snapshot) = manifest.snapshot {
        let key = snapshot_key(generation, snapshot.txid);
        let meta = store.head(&key).await.with_context(|| format!("manifest names {key}"))?;
        ensure!(meta.size == snapshot.size, "{key}: size {} but the manifest says {}", meta.size, snapshot.size);
    }
    if let Some(chain) = manifest.l1 {
        let mut txid = chain.min_txid;
        while txid <= chain.max_txid {
            let key = l1_key(generation, txid);
            txid =
                header(store, &key).await.with_context(|| format!("manifest's L1 chain needs {key}"))?.max_txid.next();
        }
        ensure!(txid == chain.max_txid.next(), "L1 chain overshoots {}", chain.max_txid);
        ensure!(manifest.l0_min_txid == txid, "l0_min_txid {} after L1 chain end {}", manifest.l0_min_txid, txid);
    }
    let mut txid = manifest.l0_min_txid;
    while txid <= manifest.newest.txid {
        let key = l0_key(generation, txid);
        txid = header(store, &key)
            .await
            .with_context(|| format!("newest {} needs {key}", manifest.newest.txid))?
            .max_txid
            .next();
    }
    if let Some(index) = read_snapshot_index(store, generation).await? {
        if let Some(snapshot) = manifest.snapshot {
            ensure!(
                index.value.snapshots.iter().any(|s| s.txid == snapshot.txid),
                "the index lacks the manifest's snapshot {}",
                snapshot.txid
            );
        }
    } else {
        bail!("no snapshot index");
    }
    Ok(())
}

/// The header of a segment, by a range request.
pub async fn header(store: &dyn Store, key: &str) -> Result<Header> {
    let bytes = store.get_range(key, ByteRange::Bounded { start: 0, end: 96 }).await?;
    Ok(read_segment_header(key, &bytes)?)
}

/// A store that fails every write or delete after a budget of them: a
/// process crashing at that step.
#[derive(Debug)]
pub struct CrashingStore {
    inner: Arc<dyn Store>,
    budget: std::sync::atomic::AtomicI64,
}

impl CrashingStore {
    /// Lets `budget` writes and deletes through, then fails them all.
    pub fn new(inner: Arc<dyn Store>, budget: i64) -> CrashingStore {
        CrashingStore { inner, budget: std::sync::atomic::AtomicI64::new(budget) }
    }

    fn spend(&self, op: &'static str, key: &str) -> Result<(), distributary_core::store::StoreError> {
        if self.budget.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0 {
            return Err(distributary_core::store::StoreError::Backend {
                op,
                key: key.to_string(),
                message: "simulated crash".into(),
                retryable: false,
            });
        }
        Ok(())
    }

    /// Whether the budget ran out (the run "crashed").
    pub fn crashed(&self) -> bool {
        self.budget.load(std::sync::atomic::Ordering::SeqCst) < 0
    }
}

#[async_trait::async_trait]
impl Store for CrashingStore {
    async fn get(
        &self,
        key: &str,
        options: distributary_core::store::GetOptions,
    ) -> Result<distributary_core::store::GetResult, distributary_core::store::StoreError> {
        self.inner.get(key, options).await
    }

    async fn head(
        &self,
        key: &str,
    ) -> Result<distributary_core::store::ObjectMeta, distributary_core::store::StoreError> {
        self.inner.head(key).await
    }

    async fn put(
        &self,
        key: &str,
        payload: distributary_core::store::Payload,
        mode: PutMode,
    ) -> Result<distributary_core::store::ObjectMeta, distributary_core::store::StoreError> {
        self.spend("put", key)?;
        self.inner.put(key, payload, mode).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), distributary_core::store::StoreError> {
        self.spend("delete", keys.first().map_or("", String::as_str))?;
        self.inner.delete(keys).await
    }

    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<distributary_core::store::ObjectMeta>, distributary_core::store::StoreError> {
        self.inner.list(prefix).await
    }

    fn url(&self) -> &str {
        self.inner.url()
    }
}
