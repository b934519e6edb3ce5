//! What a compactor that runs again and again (`distributary compact
//! --watch`, `replicate` with `compaction: local`, a warm Lambda) keeps
//! between runs, and how a watching pass uses it to cost at most one
//! request when nothing is due.
//!
//! # When a store has work
//!
//! Nothing in the store changes by itself; a full pass ([`super::compact_with`])
//! has work only when one of these happened since the last one:
//!
//! 1. **A new L0 segment**: the replicator does not touch the manifest per
//!    upload, so only a probe of `l0/{next}` by name sees one. It matters
//!    once its window can close: right after the window ends (a busy
//!    database's next segment closes it) or, failing that, a whole window
//!    later (the clock closes it). A probe twice a window finds it in time;
//!    once one is known, nothing more needs probing until that deadline,
//!    because the full pass walks the whole chain. A compactor in the
//!    replicator's process (`compaction: local`) is handed each segment
//!    the replicator uploaded ([`CompactMemory::remember_upload`]), so its
//!    probes and walks of a busy database cost no request at all.
//! 2. **A deadline already known**: the L0 segments of the oldest L1 segment
//!    expire at its timestamp plus `l0_retention`; the oldest snapshot kept
//!    at its timestamp plus `snapshot_retention`. Both are read by the last
//!    full pass; new L1 segments and snapshots come only from full passes.
//!    Once the database is idle, the L0 deadline is the newest group's, so
//!    one pass deletes them all.
//! 3. **Someone else changed the manifest**: a new generation (the old
//!    chain just stops, so no probe ever sees it), another compactor, a
//!    person. A conditional GET (`If-None-Match`) answers `304` when not.
//!
//! So a watching pass ([`compact_watching`]) with no deadline reached makes
//! at most one request: the manifest check once per `l1_window` (a minute
//! by default), the probe twice per `l1_window`, and nothing at all in
//! between or while a known segment waits for its window. A pass that finds work runs the full pass, whose
//! request count follows the work (one GET per new L0 segment, the uploads,
//! one manifest update per window closed).
//!
//! Everything here is a hint for skipping work: a full pass never trusts
//! it, so a wrong or stale outlook delays compaction by at most one
//! deadline and never corrupts a store. Any error forgets it.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::headers::HeaderCache;
use super::headers::lock;
use super::objects::{Read, fetch_header_cached};
use super::pass::compact_from;
use super::retention::{L0Retention, Retired};
use super::{Clock, CompactConfig, CompactError, CompactReport};
use crate::format::read_segment_header;
use crate::ids::{GenerationId, TxId};
use crate::layout::{MANIFEST_KEY, l0_key};
use crate::manifest::{Manifest, Versioned, parse_document};
use crate::store::{ETag, GetOptions, Store, StoreError};

/// What a process remembers between compaction runs: segment headers and
/// small L0 bodies ([`HeaderCache`]), and per store what the last full pass
/// learnt about the next one ([`Outlook`]). Shared by reference; safe
/// across tasks; one memory may serve many stores.
#[derive(Debug, Default)]
pub struct CompactMemory {
    pub(crate) headers: HeaderCache,
    outlooks: Mutex<HashMap<String, Outlook>>,
}

/// What the last full pass over one store knows about the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outlook {
    generation: GenerationId,
    /// The manifest's ETag after the pass (its last read or write).
    manifest_etag: ETag,
    /// When a pass last saw the manifest unchanged.
    manifest_checked_ms: u64,
    /// When a pass last probed for the next L0 segment.
    probed_ms: u64,
    /// The L0 segment to probe for.
    next_l0: TxId,
    /// A segment not yet in L1 is known: no probe needed until `due_ms`.
    pending: bool,
    /// The earliest known deadline (`u64::MAX`: none).
    due_ms: u64,
}

impl CompactMemory {
    /// An empty memory.
    pub fn new() -> CompactMemory {
        CompactMemory::default()
    }

    fn outlook(&self, store_url: &str) -> Option<Outlook> {
        self.lock().get(store_url).cloned()
    }

    pub(crate) fn set_outlook(&self, store_url: &str, outlook: Outlook) {
        self.lock().insert(store_url.to_string(), outlook);
    }

    pub(crate) fn forget_outlook(&self, store_url: &str) {
        self.lock().remove(store_url);
    }

