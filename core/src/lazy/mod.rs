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
mod read_ahead;
pub mod source;
mod version;
mod walk;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use self::cache::{PageCache, Slot};
use self::counted::Counted;
use self::source::{Extent, Find, Source, payload_at};
use self::version::Draft;
use self::walk::LazyFetcher;
use crate::apply::{ApplyError, SyncSummary, check_page_size, planned, read_current, walk_chain};
use crate::checksum::page_hash;
use crate::format::{Compression, EncryptionKey, PageCodec};
use crate::ids::{Checksum, PageNo};
use crate::order::sorted_by_key;
use crate::plan::{Base, HistoryPoint};
use crate::store::{ByteRange, Store};

pub use self::read_ahead::ReadAhead;
pub use self::version::Version;

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
        let manifest = read_current(store).await?;
        if let (Some(version), Some(snapshot)) = (&current, manifest.snapshot)
            && version.held_bytes > self.cache_bytes / HELD_SHARE_OF_CACHE
            && version.base.as_ref().is_none_or(|base| base.header.max_txid < snapshot.txid)
        {
            tracing::debug!(held = version.held_bytes, "starting again from the newest snapshot");
            current = None;
        }
        let position = current.as_ref().map(|v| v.position);
        let (plan, mut summary) = planned(store, &manifest, None, position, HistoryPoint::Newest).await?;
        if let (Some(version), Base::Replica(_)) = (&current, plan.base) {
            check_page_size(&plan, version.page_size, "the replica", "open a new replica")?;
        }
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

#[cfg(test)]
mod tests;
