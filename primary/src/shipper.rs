//! Uploading captured segments: each store's `pending/` folder is shipped
//! in TXID order. Several pending segments are merged into one upload (after
//! an outage, or for a store with a longer sync interval than the capture),
//! each upload is create-if-absent under its deterministic key, and a key
//! that exists already (an upload retried after a crash) is read to continue
//! after its `max_txid`. The genesis snapshot of a generation goes first,
//! then the snapshot index and the manifest.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
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

use crate::capture::GENESIS_NAME;
use crate::metrics::Metrics;
use crate::state::StateDir;

/// One store's uploader.
pub struct Shipper {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its pending folder.
    pub pending_dir: PathBuf,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// The database, whose metadata records what the store holds.
    pub db_path: PathBuf,
    /// The store's URL as configured (the metadata's key for it).
    pub url: String,
    /// The metadata, opened at the first upload and kept: opening it runs
    /// its schema and pragmas, too much to repeat per upload.
    state: Arc<std::sync::Mutex<Option<StateDir>>>,
}

/// A pending segment file and its header.
struct PendingFile {
    path: PathBuf,
    header: Header,
}

/// What one call to [`Shipper::ship`] uploaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shipped {
    /// Objects uploaded.
    pub objects: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The newest TXID now in the store, if anything was shipped.
    pub max_txid: Option<TxId>,
}

impl Shipper {
    /// The uploader of the store at `url`, whose captured segments wait in
    /// `pending_dir`.
    pub fn new(
        store: Arc<dyn Store>,
        pending_dir: PathBuf,
        metrics: Arc<Metrics>,
        db_path: PathBuf,
        url: String,
    ) -> Shipper {
        Shipper { store, pending_dir, metrics, db_path, url, state: Arc::default() }
    }

    /// Uploads everything pending up to `committed`, the newest TXID whose
    /// capture is recorded in the metadata. A segment past it may still be
    /// undone: capture writes the file before it commits its state, and a
    /// crash in between makes the restart discard the file and capture that
    /// range again, maybe with other boundaries or other pages; once in the
    /// store, such a segment would fork the chain. Errors leave the pending
    /// files in place for the next attempt.
    pub async fn ship(&self, committed: TxId) -> Result<Shipped> {
        let mut shipped = Shipped::default();
        let genesis = self.pending_dir.join(GENESIS_NAME);
        if genesis.exists() {
            let size = self.publish_genesis(&genesis).await?;
            shipped.objects += 1;
            shipped.bytes += size;
            shipped.max_txid = Some(TxId(1));
        }
        loop {
            let pending = self.pending_files(committed)?;
            let Some(first) = pending.first() else { break };
            let key = l0_key(first.header.generation, first.header.min_txid);
            let (payload_path, _temp) = if pending.len() == 1 {
                (first.path.clone(), None)
            } else {
                let merged = merge_files(&pending, &key).await?;
                (merged.path().to_path_buf(), Some(merged))
            };
            let size = std::fs::metadata(&payload_path)?.len();
            let max_txid = pending.last().expect("not empty").header.max_txid;
            let span = tracing::info_span!("ship", key = %key, max_txid = %max_txid);
            let upload = self.store.put(&key, Payload::File(payload_path), PutMode::Create);
            match tracing::Instrument::instrument(upload, span).await {
                Ok(_) => {
                    tracing::debug!(key = %key, %max_txid, segments = pending.len(), "uploaded");
                    self.metrics.record_upload(size);
                    shipped.objects += 1;
                    shipped.bytes += size;
                    shipped.max_txid = Some(max_txid);
                    self.record_shipped(max_txid).await?;
                    remove_through(&pending, max_txid)?;
                }
                Err(StoreError::AlreadyExists { .. }) => {
                    // A retry after a crash: the object holds a prefix of
                    // what is pending (or all of it).
                    let existing = self.existing_header(&key).await?;
                    if existing.pre_apply_checksum != first.header.pre_apply_checksum {
                        bail!(
                            "upload {key}: the store already holds a different segment under this key \
                             (pre-apply checksum {} vs {}): is another primary writing this prefix?",
                            existing.pre_apply_checksum,
                            first.header.pre_apply_checksum
                        );
                    }
                    tracing::info!(key = %key, max_txid = %existing.max_txid, "already uploaded; continuing after it");
                    self.record_shipped(existing.max_txid).await?;
                    remove_through(&pending, existing.max_txid)?;
                    shipped.max_txid = Some(existing.max_txid);
                }
                Err(e) => {
                    self.metrics.record_error();
                    return Err(e).with_context(|| format!("upload {key}"));
                }
            }
        }
        Ok(shipped)
    }

