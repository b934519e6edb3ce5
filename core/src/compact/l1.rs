//! L1 segments: which L0 segments form a closed window, and merging them
//! into (or adopting) the window's L1 segment.

use tracing::{Instrument, debug, info, info_span};

use super::objects::{SegmentInfo, Upload, fetch_header, upload};
use super::staging::{LocalCache, download_or_raced, merge_blocking};
use super::{CompactConfig, CompactError, CompactReport};
use crate::format::{Codecs, Header};
use crate::store::Store;

/// The first window of `l0s` if it is closed: its segments share the first
/// one's window (or an earlier one, when a clock stepped back), and either a
/// later segment starts a later window, or `now_ms` is a whole window past
/// the window's end (no more syncs are coming for it).
pub(crate) fn closed_run<'a>(l0s: &'a [SegmentInfo], config: &CompactConfig, now_ms: u64) -> Option<&'a [SegmentInfo]> {
    let window_ms = u64::try_from(config.l1_window.as_millis()).unwrap_or(u64::MAX).max(1);
    let first = l0s.first()?;
    let window = first.header.timestamp_ms / window_ms;
    if let Some(end) = l0s.iter().position(|s| s.header.timestamp_ms / window_ms > window) {
        return Some(&l0s[..end]);
    }
    let closes_at = window.saturating_add(2).saturating_mul(window_ms);
    (now_ms >= closes_at).then_some(l0s)
}

/// Merges `run` into `key` (an L1 segment), or adopts the one a concurrent
/// run wrote first. Returns the header of the object now in the store.
pub(crate) async fn build_l1(
    store: &dyn Store,
    config: &CompactConfig,
    key: &str,
    run: &[SegmentInfo],
    dir: &std::path::Path,
    cache: &mut LocalCache<'_>,
    report: &mut CompactReport,
) -> Result<Header, CompactError> {
    let min_txid = run[0].header.min_txid;
    let max_txid = run[run.len() - 1].header.max_txid;
    let span = info_span!("build_l1", key, min_txid = %min_txid, max_txid = %max_txid, inputs = run.len());
    async {
        let mut files = Vec::with_capacity(run.len());
        for input in run {
            files.push((input.key.clone(), download_or_raced(store, cache.headers, &input.key, dir).await?));
        }
        let (path, summary) = merge_blocking(key, files, dir, config.max_fan_in).await?;
        match upload(store, key, &path).await? {
            Upload::Created => {
                report.l1_created += 1;
                info!(size = summary.size, pages = summary.page_count, "L1 segment written");
                cache.l1.push((min_txid, path));
                let header = Header {
                    min_txid,
                    max_txid,
                    timestamp_ms: run[run.len() - 1].header.timestamp_ms,
                    commit: run[run.len() - 1].header.commit,
                    compression: Codecs::union_of(run.iter().map(|input| input.header.compression)),
                    ..run[0].header.clone()
                };
                // L0 retention reads it when the cursor reaches it.
                cache.headers.insert(store.url(), key, &header);
                Ok(header)
            }
            Upload::AlreadyExisted => {
                report.l1_adopted += 1;
                debug!("a concurrent run wrote this L1 segment first; adopting it");
                fetch_header(store, key, run[0].header.generation, Some(min_txid))
                    .await?
                    .ok_or_else(|| CompactError::Raced { key: key.to_string(), attempts: 1 })
            }
        }
    }
    .instrument(span)
    .await
}
