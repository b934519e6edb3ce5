//! A lazy replica: a database of any size read page by page, with HTTP range
//! requests, instead of downloaded whole. For the wasm reader in a browser
//! or a Worker, where a 1 GB database cannot be held in memory and the first
//! answer must not wait for a full download.
//!
//! A [`LazyReplica`] follows the store as every reader does (manifest, plan,
//! chain walked by name), but it reads objects only as far as it must:
//!
//! - the **snapshot**: its first 16 KiB (the header and the first pages:
//!   page 1 and the schema), nothing else at sync; the manifest already
//!   gives its size, page count and checksum, so the page index is found by
//!   arithmetic and read in 4 KiB chunks when pages are wanted;
//! - an **L1 or L0 segment**: whole if it fits in the first 64 KiB fetched
//!   (verified whole, file checksum included, and held in memory), else its
//!   first 64 KiB and its page index and trailer (one suffix request).
//!
//! Each sync builds a new immutable [`Version`]: which object holds each
//! page at one TXID. A query holds one version for its whole run, so it
//! sees every page as of one TXID even while a sync publishes the next.
//!
//! Pages are decoded into a byte-capped [`cache::PageCache`] keyed by the
//! object they come from: a page no object after the snapshot changed stays
//! cached across syncs, and a changed page is simply another key.
//!
//! What is verified: every page read (its frame's page number, its payload's
//! own checksum or, for sealed stores, its AEAD tag, exactly as the full
//! readers check it), every object read whole (the file checksum), every
//! index chunk's structure, and the chain's continuity (generation, page
//! size, TXIDs, each segment's pre-apply checksum against the post-apply
//! checksum before it). What is not: the rolling checksum over every page,
//! which needs every page; [`LazyReplica::verify`] reads them all to check it.

pub mod cache;
mod counted;
pub mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use self::cache::{PageCache, Slot};
use self::counted::Counted;
use self::source::{Extent, Find, Source, payload_at};
use crate::apply::{ApplyError, Fetcher, Started, SyncSummary, check_continuity, empty_position, walk_chain};
use crate::checksum::page_hash;
use crate::format::{Compression, EncryptionKey, HEADER_SIZE, PageCodec, read_segment_header};
use crate::ids::{Checksum, PageNo, TxId};
use crate::layout::MANIFEST_KEY;
use crate::manifest::read_manifest;
use crate::order::sorted_by_key;
use crate::plan::{Base, Plan, ReplicaPosition, Target, plan};
use crate::store::{ByteRange, GetOptions, Store, StoreError};

/// Bytes of an object fetched first: its header and first frames, or all
/// of a small object (most L0 segments) in one request.
pub const HEAD_BYTES: u64 = 64 << 10;
/// Bytes of a snapshot fetched first: its header and its first pages (page
/// 1, the schema, often the first tables' roots). Less than [`HEAD_BYTES`]:
/// a snapshot is never small enough to come whole, and every byte here is
/// on the way to the first answer.
pub const SNAPSHOT_HEAD_BYTES: u64 = 16 << 10;
/// Default size of the page cache: 32 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
/// The smallest cache accepted: a query's working set must fit.
pub const MIN_CACHE_BYTES: usize = 1 << 20;
/// Frames closer than this in one object are fetched with one request
/// (the bytes between them come along).
const MERGE_GAP: u64 = 16 << 10;
/// The largest single range request.
const MAX_RANGE: u64 = 4 << 20;
/// Read-ahead of a sequential scan doubles up to this many pages.
const MAX_READ_AHEAD: u32 = 64;
/// Segments held in memory (read whole at sync) may take this share of the
/// cache's size; past it, the next sync starts again from a newer snapshot,
/// if the store has one, so a replica that follows a busy primary for days
/// does not keep every segment since it opened.
const HELD_SHARE_OF_CACHE: usize = 4;

/// How a lazy replica reads.
#[derive(Clone, Debug)]
pub struct LazyOptions {
    /// The store's encryption key.
    pub key: Option<EncryptionKey>,
    /// The page cache's size in bytes (at least [`MIN_CACHE_BYTES`]); for a
    /// resident replica, the largest database it holds.
    pub cache_bytes: usize,
    /// Holds every page of the database in memory: a sync fetches every
    /// page of the new version and checks the rolling checksum over them
    /// before it publishes it, the cache never evicts a page of the current
    /// version, and a database larger than `cache_bytes` is refused (the
    /// wasm reader's full mode: queries need no fetch, and run at once).
    pub resident: bool,
}

