//! How each store of a database starts: resumed from the metadata folder
//! when the store is where the folder says, otherwise planned from what
//! the store holds (a new generation, or a continuation with a full
//! catch-up). Reaching a store at the start retries transient failures,
//! until a bound (one-shot runs) or forever (daemons, until shutdown).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use distributary_core::TxId;
use distributary_core::format::{EncryptionKey, KeyCheck};
use distributary_core::retry::{ErrorClass, RetryBound, backoff, classify, retry_bounded};
use tokio::sync::watch;

use super::{CheckpointPolicy, ReplicaSpec, Replicator, Start, inspect};
use crate::generation::plan_start;
use crate::metrics::Metrics;
use crate::resume;
use crate::state::{StateDir, StoreProgress};

/// How [`Replicator::open`] reaches the database and its stores.
#[derive(Clone)]
pub struct Opening {
    /// Stops the waiting and retrying.
    pub shutdown: watch::Receiver<bool>,
    /// Wait for the app to create the database (`--exec`).
    pub wait_for_db: bool,
    /// Give up on a store after this (`None`: retry until shutdown).
    pub bound: Option<RetryBound>,
}

impl Replicator {
    /// Decides how each store starts (asking the stores), then starts
    /// capture ([`Replicator::start`]).
    pub async fn open(
        path: &Path,
        replicas: &[ReplicaSpec],
        policy: CheckpointPolicy,
        metrics: Arc<Metrics>,
        opening: &Opening,
    ) -> Result<Replicator> {
        let starts = plan_starts(path, replicas, &opening.shutdown, opening.wait_for_db, opening.bound).await?;
        let (path, replicas) = (path.to_path_buf(), replicas.to_vec());
        tokio::task::spawn_blocking(move || Replicator::start(&path, &replicas, &starts, policy, metrics)).await?
    }
}

/// The class of a failure, from its whole cause chain.
fn class_of(error: &anyhow::Error) -> ErrorClass {
    classify(error.as_ref())
}

/// Decides how each store starts: resume from the metadata, or look at the
/// store. A permanent failure is returned at once; transient ones are
/// retried until `bound` (one-shot) or forever (daemons, until shutdown).
pub(super) async fn plan_starts(
    path: &Path,
    replicas: &[ReplicaSpec],
    shutdown: &watch::Receiver<bool>,
    wait_for_db: bool,
    bound: Option<RetryBound>,
) -> Result<Vec<Start>> {
    let inspection = loop {
        let inspect_path = path.to_path_buf();
        match tokio::task::spawn_blocking(move || inspect(&inspect_path)).await? {
            Ok(inspection) => break inspection,
            Err(e) if wait_for_db && !path.exists() => {
                tracing::info!(db = %path.display(), "waiting for the app to create the database");
                if *shutdown.borrow() {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let mut starts = Vec::with_capacity(replicas.len());
    for replica in replicas {
        let key_check = replica.key.as_ref().map_or(KeyCheck::NONE, EncryptionKey::check);
        let store = replica.store.as_ref();
        if let Some(known) = inspection.resumable.iter().find(|r| r.url == replica.url) {
            if known.key_check == Some(key_check) {
                let check = resume_problem(path, replica, known, inspection.other_boot, shutdown, bound);
                match check.await? {
                    None => {
                        starts.push(Start::Resume);
                        continue;
                    }
                    Some(problem) => tracing::warn!(
                        store = %replica.url,
                        %problem,
                        "the metadata folder does not continue the store's chain (an upload not recorded before a \
                         kill, or writes lost in a machine restart): continuing from the store's newest TXID, \
                         catching up with every page"
                    ),
                }
            } else {
                // A generation never mixes keys (or keys and plaintext): the
                // store's manifest decides below, and a changed key starts a
                // new generation there.
                tracing::warn!(
                    store = %replica.url,
                    recorded = %known.key_check.map_or("unknown".to_string(), describe_key),
                    configured = %describe_key(key_check),
                    "the encryption key differs from the one this store was replicated with"
                );
            }
        }
        let plan = reach_store(&replica.url, shutdown, bound, || plan_start(store, inspection.page_size, key_check));
        starts.push(Start::Plan(plan.await?));
    }
    Ok(starts)
}

/// What keeps `known`, a store's progress in the metadata, from being
/// resumed as it stands (`None`: nothing). The store is asked how far its
/// chain goes: captures live in memory until the store acknowledges them
/// and the metadata records that just after, so a `kill -9` in between (or
/// a machine restart that lost the record) leaves the store ahead of the
/// folder, and a store ahead of what the folder captured cannot be
/// continued from it. Otherwise the recorded upload progress moves up to
/// the store's, and the pending files must continue it whole (checked
/// whole after a machine restart, `other_boot`; see `crate::resume`).
async fn resume_problem(
    path: &Path,
    replica: &ReplicaSpec,
    known: &StoreProgress,
    other_boot: bool,
    shutdown: &watch::Receiver<bool>,
    bound: Option<RetryBound>,
) -> Result<Option<String>> {
    let store = replica.store.as_ref();
    let newest = reach_store(&replica.url, shutdown, bound, || {
        resume::store_newest(store, known.generation, known.shipped_txid)
    })
    .await?;
    let after = match newest {
        None if known.shipped_txid > TxId::ZERO => {
            return Ok(Some(format!("the store holds no manifest of generation {}", known.generation)));
        }
        None => TxId::ZERO,
        Some(newest) if newest < known.shipped_txid => {
            return Ok(Some(format!(
                "the store's chain ends at TXID {newest}, before the {} recorded as uploaded",
                known.shipped_txid
            )));
        }
        Some(newest) if newest > known.captured_txid => {
            return Ok(Some(format!(
                "the store holds TXIDs up to {newest}, past the {} recorded as captured",
                known.captured_txid
            )));
        }
        Some(newest) => newest,
    };
    let (path, url, captured, known_shipped) =
        (path.to_path_buf(), replica.url.clone(), known.captured_txid, known.shipped_txid);
    tokio::task::spawn_blocking(move || -> Result<Option<String>> {
        let state = StateDir::open(&path)?;
        if let Some(gap) = resume::pending_gap(&state.pending_dir(&url), after, captured, other_boot)? {
            return Ok(Some(gap));
        }
        if after > known_shipped {
            state.set_shipped(&url, after)?;
        }
        Ok(None)
    })
    .await?
}

/// Runs `op` against a store: a permanent failure is returned at once;
/// transient ones are retried until `bound` (one-shot) or forever
/// (daemons, until shutdown).
pub async fn reach_store<T, F, Fut>(
    url: &str,
    shutdown: &watch::Receiver<bool>,
    bound: Option<RetryBound>,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if let Some(bound) = bound {
        return retry_bounded(bound, "reach the store", class_of, op).await;
    }
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if *shutdown.borrow() || class_of(&e) == ErrorClass::Permanent => return Err(e),
            Err(e) => {
                attempt += 1;
                tracing::warn!(store = %url, error = %format!("{e:#}"), "reach the store; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// A key check for a log line: "none" for plaintext.
fn describe_key(key_check: KeyCheck) -> String {
    if key_check == KeyCheck::NONE { "none".to_string() } else { format!("key {key_check}") }
}