    /// Remembers an L0 segment this process just uploaded to `store_url`
    /// under `key` (its whole bytes), as if a pass had read it: a compactor
    /// in the same process (`compaction: local`) then finds and merges it
    /// without a request. A body that is not a valid segment is refused.
    pub fn remember_upload(&self, store_url: &str, key: &str, body: Bytes) -> Result<(), CompactError> {
        let header = read_segment_header(key, &body)?;
        self.headers.insert(store_url, key, &header);
        self.headers.insert_body(store_url, key, body);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outlook>> {
        lock(&self.outlooks)
    }
}

impl Outlook {
    /// The outlook after a full pass at `now_ms`.
    /// `next_l0`, `pending_ms` and `l0` are those of the pass
    /// ([`super::pass`]); `retired`, what snapshot retention left.
    pub(crate) fn after_pass(
        config: &CompactConfig,
        next_l0: TxId,
        pending_ms: Option<u64>,
        l0: &L0Retention,
        retired: &Retired,
        now_ms: u64,
    ) -> Outlook {
        let manifest: &Manifest = &retired.manifest.value;
        let window_due = pending_ms.map(|timestamp_ms| window_due(config, timestamp_ms, now_ms));
        // An idle database's L0 segments are all in L1: rather than one
        // pass (a delete and a manifest update) per window as each group
        // expires, one pass when the newest group does deletes them all.
        let l0_due = match pending_ms {
            None => l0.due_ms.map(|oldest| {
                let retention_ms = u64::try_from(config.l0_retention.as_millis()).unwrap_or(u64::MAX);
                oldest.max(manifest.newest.timestamp_ms.saturating_add(retention_ms))
            }),
            Some(_) => l0.due_ms,
        };
        let due_ms = [window_due, l0_due, retired.due_ms].into_iter().flatten().min().unwrap_or(u64::MAX);
        Outlook {
            generation: manifest.generation,
            manifest_etag: retired.manifest.etag.clone(),
            manifest_checked_ms: now_ms,
            probed_ms: now_ms,
            next_l0,
            pending: pending_ms.is_some(),
            due_ms,
        }
    }
}

/// When a pass should look again at the window holding a segment of
/// `timestamp_ms` that is not in L1 yet: a little after the window ends,
/// when a busy database's next segment (uploaded within its sync interval)
/// closes it; past that, when the clock closes it, a whole window later.
fn window_due(config: &CompactConfig, timestamp_ms: u64, now_ms: u64) -> u64 {
    let window_ms = u64::try_from(config.l1_window.as_millis()).unwrap_or(u64::MAX).max(1);
    let window = timestamp_ms / window_ms;
    let next_segment_due = window.saturating_add(1).saturating_mul(window_ms).saturating_add(window_ms / 12);
    if now_ms < next_segment_due { next_segment_due } else { window.saturating_add(2).saturating_mul(window_ms) }
}

/// One pass of a compactor that runs again and again (see the module
/// docs): a full [`super::compact_with`] when the store may have work, otherwise
/// at most one request. Returns the full pass's report, or `None` when the
/// pass found nothing due.
pub async fn compact_watching(
    store: &dyn Store,
    config: &CompactConfig,
    clock: &dyn Clock,
    memory: &CompactMemory,
) -> Result<Option<CompactReport>, CompactError> {
    let now_ms = clock.now_ms();
    let mut known = None;
    if let Some(outlook) = memory.outlook(store.url())
        && now_ms < outlook.due_ms
    {
        match quiet_check(store, config, memory, outlook, now_ms).await {
            Ok(Check::Quiet) => return Ok(None),
            Ok(Check::Due(manifest)) => known = manifest,
            Err(error) => {
                memory.forget_outlook(store.url());
                return Err(error);
            }
        }
    }
    compact_from(store, config, clock, memory, known).await.map(Some)
}

/// What the one request of a watching pass found.
#[derive(Debug)]
enum Check {
    /// Nothing to do before the next deadline.
    Quiet,
    /// A full pass is due; with the manifest when the check just read it
    /// (it changed), which the full pass starts from instead of reading it
    /// again.
    Due(Option<Versioned<Manifest>>),
}

/// The one request of a pass before every known deadline. Updates the
/// outlook it was given.
async fn quiet_check(
    store: &dyn Store,
    config: &CompactConfig,
    memory: &CompactMemory,
    mut outlook: Outlook,
    now_ms: u64,
) -> Result<Check, CompactError> {
    let check_every_ms = u64::try_from(config.l1_window.as_millis()).unwrap_or(u64::MAX);
    if now_ms.saturating_sub(outlook.manifest_checked_ms) >= check_every_ms {
        let options = GetOptions { range: None, if_none_match: Some(outlook.manifest_etag.clone()) };
        return match store.get(MANIFEST_KEY, options).await {
            Err(StoreError::NotModified { .. }) => {
                outlook.manifest_checked_ms = now_ms;
                memory.set_outlook(store.url(), outlook);
                Ok(Check::Quiet)
            }
            // Changed: the full pass starts from what was just read. One
            // that cannot be used as read (no ETag, not a manifest) is read
            // again by the pass, which reports what is wrong with it.
            Ok(result) => {
                let etag = result.meta.etag.clone();
                let bytes = result.bytes().await?;
                let manifest = etag.and_then(|etag| {
                    let value = parse_document::<Manifest>(MANIFEST_KEY, &bytes).ok()?;
                    Some(Versioned { value, etag })
                });
                Ok(Check::Due(manifest))
            }
            // Gone: the full pass finds out what is there now.
            Err(e) if e.is_not_found() => Ok(Check::Due(None)),
            Err(e) => Err(e.into()),
        };
    }
    // A known segment waits for its window: nothing to probe for. Otherwise
    // twice a window is often enough: a segment found up to half a window
    // late is still merged when its window closes.
    if outlook.pending || now_ms.saturating_sub(outlook.probed_ms) < check_every_ms / 2 {
        return Ok(Check::Quiet);
    }
    outlook.probed_ms = now_ms;
    let key = l0_key(outlook.generation, outlook.next_l0);
    let Some(header) =
        fetch_header_cached(store, &memory.headers, &key, outlook.generation, Some(outlook.next_l0), Read::Whole)
            .await?
    else {
        memory.set_outlook(store.url(), outlook);
        return Ok(Check::Quiet);
    };
    outlook.pending = true;
    outlook.due_ms = outlook.due_ms.min(window_due(config, header.timestamp_ms, now_ms));
    let check = if now_ms < outlook.due_ms { Check::Quiet } else { Check::Due(None) };
    memory.set_outlook(store.url(), outlook);
    Ok(check)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_pending_window_is_due_after_its_end_then_when_the_clock_closes_it() {
        let config = CompactConfig { l1_window: Duration::from_secs(60), ..CompactConfig::default() };
        // A segment at 130 s lies in the window [120 s, 180 s).
        assert_eq!(window_due(&config, 130_000, 131_000), 185_000, "just after the window ends");
        assert_eq!(window_due(&config, 130_000, 185_000), 240_000, "then a whole window later");
    }
}
