//! What a reader that follows a store decides at each poll, shared by
//! `edge-reader serve` and the simulated readers of the CDN benchmark
//! (`tests/src/fleet.rs`), so both follow the same protocol: whether a
//! changed manifest asks for a sync, and when to poll next.

use std::time::Duration;

use crate::ids::{GenerationId, TxId};
use crate::manifest::Manifest;

/// Whether a changed manifest asks for a sync the L0 probe did not reveal:
/// another generation, newer TXIDs (compacted into L1 before the replica
/// saw their L0), or retention past the replica's position.
pub fn needs_sync(manifest: &Manifest, generation: GenerationId, txid: TxId) -> bool {
    let floor = match manifest.l1 {
        Some(l1) => l1.min_txid.0.saturating_sub(1),
        None => manifest.l0_min_txid.0.saturating_sub(1),
    };
    manifest.generation != generation || manifest.newest.txid > txid || floor > txid.0
}

/// How long to wait, after a poll that applied a segment captured at
/// `captured_ms`, before the next poll.
///
/// A primary writing steadily uploads once per sync interval, right after
/// each capture, so the next segment is expected one interval after this
/// one was captured. Polling one interval after the *reader's* poll
/// instead left the phase between the two clocks to chance, fixed for the
/// whole run: a reader whose polls fell just before each upload saw every
/// change nearly a whole interval late (`bench/serve.py`, steady writes:
/// p50 1.52 s with the primary's side at 0.43 s). So the follower polls
/// at `captured_ms + poll + ALIGN_MARGIN` (the margin covers the upload),
/// taking no less than half an interval and no more than one: the requests
/// per interval stay what they were. A segment whose capture time is in
/// the future or over an interval ago (clocks that disagree, a backlog)
/// says nothing of the phase: one interval then.
pub fn aligned_delay(poll: Duration, captured_ms: u64, now_ms: u64) -> Duration {
    const ALIGN_MARGIN: Duration = Duration::from_millis(100);
    let Some(age) = now_ms.checked_sub(captured_ms).map(Duration::from_millis) else { return poll };
    if age > poll {
        return poll;
    }
    (poll + ALIGN_MARGIN).saturating_sub(age).clamp(poll / 2, poll)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_align_to_the_primary_uploads_without_polling_more_often() {
        let poll = Duration::from_secs(1);
        // Found 700 ms after its capture: the next upload is due in 300 ms,
        // polled at 400 (the margin), but never sooner than half an interval.
        assert_eq!(aligned_delay(poll, 10_000, 10_700), Duration::from_millis(500));
        assert_eq!(aligned_delay(poll, 10_000, 10_450), Duration::from_millis(650));
        // Found right after its capture: one interval, as before.
        assert_eq!(aligned_delay(poll, 10_000, 10_050), poll);
        // Clocks that disagree, or an old segment: one interval.
        assert_eq!(aligned_delay(poll, 10_000, 9_000), poll);
        assert_eq!(aligned_delay(poll, 10_000, 12_000), poll);
    }
}
