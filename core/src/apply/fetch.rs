//! Fetching for native readers: the chain is discovered by name
//! ([`walk_chain`]) and each object's body arrives on a background task
//! while the applier thread works on the objects before it.
//!
//! Small objects are collected in memory. Larger ones are *streamed*: the
//! download task pushes its chunks through a bounded channel that the
//! applier reads as a blocking [`Read`], so an object of any size costs a
//! few chunks of memory and is never copied to disk first (a restore of a
//! 1 GB snapshot used to write 748 MB of spool file and read it back before
//! the first page was decoded).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::run::Counters;
use super::{ApplyError, Fetcher, Started, walk_chain};
use crate::format::{HEADER_SIZE, read_segment_header};
use crate::plan::Plan;
use crate::store::{ByteRange, GetOptions, Store, StoreError};

/// Objects at most this large are collected in memory before they are
/// applied; larger ones are streamed.
const MEMORY_OBJECT_LIMIT: u64 = 8 << 20;
/// Chunks of a streamed object buffered ahead of the applier (the file
/// store's chunks are 256 KiB, so at most 2 MiB per streamed object).
const STREAM_CHUNKS: usize = 8;
/// An object planned at [`PARTS_FROM`] bytes or more, fetched last from a
/// remote store (a new file's snapshot), comes in ranged parts of [`PART_SIZE`],
/// several at once (`SyncOptions::parts`), so one connection's rate does
/// not cap the restore's; memory holds at most `parts + 2` of them (24 MiB
/// by default) whatever the object's size.
const PARTS_FROM: u64 = 64 << 20;
const PART_SIZE: u64 = 4 << 20;

/// An object's bytes, whole or arriving.
pub(super) enum Body {
    Memory(Bytes),
    Stream(StreamReader),
}

impl Body {
    pub(super) fn into_reader(self) -> Box<dyn Read + Send> {
        match self {
            Body::Memory(bytes) => Box::new(std::io::Cursor::new(bytes)),
            Body::Stream(reader) => Box::new(reader),
        }
    }
}

