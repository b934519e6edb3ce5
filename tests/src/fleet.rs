//! Simulated edge readers, many in one process (issue #18): each one is a
//! tokio task with its own in-memory replica ([`MemoryDatabase`], applied
//! and verified by core like the wasm reader's) that follows the store
//! with the protocol of `edge-reader serve`'s follower
//! (`edge-reader/src/serve/follower.rs`, "Requests per poll"):
//!
//! 1. probe `l0/{t+1}` (a HEAD: a one-byte ranged GET over HTTP); found
//!    means sync ([`sync_in_memory`]: manifest, then the segments);
//! 2. otherwise, at most once per manifest interval, a conditional GET of
//!    `manifest.json`, and a sync if it asks for one;
//! 3. sleep one poll interval (aligned to the primary's uploads after a
//!    sync that applied something; doubled per failure, capped at 30 s).
//!
//! Since then serve's follower also skips, on a busy database, the probe
//! after a poll that applied something and the manifest read of each
//! sync; the fleet does not, so what it counts at the origin is an upper
//! bound of what real readers send.
//!
//! All readers share one store, so one HTTP client and its connection pool:
//! 10,000 readers cost 10,000 tasks and their images, not 10,000 clients.
//! Start times are spread over the first poll interval, as independent
//! readers' would be.
//!
//! What the fleet measures: requests (through a [`CountingStore`]) and the
//! lag of every transaction a reader received — commit time on the primary
//! (a [`CommitLog`] the writer fills) to the moment the reader holds it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use distributary_core::TxId;
use distributary_core::apply::{MemoryDatabase, SyncOptions, sync_in_memory};
use distributary_core::clock::now_ms;
use distributary_core::layout::{MANIFEST_KEY, l0_key};
use distributary_core::manifest::{Manifest, parse_document};
use distributary_core::poll::{aligned_delay, needs_sync};
use distributary_core::store::{ETag, GetOptions, Store, StoreError};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::counting::CountingStore;

/// When each transaction of the run was committed on the primary: the
/// writer's `k`-th commit (from 1) is TXID `base + k`, since every
/// committed transaction takes the next TXID and the writer is the
/// primary's only one (the run checks the final TXID against this).
#[derive(Debug)]
pub struct CommitLog {
    base: TxId,
    commits: RwLock<Vec<Instant>>,
}

impl CommitLog {
    /// A log of the commits after `base`, the primary's TXID before the
    /// writer starts.
    pub fn new(base: TxId) -> CommitLog {
        CommitLog { base, commits: RwLock::new(Vec::new()) }
    }

    /// Records the next commit, made at `at`.
    pub fn push(&self, at: Instant) {
        self.commits.write().unwrap_or_else(|p| p.into_inner()).push(at);
    }

    /// The TXID before the first logged commit.
    pub fn base(&self) -> TxId {
        self.base
    }

