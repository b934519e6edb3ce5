//! Walking the chain for [`LazyReplica::sync`], reading each object only as
//! far as the module documentation of [`crate::lazy`] says, and laying it
//! over the [`Draft`] of the next version.

use bytes::Bytes;

use super::source::Source;
use super::version::Draft;
use super::{HEAD_BYTES, LazyReplica, SNAPSHOT_HEAD_BYTES, short_read};
use crate::apply::{ApplyError, Fetcher, Started, check_continuity};
use crate::format::{Compression, HEADER_SIZE, PageCodec, read_segment_header};
use crate::plan::{Base, Plan, ReplicaPosition};
use crate::store::{ByteRange, GetOptions, Store, StoreError};

/// The first bytes of an object the chain walk started.
pub(super) struct Head {
    bytes: Bytes,
}

/// Walks the chain for [`LazyReplica::sync`], reading objects only as far
/// as the module documentation says.
pub(super) struct LazyFetcher<'a> {
    pub(super) replica: &'a LazyReplica,
    pub(super) plan: &'a Plan,
    pub(super) draft: Draft,
    pub(super) failed: Option<ApplyError>,
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
