//! The compactor: turns the replicator's stream of small L0 segments into
//! L1 segments (one per time window) and periodic snapshots, keeps the
//! manifest current, and enforces retention. It works only through the
//! [`Store`] trait, so the same code runs in the Lambda, in `distributary
//! compact`, and in tests against any backend.
//!
//! # What one [`compact`] call does
//!
//! 1. Reads the manifest and applies L0 retention ([`retention`]): deletes
//!    the L0 segments of L1 segments older than
//!    [`CompactConfig::l0_retention`]; the new cursor rides on step 4's
//!    manifest update.
//! 2. Walks the L0 chain by name from `l0_min_txid` (one GET of each new
//!    segment, no LIST), advancing `newest`. The [`CompactMemory`] keeps
//!    the headers it read, and the bodies of small segments until the L1
//!    merge takes them, so a process that compacts again and again
//!    ([`compact_with`]) requests each L0 segment once: not once per run,
//!    and not a header and then a body.
//! 3. Groups the L0 segments into windows of [`CompactConfig::l1_window`] by
//!    their header timestamps. A window is closed once a later segment of the
//!    chain falls in a later window, or once the clock is a whole window past
//!    its end (an idle database). Each closed window becomes
//!    `l1/<min_txid>.seg`, the merge of its L0 segments. After an L1 segment
//!    whose timestamp is [`CompactConfig::snapshot_interval`] past the
//!    previous snapshot's, builds `snapshots/<max_txid>.seg`: the merge of
//!    the previous snapshot with the L1 segments after it. Snapshots
//!    therefore always sit on L1 boundaries.
//! 4. Publishes each object with create-if-absent, adds new snapshots to the
//!    snapshot index, then advances the manifest by compare-and-swap, once
//!    per L1 segment, from the version it last read or wrote.
//! 5. Retires snapshots past [`CompactConfig::snapshot_retention`] (always
//!    keeping the newest) and the L1 segments up to the oldest kept one.
//!
//! A watching process calls [`compact_watching`] instead, which runs all of
//! this only when the store may have work, and otherwise makes at most one
//! request (see its module, `schedule.rs`, for the argument).
//!
//! # Exactly-once results from at-least-once invocations
//!
//! Every object name is derived from its TXID range, every object is written
//! with create-if-absent, and whoever creates a name first defines its
//! content: a run that finds `l1/<t>.seg` or `snapshots/<t>.seg` already
//! there adopts it (reads its header) instead of its own result, and
//! continues the chain after the adopted object's `max_txid`. Window and
//! snapshot decisions depend only on segment timestamps along that chain, so
//! duplicate, late, reordered or concurrent runs build the same chain. The
//! manifest update is a compare-and-swap whose change function only moves
//! each field forward (TXIDs never decrease), so concurrent publishers merge
//! rather than overwrite each other. Objects are published before the
//! manifest points at them, and deleted only after it no longer does: a
//! crash at any step leaves every referenced object in place, and the next
//! run redoes the missing steps (finding the objects already written).
//!
//! # Memory
//!
//! Inputs are streamed to temp files and merged from there (one small read
//! buffer per input, at most [`CompactConfig::max_fan_in`] open at once);
//! outputs are written to a temp file and uploaded from it. Memory follows
//! the number of inputs, never the database size (the output's page index,
//! 16 bytes per page written, is the only part that grows with it).

mod error;
mod headers;
mod l1;
mod objects;
mod pass;
mod publish;
mod report;
pub mod retention;
mod schedule;
mod snapshot;
mod staging;

use std::path::PathBuf;
use std::time::Duration;

pub use self::error::CompactError;
pub use self::pass::{compact, compact_with};
pub(crate) use self::publish::manifest_gone;
pub use self::report::CompactReport;
pub use self::schedule::{CompactMemory, compact_watching};
/// The compactor's clock is the crate's ([`crate::clock`]); re-exported
/// where callers of [`compact`] have always found it.
pub use crate::clock::{Clock, ManualClock, SystemClock};

/// The compactor's thresholds. Every one is configurable (environment
/// variables for the Lambda, flags for `distributary compact`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactConfig {
    /// Width of the time windows whose L0 segments become one L1 segment,
    /// by segment timestamp. Default 1 minute.
    pub l1_window: Duration,
    /// Minimum time between snapshots, by segment timestamp. Default 1 hour.
    pub snapshot_interval: Duration,
    /// How long snapshots are kept (the newest is always kept). Default 7 days.
    pub snapshot_retention: Duration,
    /// How long L0 segments already covered by L1 stay, so readers that poll
    /// `l0/{t+1}` by name still find them. Default 5 minutes.
    pub l0_retention: Duration,
    /// Most merge inputs open at once; longer runs merge in stages. Bounds
    /// memory and file descriptors. Default 256.
    pub max_fan_in: usize,
    /// Where inputs and outputs are staged (the system temp folder if
    /// `None`). Needs room for the largest snapshot twice.
    pub temp_dir: Option<PathBuf>,
}

impl Default for CompactConfig {
    fn default() -> Self {
        CompactConfig {
            l1_window: Duration::from_secs(60),
            snapshot_interval: Duration::from_secs(3_600),
            snapshot_retention: Duration::from_secs(7 * 24 * 3_600),
            l0_retention: Duration::from_secs(5 * 60),
            max_fan_in: 256,
            temp_dir: None,
        }
    }
}