impl Default for LazyOptions {
    fn default() -> Self {
        LazyOptions { key: None, cache_bytes: DEFAULT_CACHE_BYTES, resident: false }
    }
}

/// The database at one TXID: which object holds each page.
pub struct Version {
    id: u64,
    position: ReplicaPosition,
    page_size: u32,
    commit: u32,
    /// The snapshot the chain starts from, if any.
    base: Option<Arc<Source>>,
    /// Pages of the base not cut off since (the database may have shrunk).
    base_limit: u32,
    /// Objects applied after the base, in order.
    sources: Vec<Arc<Source>>,
    /// Page -> index in `sources` of the newest object holding it.
    overlay: HashMap<u32, u32>,
    /// Payload bytes the sources after the base hold in memory.
    held_bytes: usize,
}

impl Version {
    /// Identifies this version among the replica's.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Generation, TXID, checksum and commit time.
    pub fn position(&self) -> ReplicaPosition {
        self.position
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Database size in pages.
    pub fn pages(&self) -> u32 {
        self.commit
    }

    /// Database size in bytes.
    pub fn len(&self) -> u64 {
        u64::from(self.commit) * u64::from(self.page_size)
    }

    /// The TXID of the snapshot this version reads its other pages from.
    pub fn snapshot_txid(&self) -> Option<TxId> {
        self.base.as_ref().map(|base| base.header.max_txid)
    }

    /// Whether the database has no page (never: a synced version has one).
    pub fn is_empty(&self) -> bool {
        self.commit == 0
    }

    /// This version with its objects' payloads dropped (a resident
    /// replica's, whose every page is decoded in the cache).
    fn without_payloads(self) -> Version {
        let strip = |source: &Arc<Source>| Arc::new(source.without_payloads());
        Version {
            base: self.base.as_ref().map(strip),
            sources: self.sources.iter().map(strip).collect(),
            held_bytes: 0,
            ..self
        }
    }

    /// The object holding page `pgno` at this version.
    fn locate(&self, pgno: u32) -> Option<&Arc<Source>> {
        if pgno == 0 || pgno > self.commit {
            return None;
        }
        match self.overlay.get(&pgno) {
            Some(&slot) => self.sources.get(slot as usize),
            None if pgno <= self.base_limit => self.base.as_ref(),
            None => None,
        }
    }
}

/// Counts of what a replica fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Requests made to the store.
    pub requests: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Bytes held by the page cache.
    pub cached_bytes: u64,
}

/// A replica read page by page (see the module documentation).
pub struct LazyReplica {
    store: Counted,
    cache_bytes: usize,
    resident: bool,
    key: Option<EncryptionKey>,
    codec: Mutex<Option<PageCodec>>,
    cache: Mutex<PageCache>,
    current: Mutex<Option<Arc<Version>>>,
    next_uid: AtomicU64,
}

