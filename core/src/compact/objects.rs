//! Segment objects as the compactor sees them: headers and trailers read by
//! range requests, whole segments streamed to temp files, merges of temp
//! files on a blocking thread, and create-if-absent uploads.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use super::CompactError;
use super::headers::{BODY_MAX, HeaderCache};
use crate::format::{EncodeSummary, HEADER_SIZE, Header, SegmentReader, TRAILER_SIZE, Trailer, read_segment_header};
use crate::ids::{GenerationId, TxId};
use crate::merge::merge;
use crate::store::{ByteRange, GetOptions, Payload, PutMode, Store, StoreError};

/// Read buffer per merge input: small, because a merge holds one per input.
const INPUT_BUFFER: usize = 64 * 1024;
/// Write buffer of a merge output.
const OUTPUT_BUFFER: usize = 1 << 20;

/// A segment's key with its verified header.
#[derive(Clone, Debug)]
pub(crate) struct SegmentInfo {
    /// The object key.
    pub key: String,
    /// Its header.
    pub header: Header,
}

/// Reads the header of `key` with one 96-byte range request; `None` if the
/// object does not exist. Checks the header belongs where its name puts it:
/// generation `generation` and, for chains named by their first TXID,
/// `min_txid == named_min_txid`.
pub(crate) async fn fetch_header(
    store: &dyn Store,
    key: &str,
    generation: GenerationId,
    named_min_txid: Option<TxId>,
) -> Result<Option<Header>, CompactError> {
    let bytes = match store.get_range(key, ByteRange::Bounded { start: 0, end: HEADER_SIZE as u64 }).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    check_header(key, &bytes, generation, named_min_txid).map(Some)
}

/// The header at the start of `bytes`, checked as [`fetch_header`] says.
fn check_header(
    key: &str,
    bytes: &[u8],
    generation: GenerationId,
    named_min_txid: Option<TxId>,
) -> Result<Header, CompactError> {
    let header = read_segment_header(key, bytes)?;
    if header.generation != generation {
        return Err(CompactError::Inconsistent {
            key: key.to_string(),
            reason: format!("belongs to generation {}, expected {generation}", header.generation),
        });
    }
    if let Some(named) = named_min_txid
        && header.min_txid != named
    {
        return Err(CompactError::Inconsistent {
            key: key.to_string(),
            reason: format!("header covers {} but the name says it starts at {named}", header.range()),
        });
    }
    Ok(header)
}

/// How [`fetch_header_cached`] reads a segment whose header is not cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// The header alone, by one 96-byte range request.
    Header,
    /// The whole object in one GET, for a segment this compactor will merge
    /// (an L0 segment): one request instead of a range request now and a
    /// GET later. A body up to [`BODY_MAX`] is kept in the cache for the
    /// merge ([`download`] takes it); of a larger one only the first chunks
    /// are read, and the merge fetches it again.
    Whole,
}

/// [`fetch_header`] through `cache`: a header read before costs no request.
pub(crate) async fn fetch_header_cached(
    store: &dyn Store,
    cache: &HeaderCache,
    key: &str,
    generation: GenerationId,
    named_min_txid: Option<TxId>,
    read: Read,
) -> Result<Option<Header>, CompactError> {
    if let Some(header) = cache.get(store.url(), key) {
        return Ok(Some(header));
    }
    let header = match read {
        Read::Header => fetch_header(store, key, generation, named_min_txid).await?,
        Read::Whole => fetch_whole(store, cache, key, generation, named_min_txid).await?,
    };
    if let Some(header) = &header {
        cache.insert(store.url(), key, header);
    }
    Ok(header)
}

