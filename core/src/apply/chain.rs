//! Walking a plan's chain by name: the snapshot (if the plan starts from
//! one), then L1 and L0 objects found by their deterministic keys, each
//! checked against the plan (generation, target) as soon as its 96-byte
//! header has arrived, so the next key is known while the body is still
//! downloading. How bodies are downloaded and where they go is the
//! [`Fetcher`]'s business: native readers download them on background tasks,
//! the wasm reader keeps them in memory.

use std::collections::VecDeque;

use super::ApplyError;
use crate::format::Header;
use crate::ids::TxId;
use crate::layout::{Level, l0_key, l1_key, snapshot_key};
use crate::plan::{Base, HistoryPoint, Link, Plan};

/// An object whose header has arrived; `body` brings the whole object.
#[derive(Debug)]
pub struct Started<B> {
    /// The object's header, already decoded and validated.
    pub header: Header,
    /// The object's size in bytes.
    pub size: u64,
    /// The whole object (header included), or a handle that brings it.
    pub body: B,
}

/// Downloads objects for [`walk_chain`] and hands them on in chain order.
// Plain `async fn`: native fetchers' futures are `Send` and the wasm one's
// are not, and callers rely on auto-trait leakage from the concrete type.
#[allow(async_fn_in_trait)]
pub trait Fetcher {
    /// The downloaded (or downloading) object.
    type Body;

    /// Starts downloading `key` and returns once its header is in. `None`
    /// if the object does not exist.
    async fn start(&mut self, key: &str) -> Result<Option<Started<Self::Body>>, ApplyError>;

    /// Hands object `key` on, in chain order. `false` stops the walk: the
    /// receiver failed and reports why itself.
    async fn send(&mut self, key: String, started: Started<Self::Body>) -> bool;

    /// Drops an object started but not needed (it goes past the target).
    fn discard(&mut self, body: Self::Body);

    /// Whether the walk leaves the plan's snapshot out (its receiver
    /// fetches it after the rest of the chain) and starts after it.
    fn skips_snapshot(&self) -> bool {
        false
    }
}

/// Walks `plan`'s chain by name and sends each object to `fetcher`.
/// Stops at the target, at the end of the chain (the first L0 key not
/// found), when `send` says so, or on the first error, which it returns
/// after the objects before it were sent.
pub async fn walk_chain<F: Fetcher>(fetcher: &mut F, plan: &Plan) -> Result<(), ApplyError> {
    let generation = plan.generation;
    let target_txid = match plan.target {
        HistoryPoint::TxId(txid) => Some(txid),
        _ => None,
    };
    let target_ms = match plan.target {
        HistoryPoint::Timestamp(ms) => Some(ms),
        _ => None,
    };
    let mut position = match plan.base {
        Base::Replica(position) => position.txid,
        Base::Snapshot(snapshot) if fetcher.skips_snapshot() => snapshot.txid,
        Base::Snapshot(snapshot) => {
            let key = snapshot_key(generation, snapshot.txid);
            let started = fetcher.start(&key).await?.ok_or_else(|| ApplyError::Missing {
                key: key.clone(),
                from_txid: TxId(1),
                to_txid: snapshot.txid,
            })?;
            if !started.header.flags.snapshot() || started.header.max_txid != snapshot.txid {
                return Err(ApplyError::Discontinuous {
                    key,
                    range: started.header.range(),
                    reason: format!("expected the snapshot at TXID {}", snapshot.txid),
                });
            }
            if !fetcher.send(key, started).await {
                return Ok(());
            }
            snapshot.txid
        }
    };
    if matches!(plan.target, HistoryPoint::Snapshot(_)) || target_txid == Some(position) {
        return Ok(());
    }

    let mut links: VecDeque<Link> = plan.links.iter().cloned().collect();
    while let Some(link) = links.pop_front() {
        let (level, until) = match &link {
            Link::Object { level, max_txid, .. } => (*level, Some(*max_txid)),
            Link::L1 { until_txid, .. } => (Level::L1, Some(*until_txid)),
            Link::L0 { .. } => (Level::L0, None),
        };
        loop {
            if until.is_some_and(|until| position >= until) {
                break;
            }
            let key = match (&link, level) {
                (Link::Object { key, .. }, _) => key.clone(),
                (_, Level::L1) => l1_key(generation, position.next()),
                _ => l0_key(generation, position.next()),
            };
            let Some(started) = fetcher.start(&key).await? else {
                if level == Level::L0 {
                    // The end of the log, unless an exact TXID is still ahead.
                    return match target_txid {
                        Some(target) if position < target => {
                            Err(ApplyError::Missing { key, from_txid: position.next(), to_txid: target })
                        }
                        _ => Ok(()),
                    };
                }
                return Err(ApplyError::Missing {
                    key,
                    from_txid: position.next(),
                    to_txid: until.unwrap_or(position.next()),
                });
            };
            let header = &started.header;
            if header.generation != generation {
                return Err(ApplyError::Discontinuous {
                    key,
                    range: header.range(),
                    reason: format!("belongs to generation {}, not {generation}", header.generation),
                });
            }
            let overshoots = target_txid.is_some_and(|t| header.max_txid > t)
                || target_ms.is_some_and(|ms| header.timestamp_ms > ms);
            if overshoots {
                let range = header.range();
                fetcher.discard(started.body);
                if level == Level::L1 {
                    // A compacted object goes past the target: continue with
                    // the finer L0 chain from here, if retention kept it.
                    links.clear();
                    links.push_back(Link::L0 { from_txid: position.next() });
                    break;
                }
                return match target_txid {
                    Some(target) => Err(ApplyError::InsideSegment {
                        target,
                        key,
                        range,
                        before: TxId(range.min_txid.0.saturating_sub(1)),
                        after: range.max_txid,
                    }),
                    // A timestamp target: the state before this object is
                    // the newest at or before the time.
                    None => Ok(()),
                };
            }
            let max_txid = header.max_txid;
            if !fetcher.send(key, started).await {
                return Ok(());
            }
            position = max_txid;
            if target_txid == Some(position) {
                return Ok(());
            }
            if matches!(link, Link::Object { .. }) {
                break;
            }
        }
    }
    match target_txid {
        Some(target) if position < target => Err(ApplyError::Missing {
            key: l0_key(generation, position.next()),
            from_txid: position.next(),
            to_txid: target,
        }),
        _ => Ok(()),
    }
}