// Short Debug output by hand: derived ones would print every page source
// and cost the .wasm the formatting of all of it.
impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version").field("id", &self.id).field("txid", &self.position.txid).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LazyReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyReplica").field("store", &self.store.url()).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LazyReplica {
    /// An empty replica of `store`; [`LazyReplica::sync`] brings it up.
    pub fn new(store: Arc<dyn Store>, options: LazyOptions) -> LazyReplica {
        let cache_bytes = options.cache_bytes.max(MIN_CACHE_BYTES);
        LazyReplica {
            store: Counted::new(store),
            cache_bytes,
            resident: options.resident,
            key: options.key,
            codec: Mutex::new(None),
            // Resident: what the current version no longer reads is pruned
            // at each sync instead.
            cache: Mutex::new(PageCache::new(if options.resident { usize::MAX } else { cache_bytes })),
            current: Mutex::new(None),
            next_uid: AtomicU64::new(1),
        }
    }

    /// The newest version synced, if any.
    pub fn current(&self) -> Option<Arc<Version>> {
        lock(&self.current).clone()
    }

    /// What was fetched so far.
    pub fn stats(&self) -> LazyStats {
        let (requests, bytes) = self.store.counts();
        LazyStats { requests, bytes, cached_bytes: lock(&self.cache).used() as u64 }
    }

    /// Drops the cached pages `version` does not read (a resident
    /// replica's, after a sync).
    fn prune(&self, version: &Version) {
        lock(&self.cache).retain(|&(uid, slot)| match slot {
            Slot::Page(pgno) => version.locate(pgno).is_some_and(|source| source.uid == uid),
            Slot::IndexChunk(_) => false,
        });
    }

    fn uid(&self) -> u64 {
        self.next_uid.fetch_add(1, Ordering::Relaxed)
    }

    /// Page `pgno` of `version` if no fetch is needed (it is cached, or its
    /// payload is in memory and is decoded now); `Ok(None)` if it must be
    /// fetched first ([`LazyReplica::fetch`]).
    pub fn page(&self, version: &Version, pgno: u32) -> Result<Option<Arc<[u8]>>, ApplyError> {
        let source = version.locate(pgno).ok_or_else(|| no_such_page(version, pgno))?;
        if let Some(page) = lock(&self.cache).get(&(source.uid, Slot::Page(pgno))) {
            return Ok(Some(page));
        }
        match source.find(pgno, None) {
            Find::Held(payload) => self.decode(version, source, pgno, &payload).map(Some),
            Find::Absent => Err(no_such_page(version, pgno)),
            Find::At(_) | Find::InChunk(_) => Ok(None),
        }
    }

    /// Decodes and verifies one payload and caches the page.
    fn decode(&self, version: &Version, source: &Source, pgno: u32, payload: &[u8]) -> Result<Arc<[u8]>, ApplyError> {
        let mut page = vec![0u8; version.page_size as usize];
        {
            let mut codec = lock(&self.codec);
            let codec = match &mut *codec {
                Some(codec) => codec,
                None => codec.insert(PageCodec::new(
                    version.position.generation,
                    self.key.as_ref(),
                    Compression::default(),
                )?),
            };
            codec.check_key(&source.key, source.header.key_check)?;
            codec.decode_page(&source.key, PageNo(pgno), payload, &mut page)?;
        }
        let page: Arc<[u8]> = page.into();
        lock(&self.cache).insert((source.uid, Slot::Page(pgno)), page.clone());
        Ok(page)
    }

    /// Fetches, verifies and caches the pages of `version` in `pages` that
    /// are not cached: neighbouring frames of one object come in one range
    /// request, index chunks of a snapshot first where needed.
    pub async fn fetch(&self, version: &Version, pages: &[u32]) -> Result<(), ApplyError> {
        let mut wanted: Vec<(Arc<Source>, u32)> = Vec::new();
        for &pgno in pages {
            if self.page(version, pgno)?.is_none() {
                wanted.push((version.locate(pgno).expect("page() located it").clone(), pgno));
            }
        }
        // Index chunks of snapshots, contiguous ones in one request.
        let mut chunks: Vec<(Arc<Source>, u32)> = Vec::new();
        for (source, pgno) in &wanted {
            if let Find::InChunk(number) = source.find(*pgno, None) {
                let cached = lock(&self.cache).contains(&(source.uid, Slot::IndexChunk(number)));
                if !cached && !chunks.iter().any(|(s, n)| s.uid == source.uid && *n == number) {
                    chunks.push((source.clone(), number));
                }
            }
        }
        let chunks = sorted_by_key(chunks, |(s, n)| u128::from(s.uid) << 32 | u128::from(*n));
        let mut runs: Vec<(Arc<Source>, u32, u32)> = Vec::new();
        for (source, number) in chunks {
            match runs.last_mut() {
                Some((s, _, last)) if s.uid == source.uid && *last + 1 == number => *last = number,
                _ => runs.push((source, number, number)),
            }
        }
        // One request at a time: a query's misses come one per run, so a
        // fetch is nearly always one range (and joins add to the .wasm).
        for (source, first, last) in runs {
            let start = source.chunk_range(first).expect("a snapshot's chunk").start;
            let end = source.chunk_range(last).expect("a snapshot's chunk").end;
            let bytes = self.store.get_range(&source.key, ByteRange::Bounded { start, end }).await?;
            for number in first..=last {
                let range = source.chunk_range(number).expect("a snapshot's chunk");
                let at = (range.start - start) as usize..(range.end - start) as usize;
                let raw = bytes.get(at).ok_or_else(|| short_read(&source.key, range.end))?;
                source.check_chunk(number, raw)?;
                lock(&self.cache).insert((source.uid, Slot::IndexChunk(number)), Arc::from(raw));
            }
        }

        // The frames, grouped into ranges per object.
        let mut extents: Vec<(Arc<Source>, u32, Extent)> = Vec::new();
        for (source, pgno) in wanted {
            let chunk = match source.find(pgno, None) {
                Find::InChunk(number) => lock(&self.cache).get(&(source.uid, Slot::IndexChunk(number))),
                _ => None,
            };
            match source.find(pgno, chunk.as_deref()) {
                Find::At(extent) => extents.push((source, pgno, extent)),
                Find::Held(_) => {}
                Find::InChunk(_) | Find::Absent => return Err(no_such_page(version, pgno)),
            }
        }
        let extents = sorted_by_key(extents, |(s, _, e)| u128::from(s.uid) << 64 | u128::from(e.offset));
        let mut ranges: Vec<FrameRange> = Vec::new();
        for (source, pgno, extent) in extents {
            match ranges.last_mut() {
                Some(range)
                    if range.source.uid == source.uid
                        && extent.offset <= range.end + MERGE_GAP
                        && extent.end() - range.start <= MAX_RANGE =>
                {
                    range.end = range.end.max(extent.end());
                    range.frames.push((pgno, extent));
                }
                _ => ranges.push(FrameRange {
                    start: extent.offset,
                    end: extent.end(),
                    frames: vec![(pgno, extent)],
                    source,
                }),
            }
        }
        for FrameRange { source, start, end, frames } in ranges {
            let bytes = self.store.get_range(&source.key, ByteRange::Bounded { start, end }).await?;
            if (bytes.len() as u64) < end - start {
                return Err(short_read(&source.key, end));
            }
            for (pgno, extent) in frames {
                let payload = payload_at(&source.key, pgno, extent, start, &bytes)?;
                self.decode(version, &source, pgno, &payload)?;
            }
        }
        Ok(())
    }

    /// Reads every page of `version` and checks the rolling checksum over
    /// them against the chain's: the full check the lazy reads leave out.
    /// Calls `each` with every page in order (to export the database).
    pub async fn verify(&self, version: &Version, mut each: impl FnMut(u32, &[u8])) -> Result<(), ApplyError> {
        // Pages fetched per round: up to half the cache, so a round's pages
        // are still cached when read back, and at most 4,096 (a 16 MiB
        // snapshot in a handful of requests).
        let batch = (self.cache_bytes / 2 / version.page_size.max(1) as usize).clamp(64, 4096) as u32;
        let mut checksum = Checksum::EMPTY;
        let mut first = 1;
        while first <= version.commit {
            let last = (first + batch - 1).min(version.commit);
            let pages: Vec<u32> = (first..=last).collect();
            self.fetch(version, &pages).await?;
            for pgno in first..=last {
                // A page evicted between the fetch and here is fetched again.
                let page = match self.page(version, pgno)? {
                    Some(page) => page,
                    None => {
                        self.fetch(version, &[pgno]).await?;
                        self.page(version, pgno)?.ok_or_else(|| no_such_page(version, pgno))?
                    }
                };
                checksum = Checksum(checksum.0 ^ page_hash(PageNo(pgno), &page));
                each(pgno, &page);
            }
            first = last + 1;
        }
        if checksum != version.position.checksum {
            return Err(ApplyError::PostChecksum {
                key: format!("TXID {}", version.position.txid),
                expected: version.position.checksum,
                computed: checksum,
            });
        }
        Ok(())
    }

    /// Brings the replica to the newest state in the store and publishes it
    /// as the current version. From scratch (`rebase`), it starts again from
    /// the newest snapshot, dropping every object read before (which the
    /// store may have deleted since). On error, the objects verified before
    /// the failure are published.
    pub async fn sync(&self, rebase: bool) -> Result<SyncSummary, ApplyError> {
        let mut current = if rebase { None } else { self.current() };
        let store: &dyn Store = &self.store;
        let manifest =
            read_manifest(store).await?.ok_or_else(|| ApplyError::NoManifest { url: store.url().to_string() })?.value;
        if let (Some(version), Some(snapshot)) = (&current, manifest.snapshot)
            && version.held_bytes > self.cache_bytes / HELD_SHARE_OF_CACHE
            && version.base.as_ref().is_none_or(|base| base.header.max_txid < snapshot.txid)
        {
            tracing::debug!(held = version.held_bytes, "starting again from the newest snapshot");
            current = None;
        }
        let position = current.as_ref().map(|v| v.position);
        let plan = plan(store, &manifest, None, position, Target::Newest).await?;
        tracing::debug!(plan = %plan.describe(), "planned a lazy sync");
        if let (Some(version), Base::Replica(_)) = (&current, plan.base)
            && version.page_size != plan.page_size
        {
            return Err(ApplyError::Discontinuous {
                key: MANIFEST_KEY.to_string(),
                range: crate::format::TxRange { min_txid: TxId::ZERO, max_txid: plan.manifest_newest },
                reason: format!(
                    "the store's page size is {} but the replica has pages of {} bytes (open a new replica)",
                    plan.page_size, version.page_size
                ),
            });
        }
        let mut summary = SyncSummary::planned(&plan, position, manifest.newest.txid);
        let mut fetcher =
            LazyFetcher { replica: self, plan: &plan, draft: Draft::from(current.as_deref(), &plan), failed: None };
        let walked = walk_chain(&mut fetcher, &plan).await;
        let LazyFetcher { draft, failed, .. } = fetcher;
        if draft.objects > 0 {
            let reached = draft.next.position;
            if reached.generation != position.map_or(reached.generation, |p| p.generation) {
                *lock(&self.codec) = None;
            }
            summary.to_txid = reached.txid;
            summary.checksum = reached.checksum;
            summary.timestamp_ms = reached.timestamp_ms;
            summary.generation = reached.generation;
            summary.objects = draft.objects;
            summary.bytes = draft.bytes;
            let version = draft.publish(self.uid());
            let version = if self.resident {
                // Every page in memory, and the checksum over them right,
                // before any query sees the version; then the objects'
                // payloads go (every page is decoded in the cache).
                self.verify(&version, |_, _| {}).await?;
                self.prune(&version);
                version.without_payloads()
            } else {
                version
            };
            *lock(&self.current) = Some(Arc::new(version));
        }
        match failed {
            Some(error) => Err(error),
            None => walked.map(|()| summary),
        }
    }
}