/// [`Read::Whole`].
async fn fetch_whole(
    store: &dyn Store,
    cache: &HeaderCache,
    key: &str,
    generation: GenerationId,
    named_min_txid: Option<TxId>,
) -> Result<Option<Header>, CompactError> {
    let mut result = match store.get(key, GetOptions::default()).await {
        Ok(result) => result,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if result.meta.size <= BODY_MAX {
        let body = result.bytes().await?;
        let header = check_header(key, &body, generation, named_min_txid)?;
        cache.insert_body(store.url(), key, body);
        return Ok(Some(header));
    }
    let mut head = Vec::with_capacity(HEADER_SIZE);
    while head.len() < HEADER_SIZE
        && let Some(chunk) = result.body.next().await
    {
        head.extend_from_slice(&chunk?);
    }
    check_header(key, &head, generation, named_min_txid).map(Some)
}

/// Reads the trailer of `key` (its last 32 bytes): the post-apply checksum
/// without downloading the segment. Not verified against the file checksum;
/// callers use it for the manifest's informational `newest.checksum`, and
/// readers verify every segment they apply.
/// A body kept in `cache` answers without a request.
pub(crate) async fn fetch_trailer(store: &dyn Store, cache: &HeaderCache, key: &str) -> Result<Trailer, CompactError> {
    let bytes = match cache.body_suffix(store.url(), key, TRAILER_SIZE) {
        Some(bytes) => bytes,
        None => store.get_range(key, ByteRange::Suffix(TRAILER_SIZE as u64)).await?,
    };
    let raw: [u8; TRAILER_SIZE] = bytes.as_ref().try_into().map_err(|_| CompactError::Inconsistent {
        key: key.to_string(),
        reason: format!("a {}-byte object cannot hold a trailer", bytes.len()),
    })?;
    Ok(Trailer::decode(&raw, key)?)
}

/// Streams object `key` into a new temp file in `dir` (deleted when the
/// returned path is dropped). Memory holds one body chunk at a time. A body
/// kept in `cache` by [`Read::Whole`] is written without a request.
pub(crate) async fn download(
    store: &dyn Store,
    cache: &HeaderCache,
    key: &str,
    dir: &Path,
) -> Result<TempPath, CompactError> {
    let io = |op: &'static str, path: &Path, source| CompactError::Io { op, path: path.to_path_buf(), source };
    if let Some(body) = cache.take_body(store.url(), key) {
        let (mut file, path) = new_temp_file(dir)?;
        std::io::Write::write_all(&mut file, &body).map_err(|e| io("write", &path, e))?;
        return Ok(path);
    }
    let mut result = store.get(key, GetOptions::default()).await?;
    let (file, path) = new_temp_file(dir)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut written = 0u64;
    while let Some(chunk) = result.body.next().await {
        let chunk = chunk?;
        file.write_all(&chunk).await.map_err(|e| io("write", &path, e))?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(|e| io("write", &path, e))?;
    let expected = result.range.end - result.range.start;
    if written != expected {
        return Err(StoreError::Backend {
            op: "get",
            key: key.to_string(),
            message: format!("body ended after {written} of {expected} bytes"),
            retryable: true,
        }
        .into());
    }
    Ok(path)
}

/// A merge input: the object's name (for messages) and the local file
/// holding it.
pub(crate) struct LocalSegment {
    pub key: String,
    pub path: PathBuf,
}

/// Merges `inputs` (a contiguous run, oldest first) into a new temp file in
/// `dir`, named `object` in messages. At most `fan_in` files are open at
/// once: longer runs are merged in stages (the merge of a contiguous run is
/// associative), so memory and file descriptors follow `fan_in`, never the
/// database size. Blocking: call from `spawn_blocking`.
pub(crate) fn merge_files(
    object: &str,
    inputs: &[LocalSegment],
    dir: &Path,
    fan_in: usize,
) -> Result<(TempPath, EncodeSummary), CompactError> {
    let fan_in = fan_in.max(2);
    if inputs.len() <= fan_in {
        return merge_once(object, inputs, dir);
    }
    // Intermediate results live until the next stage has read them.
    let mut stage: Vec<(String, TempPath)> = Vec::new();
    for (i, group) in inputs.chunks(fan_in).enumerate() {
        let name = format!("{object} (stage {i})");
        let (path, _) = merge_once(&name, group, dir)?;
        stage.push((name, path));
    }
    let next: Vec<LocalSegment> =
        stage.iter().map(|(key, path)| LocalSegment { key: key.clone(), path: path.to_path_buf() }).collect();
    merge_files(object, &next, dir, fan_in)
}

fn merge_once(object: &str, inputs: &[LocalSegment], dir: &Path) -> Result<(TempPath, EncodeSummary), CompactError> {
    let mut readers = Vec::with_capacity(inputs.len());
    for input in inputs {
        let file = File::open(&input.path).map_err(|source| CompactError::Io {
            op: "open",
            path: input.path.clone(),
            source,
        })?;
        readers.push(SegmentReader::open(input.key.clone(), BufReader::with_capacity(INPUT_BUFFER, file))?);
    }
    let (file, path) = new_temp_file(dir)?;
    let (out, summary) = merge(object, readers, BufWriter::with_capacity(OUTPUT_BUFFER, file))
        .map_err(|source| CompactError::Merge { key: object.to_string(), source })?;
    let file = out.into_inner().map_err(|e| CompactError::Io {
        op: "write",
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    drop(file);
    Ok((path, summary))
}

fn new_temp_file(dir: &Path) -> Result<(File, TempPath), CompactError> {
    let named = tempfile::Builder::new()
        .prefix("distributary-compact-")
        .suffix(".seg")
        .tempfile_in(dir)
        .map_err(|source| CompactError::Io { op: "create", path: dir.to_path_buf(), source })?;
    Ok(named.into_parts())
}

/// What a create-if-absent upload found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upload {
    /// This call wrote the object.
    Created,
    /// Another run had written it first; its content is the canonical one.
    AlreadyExisted,
}

/// Uploads the file at `path` as `key`, only if no object exists there.
pub(crate) async fn upload(store: &dyn Store, key: &str, path: &Path) -> Result<Upload, CompactError> {
    match store.put(key, Payload::File(path.to_path_buf()), PutMode::Create).await {
        Ok(_) => Ok(Upload::Created),
        Err(StoreError::AlreadyExists { .. }) => Ok(Upload::AlreadyExisted),
        Err(e) => Err(e.into()),
    }
}