/// The applier's end of a streamed object: a blocking reader over the
/// chunks the download task sends. Read only from a blocking thread.
pub(super) struct StreamReader {
    chunks: mpsc::Receiver<Result<Bytes, StoreError>>,
    current: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                // The sender ends the stream after the last chunk.
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// What the driver hands the applier, in chain order.
pub(super) enum Item {
    Object { key: String, size: u64, body: Download },
    Failed(ApplyError),
}

/// A body arriving from a background task.
pub(super) type Download = JoinHandle<Result<Body, ApplyError>>;

/// Starts downloading `key`: waits for its header, then lets the body
/// arrive in a background task. `None` if the object does not exist.
/// Counts its size as expected and every byte received as fetched.
async fn start_fetch(
    store: &Arc<dyn Store>,
    key: &str,
    counters: &Arc<Counters>,
) -> Result<Option<Started<Download>>, ApplyError> {
    let result = match store.get(key, GetOptions::default()).await {
        Ok(result) => result,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let size = result.meta.size;
    counters.expected.fetch_add(size, Ordering::Relaxed);
    let mut stream = result.body;
    let mut prefix = Vec::with_capacity(64 * 1024);
    while prefix.len() < HEADER_SIZE {
        match stream.next().await {
            Some(chunk) => prefix.extend_from_slice(&chunk?),
            None => break,
        }
    }
    counters.fetched.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    let header = read_segment_header(key, &prefix)?;
    let counters = Arc::clone(counters);
    let body = if size <= MEMORY_OBJECT_LIMIT {
        tokio::spawn(async move {
            let mut bytes = prefix;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                counters.fetched.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                bytes.extend_from_slice(&chunk);
            }
            Ok(Body::Memory(bytes.into()))
        })
    } else {
        let reader = stream_body(Bytes::from(prefix), stream, counters);
        tokio::spawn(async move { Ok(Body::Stream(reader)) })
    };
    Ok(Some(Started { header, size, body }))
}

/// Streams `first` and then the rest of a body to the applier through a
/// bounded channel, counting bytes as they arrive.
fn stream_body(first: Bytes, stream: crate::store::Body, counters: Arc<Counters>) -> StreamReader {
    let (tx, chunks) = mpsc::channel(STREAM_CHUNKS);
    tokio::spawn(async move {
        if first.is_empty() || tx.send(Ok(first)).await.is_ok() {
            forward(stream, &tx, &counters).await;
        }
    });
    StreamReader { chunks, current: Bytes::new() }
}

/// Sends each chunk of `chunks` to the applier as it arrives, counting its
/// bytes, until the end, an error (sent on) or a closed channel (the
/// applier stopped, and says why).
async fn forward(
    mut chunks: impl futures::Stream<Item = Result<Bytes, StoreError>> + Unpin,
    tx: &mpsc::Sender<Result<Bytes, StoreError>>,
    counters: &Counters,
) {
    while let Some(chunk) = chunks.next().await {
        if let Ok(chunk) = &chunk {
            counters.fetched.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// Fetches object `key` whole for the applier thread, counting its size
/// as expected: in memory if small; else streamed, and from a remote store
/// in ranged parts if the plan says it is large (`planned_size`), `parts`
/// of them fetched at once and handed on in order (a local file reads as
/// fast in one stream). Returns it and its size.
pub(super) async fn fetch_whole(
    store: Arc<dyn Store>,
    key: &str,
    planned_size: u64,
    parts: usize,
    counters: Arc<Counters>,
) -> Result<(Body, u64), ApplyError> {
    let in_parts = parts > 1 && planned_size >= PARTS_FROM && !store.url().starts_with("file:");
    // In parts, the first part's answer also gives the object's size.
    let first = in_parts.then_some(ByteRange::Bounded { start: 0, end: PART_SIZE });
    let result = store.get(key, GetOptions { range: first, if_none_match: None }).await?;
    let size = result.meta.size;
    counters.expected.fetch_add(size, Ordering::Relaxed);
    if !in_parts {
        if size <= MEMORY_OBJECT_LIMIT {
            let bytes = result.bytes().await?;
            counters.fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            return Ok((Body::Memory(bytes), size));
        }
        return Ok((Body::Stream(stream_body(Bytes::new(), result.body, counters)), size));
    }
    let (tx, chunks) = mpsc::channel(1);
    let key = key.to_string();
    tokio::spawn(async move {
        let first = futures::stream::once(Box::pin(result.bytes()));
        let rest = (1..size.div_ceil(PART_SIZE)).map(|i| {
            let (store, key) = (Arc::clone(&store), key.clone());
            let range = ByteRange::Bounded { start: i * PART_SIZE, end: ((i + 1) * PART_SIZE).min(size) };
            async move { store.get_range(&key, range).await }
        });
        forward(first.chain(futures::stream::iter(rest).buffered(parts)), &tx, &counters).await;
    });
    Ok((Body::Stream(StreamReader { chunks, current: Bytes::new() }), size))
}

/// Starts downloads on background tasks and sends them to the applier
/// thread; the channel's capacity bounds how many are in flight.
struct ChainFetcher {
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Item>,
    /// The applier fetches the snapshot itself, after the rest.
    snapshot_last: bool,
}

impl Fetcher for ChainFetcher {
    type Body = Download;

    async fn start(&mut self, key: &str) -> Result<Option<Started<Download>>, ApplyError> {
        start_fetch(&self.store, key, &self.counters).await
    }

    async fn send(&mut self, key: String, started: Started<Download>) -> bool {
        // A closed channel means the applier stopped on an error it reports.
        self.tx.send(Item::Object { key, size: started.size, body: started.body }).await.is_ok()
    }

    fn discard(&mut self, body: Download) {
        body.abort();
    }

    fn skips_snapshot(&self) -> bool {
        self.snapshot_last
    }
}

/// Walks the plan's chain by name and sends each object to the applier,
/// counting bytes in `counters`; with `snapshot_last`, all but the
/// snapshot. Stops at the target, at the end of the chain, or on the first
/// error (sent as [`Item::Failed`] after the objects before it).
pub(super) async fn drive(
    store: Arc<dyn Store>,
    plan: &Plan,
    snapshot_last: bool,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Item>,
) {
    let mut fetcher = ChainFetcher { store, counters, tx: tx.clone(), snapshot_last };
    if let Err(e) = walk_chain(&mut fetcher, plan).await {
        let _ = tx.send(Item::Failed(e)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Mutex;

    use super::*;
    use crate::store::{GetResult, MemoryStore, ObjectMeta, Payload, PutMode};

    /// The memory store, noting the range of every GET.
    #[derive(Debug, Default)]
    struct Ranges {
        store: MemoryStore,
        asked: Mutex<Vec<Option<ByteRange>>>,
    }

    #[async_trait::async_trait]
    impl Store for Ranges {
        async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
            self.asked.lock().unwrap().push(options.range);
            self.store.get(key, options).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
            self.store.head(key).await
        }
        async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
            self.store.put(key, payload, mode).await
        }
        async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
            self.store.delete(keys).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.store.list(prefix).await
        }
        fn url(&self) -> &str {
            self.store.url()
        }
    }

    /// A large object from a remote store arrives whole and in order from
    /// ranged parts of 4 MiB (the last one short); with one part, from one
    /// GET of the whole object.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_object_arrives_whole_and_in_order_from_ranged_parts() {
        let size = PARTS_FROM + 3 * PART_SIZE + 12_345;
        let object: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect();
        let store = Arc::new(Ranges::default());
        store.put("big", Bytes::from(object.clone()).into(), PutMode::Create).await.unwrap();
        for parts in [4, 1] {
            store.asked.lock().unwrap().clear();
            let counters = Arc::new(Counters::default());
            let (body, got_size) = fetch_whole(store.clone(), "big", size, parts, Arc::clone(&counters)).await.unwrap();
            assert_eq!(got_size, size);
            let got = tokio::task::spawn_blocking(move || {
                let mut got = Vec::new();
                body.into_reader().read_to_end(&mut got).unwrap();
                got
            })
            .await
            .unwrap();
            assert!(got == object, "the object read back with {parts} parts differs");
            assert_eq!(counters.fetched.load(Ordering::Relaxed), size);
            let asked = store.asked.lock().unwrap().clone();
            if parts == 1 {
                assert_eq!(asked, [None]);
            } else {
                // The first part's answer gives the size; the others follow.
                let expected: Vec<_> = (0..size.div_ceil(PART_SIZE))
                    .map(|i| Some(ByteRange::Bounded { start: i * PART_SIZE, end: ((i + 1) * PART_SIZE).min(size) }))
                    .collect();
                assert_eq!(asked, expected);
            }
        }
    }
}