/// Neighbouring frames of one object, fetched with one range request.
struct FrameRange {
    source: Arc<Source>,
    start: u64,
    end: u64,
    frames: Vec<(u32, Extent)>,
}

/// The next version, built object by object during a sync.
struct Draft {
    /// The version so far (its id and held bytes are set when published).
    next: Version,
    objects: u64,
    bytes: u64,
}

impl Draft {
    /// A draft continuing `current` (or empty, at the plan's generation).
    fn from(current: Option<&Version>, plan: &Plan) -> Draft {
        let next = match current {
            Some(v) => Version {
                id: 0,
                position: v.position,
                page_size: v.page_size,
                commit: v.commit,
                base: v.base.clone(),
                base_limit: v.base_limit,
                sources: v.sources.clone(),
                overlay: v.overlay.clone(),
                held_bytes: 0,
            },
            None => Version {
                id: 0,
                position: empty_position(plan.generation),
                page_size: plan.page_size,
                commit: 0,
                base: None,
                base_limit: 0,
                sources: Vec::new(),
                overlay: HashMap::new(),
                held_bytes: 0,
            },
        };
        Draft { next, objects: 0, bytes: 0 }
    }

    /// Starts again from `snapshot`.
    fn rebase(&mut self, snapshot: Source, position: ReplicaPosition, page_size: u32) {
        let v = &mut self.next;
        v.commit = snapshot.header.commit;
        v.base_limit = snapshot.header.commit;
        v.base = Some(Arc::new(snapshot));
        v.sources.clear();
        v.overlay.clear();
        v.page_size = page_size;
        v.position = position;
    }

