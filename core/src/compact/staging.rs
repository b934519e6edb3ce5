//! A pass's local staging: the temp files it keeps between building an L1
//! segment and the snapshot that follows, downloads of merge inputs, and
//! merges run off the async runtime.

use tempfile::TempPath;

use super::CompactError;
use super::headers::HeaderCache;
use super::objects::{LocalSegment, download, merge_files};
use crate::ids::TxId;
use crate::store::Store;

/// Local copies kept within a pass so a snapshot does not download what the
/// pass just built, beside what the process keeps across passes.
pub(crate) struct LocalCache<'a> {
    pub(crate) headers: &'a HeaderCache,
    pub(crate) snapshot: Option<(TxId, TempPath)>,
    pub(crate) l1: Vec<(TxId, TempPath)>,
}

/// Downloads an input the manifest led to; if it is gone, a newer run's
/// retention deleted it and this run must start over from a fresh manifest.
pub(crate) async fn download_or_raced(
    store: &dyn Store,
    headers: &HeaderCache,
    key: &str,
    dir: &std::path::Path,
) -> Result<TempPath, CompactError> {
    match download(store, headers, key, dir).await {
        Err(CompactError::Store(e)) if e.is_not_found() => {
            Err(CompactError::Raced { key: key.to_string(), attempts: 1 })
        }
        other => other,
    }
}

/// Runs [`merge_files`] on a blocking thread: merging is CPU and file I/O.
pub(crate) async fn merge_blocking(
    key: &str,
    inputs: Vec<(String, TempPath)>,
    dir: &std::path::Path,
    fan_in: usize,
) -> Result<(TempPath, crate::format::EncodeSummary), CompactError> {
    let object = key.to_string();
    let dir = dir.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        let local: Vec<LocalSegment> =
            inputs.iter().map(|(key, path)| LocalSegment { key: key.clone(), path: path.to_path_buf() }).collect();
        // `inputs` (and so the temp files) live until the merge is done.
        let result = merge_files(&object, &local, &dir, fan_in);
        drop(inputs);
        result
    });
    task.await.map_err(|e| CompactError::Task { key: key.to_string(), reason: e.to_string() })?
}