    /// The TXID of the newest logged commit.
    pub fn last_txid(&self) -> TxId {
        TxId(self.base.0 + self.commits.read().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }

    /// When `txid` was committed, if the writer made it.
    fn committed_at(&self, txid: u64) -> Option<Instant> {
        let index = txid.checked_sub(self.base.0 + 1)?;
        self.commits.read().unwrap_or_else(|p| p.into_inner()).get(index as usize).copied()
    }
}

/// Lags with 1 ms resolution up to [`LagHistogram::MAX_MS`] (longer ones
/// count in the last bucket): fixed memory whatever the number of samples
/// (10,000 readers × 600 transactions), and lock-free.
#[derive(Debug)]
pub struct LagHistogram {
    buckets: Vec<AtomicU64>,
}

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram { buckets: (0..=Self::MAX_MS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl LagHistogram {
    /// The longest lag told apart, in milliseconds.
    pub const MAX_MS: usize = 120_000;

    /// Adds one sample.
    pub fn record(&self, lag: Duration) {
        let ms = (lag.as_millis() as usize).min(Self::MAX_MS);
        self.buckets[ms].fetch_add(1, Ordering::Relaxed);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in seconds; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (ms, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(ms as f64 / 1000.0);
            }
        }
        None
    }
}

/// How the readers run.
#[derive(Clone, Copy, Debug)]
pub struct FleetConfig {
    /// Readers.
    pub readers: usize,
    /// Time between polls (serve's `--poll`, 1 s by default).
    pub poll: Duration,
    /// Longest time between two manifest reads (serve's `--manifest-interval`).
    pub manifest_interval: Duration,
    /// Reader `i` starts `i / readers` of this after the fleet.
    pub spread: Duration,
}

impl FleetConfig {
    /// `readers` with `edge-reader serve`'s defaults: 1 s poll, 30 s
    /// manifest interval, starts spread over one poll interval.
    pub fn serve_defaults(readers: usize) -> FleetConfig {
        let poll = Duration::from_secs(1);
        FleetConfig { readers, poll, manifest_interval: Duration::from_secs(30), spread: poll }
    }
}

/// What every reader shares.
struct Shared {
    store: Arc<CountingStore>,
    config: FleetConfig,
    commits: Arc<CommitLog>,
    lags: LagHistogram,
    /// Each reader's TXID (0 before its first sync).
    txids: Vec<AtomicU64>,
    /// Woken after every sync, for [`Fleet::wait_all_at`].
    synced: Notify,
    syncs: AtomicU64,
    failures: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

/// A running fleet of readers; [`Fleet::stop`] ends it (dropping it aborts
/// the tasks).
pub struct Fleet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<MemoryDatabase>>,
}

impl Fleet {
    /// Starts `config.readers` readers of `store` on the current runtime.
    pub fn start(store: Arc<dyn Store>, config: FleetConfig, commits: Arc<CommitLog>) -> Fleet {
        let shared = Arc::new(Shared {
            store: Arc::new(CountingStore::new(store)),
            config,
            commits,
            lags: LagHistogram::default(),
            txids: (0..config.readers).map(|_| AtomicU64::new(0)).collect(),
            synced: Notify::new(),
            syncs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        });
        let (stop, stopped) = watch::channel(false);
        let started = Instant::now();
        let tasks = (0..config.readers)
            .map(|index| {
                let start_at = started + config.spread.mul_f64(index as f64 / config.readers as f64);
                let reader = Reader::new(Arc::clone(&shared), index);
                tokio::spawn(reader.run(start_at, stopped.clone()))
            })
            .collect();
        Fleet { shared, stop, tasks }
    }

    /// Requests the readers sent so far.
    pub fn requests(&self) -> u64 {
        self.shared.store.total()
    }

    /// The lag of every transaction a reader received after it started.
    pub fn lags(&self) -> &LagHistogram {
        &self.shared.lags
    }

    /// Syncs that succeeded, and polls that failed.
    pub fn syncs_and_failures(&self) -> (u64, u64) {
        (self.shared.syncs.load(Ordering::SeqCst), self.shared.failures.load(Ordering::SeqCst))
    }

    /// The last failure a reader saw, if any.
    pub fn last_failure(&self) -> Option<String> {
        self.shared.last_failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Readers at `txid` or past it.
    pub fn readers_at(&self, txid: TxId) -> usize {
        self.shared.txids.iter().filter(|t| t.load(Ordering::SeqCst) >= txid.0).count()
    }

    /// Waits until every reader holds `txid`, at most until `deadline`;
    /// false if the deadline passed first. Woken by the readers' syncs.
    pub async fn wait_all_at(&self, txid: TxId, deadline: Instant) -> bool {
        loop {
            // Registered before the check, so a sync between the check and
            // the wait still wakes it.
            let synced = self.shared.synced.notified();
            tokio::pin!(synced);
            synced.as_mut().enable();
            if self.readers_at(txid) == self.shared.config.readers {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            if tokio::time::timeout(left, synced).await.is_err() {
                return self.readers_at(txid) == self.shared.config.readers;
            }
        }
    }

    /// Stops every reader after the poll it is in, and returns their
    /// replicas, in reader order.
    pub async fn stop(self) -> Vec<MemoryDatabase> {
        let _ = self.stop.send(true);
        let mut databases = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            databases.push(task.await.expect("a reader task panicked"));
        }
        databases
    }
}

/// What one poll found.
enum Polled {
    Idle,
    /// A sync applied objects; the newest was captured at this time on the
    /// primary (ms since the Unix epoch).
    Applied(u64),
}

/// One simulated reader: its replica and its follower's bookkeeping.
struct Reader {
    shared: Arc<Shared>,
    index: usize,
    db: MemoryDatabase,
    manifest_etag: Option<ETag>,
    manifest_checked: Option<Instant>,
    failures: u32,
    /// Transactions committed before this are not counted as lag: the
    /// reader was not there yet (its first sync is a bootstrap).
    joined: Option<Instant>,
}

impl Reader {
    fn new(shared: Arc<Shared>, index: usize) -> Reader {
        Reader {
            shared,
            index,
            db: MemoryDatabase::new(distributary_core::apply::DEFAULT_MEMORY_LIMIT),
            manifest_etag: None,
            manifest_checked: None,
            failures: 0,
            joined: None,
        }
    }

    async fn run(mut self, start_at: Instant, mut stop: watch::Receiver<bool>) -> MemoryDatabase {
        let mut delay = start_at.saturating_duration_since(Instant::now());
        loop {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return self.db,
                _ = tokio::time::sleep(delay) => {}
            }
            self.joined.get_or_insert_with(Instant::now);
            let poll = self.shared.config.poll;
            delay = match self.poll().await {
                Ok(Polled::Applied(captured_ms)) => aligned_delay(poll, captured_ms, now_ms()),
                Ok(Polled::Idle) => poll,
                Err(error) => {
                    self.failures += 1;
                    self.manifest_checked = None;
                    self.shared.failures.fetch_add(1, Ordering::SeqCst);
                    *self.shared.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("reader {}: {error:#}", self.index));
                    (poll * 2u32.pow(self.failures.clamp(1, 6) - 1)).min(poll.max(Duration::from_secs(30)))
                }
            };
        }
    }

    async fn poll(&mut self) -> anyhow::Result<Polled> {
        let result = self.poll_inner().await;
        if result.is_ok() {
            self.failures = 0;
        }
        result
    }

    async fn poll_inner(&mut self) -> anyhow::Result<Polled> {
        let Some(position) = self.db.position() else { return self.sync().await };
        let store = Arc::clone(&self.shared.store);
        match store.head(&l0_key(position.generation, position.txid.next())).await {
            Ok(_) => return self.sync().await,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(anyhow::Error::new(e).context("probe the next L0 segment")),
        }
        if self.manifest_checked.is_some_and(|at| at.elapsed() < self.shared.config.manifest_interval) {
            return Ok(Polled::Idle);
        }
        let checked = Instant::now();
        let options = GetOptions { range: None, if_none_match: self.manifest_etag.clone() };
        let result = match store.get(MANIFEST_KEY, options).await {
            Ok(result) => result,
            Err(StoreError::NotModified { .. }) => {
                self.manifest_checked = Some(checked);
                return Ok(Polled::Idle);
            }
            Err(e) => return Err(anyhow::Error::new(e).context("poll the manifest")),
        };
        let etag = result.meta.etag.clone();
        let manifest: Manifest = parse_document(MANIFEST_KEY, &result.bytes().await?)?;
        let polled =
            if needs_sync(&manifest, position.generation, position.txid) { self.sync().await? } else { Polled::Idle };
        self.manifest_etag = etag;
        self.manifest_checked = Some(checked);
        Ok(polled)
    }

    async fn sync(&mut self) -> anyhow::Result<Polled> {
        let checked = Instant::now();
        let from = self.db.position().map_or(0, |p| p.txid.0);
        let store = Arc::clone(&self.shared.store);
        let summary = sync_in_memory(store.as_ref(), &mut self.db, &SyncOptions::default()).await?;
        let held = Instant::now();
        self.manifest_checked = Some(checked);
        let joined = self.joined.unwrap_or(held);
        for txid in from + 1..=summary.to_txid.0 {
            if let Some(committed) = self.shared.commits.committed_at(txid).filter(|&at| at >= joined) {
                self.shared.lags.record(held.saturating_duration_since(committed));
            }
        }
        self.shared.txids[self.index].store(summary.to_txid.0, Ordering::SeqCst);
        self.shared.syncs.fetch_add(1, Ordering::SeqCst);
        self.shared.synced.notify_waiters();
        Ok(if summary.objects > 0 { Polled::Applied(summary.timestamp_ms) } else { Polled::Idle })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_the_lag_histogram() {
        let lags = LagHistogram::default();
        assert_eq!(lags.quantile(0.5), None);
        for ms in 1..=100 {
            lags.record(Duration::from_millis(ms * 10));
        }
        lags.record(Duration::from_secs(3600));
        assert_eq!(lags.count(), 101);
        assert_eq!(lags.quantile(0.5), Some(0.51));
        assert_eq!(lags.quantile(1.0), Some(LagHistogram::MAX_MS as f64 / 1000.0));
    }

    #[test]
    fn the_commit_log_maps_commits_to_txids() {
        let log = CommitLog::new(TxId(7));
        let at = Instant::now();
        log.push(at);
        assert_eq!(
            (log.last_txid(), log.committed_at(8), log.committed_at(7), log.committed_at(9)),
            (TxId(8), Some(at), None, None)
        );
    }
}