    /// Lays `source` over the pages it holds; the database then has
    /// `source.header.commit` pages and is at `position`.
    fn apply(&mut self, source: Source, position: ReplicaPosition) -> Result<(), ApplyError> {
        let v = &mut self.next;
        let header = source.header.clone();
        let pages = source.pages();
        if header.commit > v.commit {
            let grown = pages.iter().filter(|&&p| p > v.commit).count() as u32;
            if grown != header.commit - v.commit {
                return Err(ApplyError::Discontinuous {
                    key: source.key.clone(),
                    range: header.range(),
                    reason: format!(
                        "the database grows from {} to {} pages but the segment holds {grown} of the new pages",
                        v.commit, header.commit
                    ),
                });
            }
        }
        let slot = v.sources.len() as u32;
        v.sources.push(Arc::new(source));
        for pgno in pages {
            v.overlay.insert(pgno, slot);
        }
        if header.commit < v.commit {
            v.overlay.retain(|&pgno, _| pgno <= header.commit);
        }
        v.base_limit = v.base_limit.min(header.commit);
        v.commit = header.commit;
        v.position = position;
        Ok(())
    }

    /// The version, without the objects whose every page a later one replaced.
    fn publish(self, id: u64) -> Version {
        let mut v = self.next;
        let mut used = vec![false; v.sources.len()];
        for &slot in v.overlay.values() {
            used[slot as usize] = true;
        }
        if used.contains(&false) {
            let mut renumber = vec![0u32; v.sources.len()];
            let mut kept = Vec::with_capacity(v.sources.len());
            for (slot, source) in v.sources.into_iter().enumerate() {
                if used[slot] {
                    renumber[slot] = kept.len() as u32;
                    kept.push(source);
                }
            }
            for slot in v.overlay.values_mut() {
                *slot = renumber[*slot as usize];
            }
            v.sources = kept;
        }
        v.held_bytes = v.sources.iter().flat_map(|s| s.held.iter()).map(|(_, payload)| payload.len()).sum();
        v.id = id;
        v
    }
}