    /// Records that the store holds everything up to `txid`, before the
    /// pending files are removed: a crash while removing them leaves files
    /// the restart recognises as shipped (and removes) by this record.
    /// Otherwise a leftover file starting inside the uploaded object would
    /// be uploaded again under its own key, forking the chain.
    async fn record_shipped(&self, txid: TxId) -> Result<()> {
        let (db_path, url, state) = (self.db_path.clone(), self.url.clone(), self.state.clone());
        tokio::task::spawn_blocking(move || {
            let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.is_none() {
                *state = Some(StateDir::open(&db_path)?);
            }
            state.as_ref().expect("opened above").set_shipped(&url, txid)
        })
        .await?
    }

    /// Whether anything up to `committed` waits for upload.
    pub fn has_pending(&self, committed: TxId) -> Result<bool> {
        Ok(self.pending_dir.join(GENESIS_NAME).exists() || !self.pending_files(committed)?.is_empty())
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
        // Recorded before the file goes, as for every upload: a start
        // checks that the pending files continue the store from here.
        self.record_shipped(TxId(1)).await?;
        std::fs::remove_file(path)?;
        Ok(size)
    }

    /// Pending L0 segments up to `committed` in TXID order, validated as
    /// one contiguous run.
    fn pending_files(&self, committed: TxId) -> Result<Vec<PendingFile>> {
        let mut files = Vec::new();
        let entries = match std::fs::read_dir(&self.pending_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(e).context("list pending segments"),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == GENESIS_NAME || !name.ends_with(".seg") {
                continue;
            }
            let path = entry.path();
            let header = read_file_header(&path)?;
            if header.max_txid <= committed {
                files.push(PendingFile { path, header });
            }
        }
        files.sort_by_key(|f| f.header.min_txid);
        // Uploads of more than this many segments at once are split, to
        // bound the merge's open files after a long outage.
        files.truncate(256);
        for pair in files.windows(2) {
            if pair[1].header.min_txid != pair[0].header.max_txid.next() {
                bail!(
                    "pending segments {} and {} are not contiguous (metadata folder damaged?)",
                    pair[0].path.display(),
                    pair[1].path.display()
                );
            }
        }
        Ok(files)
    }
}

fn read_file_header(path: &Path) -> Result<Header> {
    let mut bytes = [0u8; HEADER_SIZE];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .with_context(|| format!("read pending segment {}", path.display()))?;
    Ok(read_segment_header(&path.display().to_string(), &bytes)?)
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

fn remove_through(pending: &[PendingFile], max_txid: TxId) -> Result<()> {
    for file in pending.iter().filter(|f| f.header.max_txid <= max_txid) {
        std::fs::remove_file(&file.path).with_context(|| format!("remove {}", file.path.display()))?;
    }
    Ok(())
}

async fn merge_files(pending: &[PendingFile], key: &str) -> Result<tempfile::NamedTempFile> {
    let paths: Vec<PathBuf> = pending.iter().map(|f| f.path.clone()).collect();
    let dir = paths[0].parent().expect("pending files are in a folder").to_path_buf();
    let key = key.to_string();
    tokio::task::spawn_blocking(move || -> Result<tempfile::NamedTempFile> {
        let mut inputs = Vec::with_capacity(paths.len());
        for path in &paths {
            let file = BufReader::with_capacity(16 * 1024, File::open(path)?);
            inputs.push(SegmentReader::open(path.display().to_string(), file)?);
        }
        let temp = tempfile::Builder::new().prefix(".merge-").tempfile_in(&dir)?;
        let out = BufWriter::new(temp.reopen()?);
        let (writer, _) = merge(&key, inputs, out)?;
        // Uploaded, then deleted: nothing to make durable.
        writer.into_inner().map_err(|e| e.into_error())?;
        Ok(temp)
    })
    .await
    .context("merge pending segments")?
}
