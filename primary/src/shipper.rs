//! Uploading captured segments: a store's queue is shipped in TXID order,
//! several segments merged into one object (after an outage, or for a store
//! with a longer sync interval than the capture), each upload
//! create-if-absent under its deterministic key. A key that exists already
//! (an upload retried after its answer was lost) is read to continue after
//! its `max_txid`. The genesis snapshot of a generation goes first, then
//! the snapshot index and the manifest. What the store acknowledged is the
//! replicator's to record ([`crate::replicator`]); nothing here writes the
//! metadata.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use distributary_core::format::{HEADER_SIZE, Header, SegmentReader, read_segment_header};
use distributary_core::layout::{l0_key, snapshot_index_key, snapshot_key};
use distributary_core::manifest::{
    MANIFEST_FORMAT_VERSION, Manifest, ManifestError, Position, SnapshotIndex, SnapshotRef, update_document,
    update_manifest,
};
use distributary_core::merge::merge;
use distributary_core::store::{ByteRange, Payload, PutMode, Store, StoreError};
use distributary_core::{TxId, clock};

use crate::capture::Body;
use crate::metrics::Metrics;
use crate::queue::Queued;

/// Merged uploads up to this size are built in memory; larger ones in a
/// temporary file of the pending folder.
const MERGE_IN_MEMORY_BYTES: u64 = 8 << 20;

/// One store's uploader.
#[derive(Clone)]
pub struct Shipper {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
}

impl Shipper {
    /// Uploads `segments` (from [`crate::queue::SegmentQueue::next_upload`]:
    /// the genesis snapshot alone, or contiguous segments) as one object;
    /// returns the newest TXID the store now holds.
    pub async fn upload(&self, segments: Vec<Queued>, spill_dir: &Path) -> Result<TxId> {
        let Some(first) = segments.first() else { bail!("nothing to upload") };
        if first.genesis {
            let Body::File(path) = &first.body else { bail!("a genesis snapshot is always a file") };
            self.publish_genesis(path).await?;
            return Ok(TxId(1));
        }
        for pair in segments.windows(2) {
            if pair[1].header.min_txid != pair[0].header.max_txid.next() {
                bail!(
                    "queued segments {} and {} are not contiguous (metadata folder damaged?)",
                    pair[0].header.range(),
                    pair[1].header.range()
                );
            }
        }
        let key = l0_key(first.header.generation, first.header.min_txid);
        let first_header = first.header.clone();
        let max_txid = segments.last().expect("not empty").header.max_txid;
        let (payload, size, _temp) = payload(segments, &key, spill_dir).await?;
        let uploaded_bytes = match &payload {
            Payload::Bytes(bytes) => Some(bytes.clone()),
            Payload::File(_) => None,
        };
        let span = tracing::info_span!("ship", key = %key, max_txid = %max_txid);
        let upload = self.store.put(&key, payload, PutMode::Create);
        match tracing::Instrument::instrument(upload, span).await {
            Ok(_) => {
                tracing::debug!(key = %key, %max_txid, "uploaded");
                self.metrics.record_upload(size);
                self.hand_to_local_compactor(&key, uploaded_bytes);
                Ok(max_txid)
            }
            Err(StoreError::AlreadyExists { .. }) => {
                // A retry whose first answer was lost: the object holds a
                // prefix of what is queued (or all of it).
                let existing = self.existing_header(&key).await?;
                if existing.pre_apply_checksum != first_header.pre_apply_checksum {
                    bail!(
                        "upload {key}: the store already holds a different segment under this key \
                         (pre-apply checksum {} vs {}): is another primary writing this prefix?",
                        existing.pre_apply_checksum,
                        first_header.pre_apply_checksum
                    );
                }
                tracing::info!(key = %key, max_txid = %existing.max_txid, "already uploaded; continuing after it");
                Ok(existing.max_txid)
            }
            Err(e) => {
                self.metrics.record_error();
                Err(e).with_context(|| format!("upload {key}"))
            }
        }
    }

    /// Gives what was just uploaded to the compactor watching this store in
    /// this process (`compaction: local`), if any, so it merges the segment
    /// without reading it back from the store: one GET fewer per upload.
    fn hand_to_local_compactor(&self, key: &str, uploaded: Option<bytes::Bytes>) {
        let (Some(memory), Some(bytes)) = (crate::compact::local_memory(self.store.url()), uploaded) else {
            return;
        };
        if let Err(error) = memory.remember_upload(self.store.url(), key, bytes) {
            // Only a bug could make our own upload unreadable; the compactor
            // then reads it from the store as usual.
            tracing::warn!(key, error = %error, "could not hand the upload to the local compactor");
        }
    }

    async fn existing_header(&self, key: &str) -> Result<Header> {
        let bytes = self
            .store
            .get_range(key, ByteRange::Bounded { start: 0, end: HEADER_SIZE as u64 })
            .await
            .with_context(|| format!("read the header of {key}"))?;
        Ok(read_segment_header(key, &bytes)?)
    }