/// The first bytes of an object the chain walk started.
struct Head {
    bytes: Bytes,
}

/// Walks the chain for [`LazyReplica::sync`], reading objects only as far
/// as the module documentation says.
struct LazyFetcher<'a> {
    replica: &'a LazyReplica,
    plan: &'a Plan,
    draft: Draft,
    failed: Option<ApplyError>,
}

impl Fetcher for LazyFetcher<'_> {
    type Body = Head;

    async fn start(&mut self, key: &str) -> Result<Option<Started<Head>>, ApplyError> {
        let end = if self.plan.snapshot_key().as_deref() == Some(key) { SNAPSHOT_HEAD_BYTES } else { HEAD_BYTES };
        // A resident replica reads every page anyway: each object whole, in
        // one request (and verified whole, file checksum included).
        let range = (!self.replica.resident).then_some(ByteRange::Bounded { start: 0, end });
        let options = GetOptions { range, if_none_match: None };
        let result = match self.replica.store.get(key, options).await {
            Ok(result) => result,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let size = result.meta.size;
        let bytes = result.bytes().await?;
        let header = read_segment_header(key, &bytes)?;
        Ok(Some(Started { header, size, body: Head { bytes } }))
    }

    async fn send(&mut self, key: String, started: Started<Head>) -> bool {
        match self.admit(&key, started).await {
            Ok(()) => true,
            Err(error) => {
                self.failed = Some(error);
                false
            }
        }
    }

    fn discard(&mut self, _: Head) {}
}

