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
use crate::store::{GetOptions, Store, StoreError};

/// Objects at most this large are collected in memory before they are
/// applied; larger ones are streamed.
const MEMORY_OBJECT_LIMIT: u64 = 8 << 20;
/// Chunks of a streamed object buffered ahead of the applier (the file
/// store's chunks are 256 KiB, so at most 2 MiB per streamed object).
const STREAM_CHUNKS: usize = 8;

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
        let (tx, chunks) = mpsc::channel(STREAM_CHUNKS);
        tokio::spawn(async move {
            if tx.send(Ok(Bytes::from(prefix))).await.is_err() {
                return;
            }
            while let Some(chunk) = stream.next().await {
                if let Ok(chunk) = &chunk {
                    counters.fetched.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                let failed = chunk.is_err();
                // A closed channel: the applier stopped (and says why).
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        let reader = StreamReader { chunks, current: Bytes::new() };
        tokio::spawn(async move { Ok(Body::Stream(reader)) })
    };
    Ok(Some(Started { header, size, body }))
}

/// Starts downloads on background tasks and sends them to the applier
/// thread; the channel's capacity bounds how many are in flight.
struct ChainFetcher {
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Item>,
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
}

/// Walks the plan's chain by name and sends each object to the applier,
/// counting bytes in `counters`. Stops at the target, at the end of the
/// chain, or on the first error (sent as [`Item::Failed`] after the objects
/// before it).
pub(super) async fn drive(store: Arc<dyn Store>, plan: &Plan, counters: Arc<Counters>, tx: mpsc::Sender<Item>) {
    let mut fetcher = ChainFetcher { store, counters, tx: tx.clone() };
    if let Err(e) = walk_chain(&mut fetcher, plan).await {
        let _ = tx.send(Item::Failed(e)).await;
    }
}