    /// Uploads the genesis snapshot, then adds it to the snapshot index and
    /// points the manifest at the new generation.
    async fn publish_genesis(&self, path: &Path) -> Result<u64> {
        let (header, post) = read_header_and_post(path)?;
        let generation = header.generation;
        let key = snapshot_key(generation, TxId(1));
        let size = std::fs::metadata(path)?.len();
        match self.store.put(&key, Payload::File(path.to_path_buf()), PutMode::Create).await {
            Ok(_) => self.metrics.record_upload(size),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => {
                self.metrics.record_error();
                return Err(e).with_context(|| format!("upload {key}"));
            }
        }
        let snapshot = SnapshotRef {
            txid: TxId(1),
            timestamp_ms: header.timestamp_ms,
            size,
            commit: header.commit,
            checksum: post,
        };
        update_document(self.store.as_ref(), &snapshot_index_key(generation), |current: Option<&SnapshotIndex>| {
            let mut index = current.cloned().unwrap_or(SnapshotIndex {
                format_version: MANIFEST_FORMAT_VERSION,
                generation,
                snapshots: Vec::new(),
            });
            if index.snapshots.iter().any(|s| s.txid == snapshot.txid) {
                return Ok(None);
            }
            index.snapshots.insert(0, snapshot);
            Ok(Some(index))
        })
        .await?;
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            generation,
            page_size: header.page_size,
            key_check: (header.key_check != distributary_core::format::KeyCheck::NONE).then_some(header.key_check),
            newest: Position { txid: TxId(1), timestamp_ms: header.timestamp_ms, checksum: post },
            snapshot: Some(snapshot),
            l1: None,
            l0_min_txid: TxId(2),
            l0_kept_min_txid: None,
            updated_ms: clock::now_ms(),
        };
        update_manifest(self.store.as_ref(), |current| match current {
            Some(current) if current.generation == generation => Ok(None),
            Some(current) if current.generation > generation => Err(ManifestError::Rejected {
                key: "manifest.json".into(),
                reason: format!(
                    "the store moved on to a newer generation {} than this replicator's {generation}",
                    current.generation
                ),
            }),
            _ => Ok(Some(manifest.clone())),
        })
        .await
        .context("publish the manifest of the new generation")?;
        tracing::info!(store = self.store.url(), %generation, "started generation");
        Ok(size)
    }
}

/// Reads and verifies a whole pending file, returning its header and
/// post-apply checksum.
fn read_header_and_post(path: &Path) -> Result<(Header, distributary_core::Checksum)> {
    let name = path.display().to_string();
    let reader = SegmentReader::open(name, BufReader::new(File::open(path)?))?;
    let header = reader.header().clone();
    let trailer = reader.finish()?;
    Ok((header, trailer.post_apply_checksum))
}

/// The body of an upload: a single segment as it is; several merged, in
/// memory or (past [`MERGE_IN_MEMORY_BYTES`]) in a temporary file, kept
/// until the upload ends.
async fn payload(
    segments: Vec<Queued>,
    key: &str,
    spill_dir: &Path,
) -> Result<(Payload, u64, Option<tempfile::NamedTempFile>)> {
    if segments.len() == 1 {
        return Ok(match &segments[0].body {
            Body::Memory(bytes) => (Payload::Bytes(bytes.clone()), bytes.len() as u64, None),
            Body::File(path) => {
                let size = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?.len();
                (Payload::File(path.clone()), size, None)
            }
        });
    }
    let (key, dir) = (key.to_string(), spill_dir.to_path_buf());
    tokio::task::spawn_blocking(move || -> Result<(Payload, u64, Option<tempfile::NamedTempFile>)> {
        let mut inputs = Vec::with_capacity(segments.len());
        let mut estimate = 0u64;
        for queued in &segments {
            estimate += match &queued.body {
                Body::Memory(bytes) => bytes.len() as u64,
                Body::File(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
            };
            inputs.push(SegmentReader::open(queued.header.range().to_string(), queued.reader()?)?);
        }
        if estimate <= MERGE_IN_MEMORY_BYTES {
            let (bytes, summary) = merge(&key, inputs, Vec::new())?;
            return Ok((Payload::Bytes(bytes.into()), summary.size, None));
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let temp = tempfile::Builder::new().prefix(".merge-").tempfile_in(&dir)?;
        let out = std::io::BufWriter::new(temp.reopen()?);
        let (writer, summary) = merge(&key, inputs, out)?;
        // Uploaded, then deleted: nothing to make durable.
        writer.into_inner().map_err(|e| e.into_error())?;
        Ok((Payload::File(temp.path().to_path_buf()), summary.size, Some(temp)))
    })
    .await
    .context("merge queued segments")?
}