impl LazyFetcher<'_> {
    /// Checks object `key` against the chain and lays it over the draft.
    async fn admit(&mut self, key: &str, started: Started<Head>) -> Result<(), ApplyError> {
        let Started { header, size, body } = started;
        let replica = self.replica;
        let bytes = u64::from(header.commit) * u64::from(header.page_size);
        if replica.resident && bytes > replica.cache_bytes as u64 {
            return Err(ApplyError::TooLarge {
                key: key.to_string(),
                pages: header.commit,
                page_size: header.page_size,
                bytes,
                limit: replica.cache_bytes as u64,
            });
        }
        let whole = size <= body.bytes.len() as u64;
        let uid = replica.uid();
        if header.flags.snapshot() {
            let Base::Snapshot(snapshot) = self.plan.base else {
                return Err(discontinuous(key, &header, "a snapshot where the chain continues the replica".into()));
            };
            let expected = (snapshot.txid, snapshot.size, snapshot.commit, self.plan.generation, self.plan.page_size);
            let found = (header.max_txid, size, header.commit, header.generation, header.page_size);
            if expected != found {
                return Err(discontinuous(
                    key,
                    &header,
                    format!(
                        "the manifest describes it as TXID {}, {} bytes, {} pages of generation {} with {}-byte pages",
                        snapshot.txid, snapshot.size, snapshot.commit, self.plan.generation, self.plan.page_size
                    ),
                ));
            }
            replica.check_key(key, &header)?;
            let (source, checksum) = if whole {
                let (source, trailer) = Source::whole(uid, key, body.bytes)?;
                (source, trailer.post_apply_checksum)
            } else {
                (Source::snapshot(uid, key, header.clone(), &body.bytes, size)?, snapshot.checksum)
            };
            let position = ReplicaPosition {
                generation: header.generation,
                txid: header.max_txid,
                checksum,
                timestamp_ms: header.timestamp_ms,
            };
            self.draft.rebase(source, position, header.page_size);
        } else {
            check_continuity(self.draft.next.position, self.draft.next.page_size, key, &header, true)?;
            replica.check_key(key, &header)?;
            let (source, trailer) = if whole {
                Source::whole(uid, key, body.bytes)?
            } else {
                let tail_len = (size - HEADER_SIZE as u64).min(HEAD_BYTES);
                let mut tail = replica.store.get_range(key, ByteRange::Suffix(tail_len)).await?.to_vec();
                let index_offset = trailer_index_offset(key, &tail)?;
                let tail_start = size - tail.len() as u64;
                if index_offset < tail_start {
                    // A large index: fetch the part before the suffix.
                    let range = ByteRange::Bounded { start: index_offset, end: tail_start };
                    let mut front = replica.store.get_range(key, range).await?.to_vec();
                    front.extend_from_slice(&tail);
                    tail = front;
                }
                Source::indexed(uid, key, header.clone(), &body.bytes, &tail, size)?
            };
            let position = ReplicaPosition {
                generation: header.generation,
                txid: header.max_txid,
                checksum: trailer.post_apply_checksum,
                timestamp_ms: header.timestamp_ms,
            };
            self.draft.apply(source, position)?;
        }
        self.draft.objects += 1;
        self.draft.bytes += size;
        Ok(())
    }
}

impl LazyReplica {
    /// Refuses an object sealed with another key (or sealed when no key is
    /// given, or plain when one is) before any page of it is read.
    fn check_key(&self, key: &str, header: &crate::format::Header) -> Result<(), ApplyError> {
        let codec = PageCodec::new(header.generation, self.key.as_ref(), Compression::default())?;
        codec.check_key(key, header.key_check)?;
        Ok(())
    }
}

/// The index offset a fetched tail's trailer gives.
fn trailer_index_offset(key: &str, tail: &[u8]) -> Result<u64, ApplyError> {
    let bytes: &[u8; crate::format::TRAILER_SIZE] = tail
        .get(tail.len().saturating_sub(crate::format::TRAILER_SIZE)..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| short_read(key, crate::format::TRAILER_SIZE as u64))?;
    Ok(crate::format::Trailer::decode(bytes, key)?.index_offset)
}

fn discontinuous(key: &str, header: &crate::format::Header, reason: String) -> ApplyError {
    ApplyError::Discontinuous { key: key.to_string(), range: header.range(), reason }
}

fn short_read(key: &str, end: u64) -> ApplyError {
    crate::format::FormatError::Truncated { object: key.to_string(), offset: end, expected: "the bytes requested" }
        .into()
}

fn no_such_page(version: &Version, pgno: u32) -> ApplyError {
    ApplyError::Task {
        op: "read a page",
        reason: format!(
            "page {pgno} is not in the database at TXID {} ({} pages)",
            version.position.txid, version.commit
        ),
    }
}

/// Which pages to fetch beside a missed one: none for a random read, a
/// window that doubles (up to 64 pages) while misses follow each other, as
/// a sequential scan's do.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadAhead {
    last: Option<u32>,
    window: u32,
}

impl ReadAhead {
    /// The pages to fetch for a miss of `pgno` in a database of `pages` pages.
    pub fn pages_for(&mut self, pgno: u32, pages: u32) -> std::ops::RangeInclusive<u32> {
        let sequential = self.last.is_some_and(|last| pgno > last && pgno <= last + self.window.max(4));
        self.window = if sequential { (self.window * 2).clamp(4, MAX_READ_AHEAD) } else { 0 };
        let last = pgno.saturating_add(self.window).min(pages.max(pgno));
        self.last = Some(last);
        pgno..=last
    }
}

#[cfg(test)]
mod tests;
