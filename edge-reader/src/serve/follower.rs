//! The background loop that keeps the replica in sync, and the state it
//! publishes: the TXID queries read at (a watch channel, which bookmark
//! waits subscribe to) and the position, lag and errors `/status`,
//! `/healthz` and `/metrics` report.
//!
//! # Requests per poll
//!
//! A full [`sync_replica`] reads the manifest (a whole GET) and then probes
//! `l0/{t+1}` (a GET that finds nothing): two GETs when idle. The follower
//! is cheaper, using only the public `Store` trait:
//!
//! 1. `HEAD l0/{t+1}`: found means there is something to apply: sync,
//!    planned from the manifest the last check found current
//!    ([`sync_replica_from`]) rather than reading it again, so a busy
//!    database costs the probe, the segments and the walk's last probe.
//! 2. Otherwise, at most once per `--manifest-interval` (30 s by default),
//!    a conditional `GET manifest.json` (`If-None-Match` on the ETag last
//!    seen): `304 Not Modified` when nothing changed. When the manifest did
//!    change (a new generation, retention passing the replica, newer TXIDs
//!    only in L1), run [`sync_replica`]; a manifest that asks for nothing
//!    (compaction of TXIDs the replica has) costs nothing more.
//!
//! After a poll that applied something, the next one skips the probe and
//! syncs at once from that manifest: the sync's walk reads the next segment
//! by name, so a busy database costs two requests a poll (the segment and
//! the walk's 404 past it), and the first quiet poll one (that 404).
//!
//! So an idle poll is one 404, and one poll in every 30 (at a 1 s poll)
//! adds a 304: 1.03 requests per poll, never a LIST. The ETag is kept only
//! once the replica has everything that manifest asked for, so a failed
//! sync is retried on the next poll rather than hidden behind a 304.
//!
//! Why the probe alone is enough between manifest checks: every new TXID
//! first appears as an L0 segment, and an L0 stays in the store until the
//! compactor folded it into L1 *and* `--l0-retention` (5 min by default)
//! passed, so a reader polling more often than that finds each one by the
//! probe. The manifest is needed only for what no probe can see:
//! - a new generation (the old one's chain just stops): seen within one
//!   manifest interval;
//! - the store having moved past the replica (its next L0 already
//!   deleted): only possible when the reader was away longer than the
//!   retention, so the first poll after start, and the first after a
//!   failed one, always read the manifest; and a poll interval at least as
//!   long as the manifest interval reads it every time.
//!
//! # What TXID a query read at
//!
//! [`sync_replica`] commits the replica's SQLite transaction, then writes the
//! sidecar, then returns. The follower publishes the TXID only after it
//! returns, and a query takes the published value *before* its statement's
//! first step (which is when SQLite picks the WAL snapshot it reads). So the
//! published TXID is always a lower bound of what the query saw: the data
//! may be newer (a sync committed and has not returned yet), never older.
//! That is the guarantee a bookmark needs — a read at `X-Replica-Txid: N`
//! includes every transaction up to N — and it is exact whenever no sync
//! committed in the few milliseconds between the two.
//!
//! [`sync_replica`]: distributary_core::apply::sync_replica

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distributary_core::apply::{SyncOptions, SyncSummary, sync_replica_from};
use distributary_core::clock::now_ms;
use distributary_core::layout::{MANIFEST_KEY, l0_key};
use distributary_core::manifest::{Manifest, parse_document};
use distributary_core::poll::{aligned_delay, needs_sync};
use distributary_core::replica::read_state;
use distributary_core::retry::Backoff;
use distributary_core::store::{ETag, GetOptions, Store, StoreError};
use distributary_core::{GenerationId, TxId};
use serde::Serialize;
use tokio::sync::watch;

use super::metrics::{Metrics, ReplicaGauges};

/// The state queries read: the lineage and the newest TXID the replica is
/// known to hold (a lower bound, see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// The generation followed.
    pub generation: GenerationId,
    /// Every transaction up to this one is in the replica.
    pub txid: TxId,
    /// Commit time of `txid` on the primary, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// A minimum state a request waits for (read-your-writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bookmark {
    /// The TXID the client's write became part of.
    pub txid: TxId,
    /// The generation of that TXID, if the client knows it.
    pub generation: Option<GenerationId>,
}

impl View {
    /// Whether this state includes the bookmark's transaction. Generation
    /// ids sort by creation time and a new generation starts from the
    /// primary's whole database, so a newer generation includes every
    /// transaction of an older one.
    pub fn satisfies(&self, bookmark: &Bookmark) -> bool {
        match bookmark.generation {
            Some(generation) if generation != self.generation => self.generation > generation,
            _ => self.txid >= bookmark.txid,
        }
    }
}

/// What `/status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The replica's file.
    pub db: String,
    /// The store followed.
    pub source: String,
    /// Whether queries can be answered (the replica has a known state).
    pub ready: bool,
    /// The generation followed.
    pub generation: Option<String>,
    /// The TXID queries read at (at least).
    pub txid: Option<u64>,
    /// Commit time of `txid` on the primary, ms since the Unix epoch.
    pub txid_timestamp_ms: Option<u64>,
    /// The newest TXID the store is known to hold.
    pub store_newest_txid: Option<u64>,
    /// Transactions in the store and not in the replica, as far as known.
    pub lag_transactions: Option<u64>,
    /// Seconds since the replica was last known to hold everything the store
    /// held (0 while it is caught up).
    pub lag_seconds: Option<f64>,
    /// When the replica was last confirmed up to date with the store (a sync
    /// or an idle poll that succeeded), ms since the Unix epoch.
    pub last_sync_ms: Option<u64>,
    /// The same, RFC 3339.
    pub last_sync: Option<String>,
    /// Seconds since `last_sync_ms` (since start when there was none).
    pub staleness_seconds: f64,
    /// The staleness past which `/healthz` reports unhealthy.
    pub max_staleness_seconds: f64,
    /// Ready and not stale.
    pub healthy: bool,
    /// The last failure, while it is not followed by a success.
    pub last_error: Option<String>,
    /// When `last_error` happened, ms since the Unix epoch.
    pub last_error_ms: Option<u64>,
    /// Polls that failed in a row.
    pub consecutive_failures: u64,
    /// When the last sync that applied objects finished, ms since the Unix epoch.
    pub last_applied_ms: Option<u64>,
}

impl Status {
    /// The gauges `/metrics` reports of this state.
    pub fn gauges(&self) -> ReplicaGauges {
        ReplicaGauges {
            txid: self.txid,
            lag_transactions: self.lag_transactions,
            lag_seconds: self.lag_seconds,
            staleness_seconds: self.staleness_seconds,
            healthy: self.healthy,
            consecutive_failures: self.consecutive_failures,
        }
    }
}

/// How the follower runs.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// The replica.
    pub db: PathBuf,
    /// The store's URL as given (recorded in the replica's sidecar).
    pub source: String,
    /// Options of each [`sync_replica`] (key, concurrency).
    pub sync: SyncOptions,
    /// Time between polls while healthy.
    pub poll: Duration,
    /// Staleness past which the replica is unhealthy.
    pub max_staleness: Duration,
    /// Longest time between two reads of the manifest while the L0 probe
    /// finds nothing (see the module's "Requests per poll").
    pub manifest_interval: Duration,
}

/// Mutable bookkeeping behind a std mutex: it is held for a few field
/// updates, never across an await.
#[derive(Debug, Default)]
struct Book {
    manifest_etag: Option<ETag>,
    /// The manifest last read whole, while checks find it unchanged: a
    /// sync the probe asked for plans from it instead of reading it again.
    manifest: Option<Manifest>,
    /// The last sync applied something: the database is busy, so the next
    /// poll syncs straight away (its walk is the probe).
    busy: bool,
    /// When the manifest was last read whole or found unchanged; `None`
    /// until the first time, and again after a failed poll.
    manifest_checked: Option<std::time::Instant>,
    store_newest_txid: Option<TxId>,
    caught_up_ms: Option<u64>,
    last_ok_ms: Option<u64>,
    last_error: Option<(String, u64)>,
    consecutive_failures: u64,
    last_applied_ms: Option<u64>,
    /// When the newest segment the last poll applied was captured on the
    /// primary (its header's timestamp), until the next poll.
    applied_captured_ms: Option<u64>,
}

/// Keeps the replica in sync and publishes its state.
pub struct Follower {
    store: Arc<dyn Store>,
    config: FollowerConfig,
    metrics: Arc<Metrics>,
    views: watch::Sender<Option<View>>,
    book: Mutex<Book>,
    started_ms: u64,
}

/// What one poll did.
enum Polled {
    /// Nothing new in the store.
    Idle,
    /// A sync ran.
    Synced(Box<SyncSummary>),
}

impl Follower {
    /// A follower of `store` into `config.db`. When the replica has a
    /// sidecar without a commit in doubt, queries are answered from it at
    /// once, before the first poll.
    pub fn new(store: Arc<dyn Store>, config: FollowerConfig, metrics: Arc<Metrics>) -> anyhow::Result<Follower> {
        let initial = match read_state(&config.db)? {
            Some(state) if state.pending.is_none() && config.db.exists() => {
                Some(View { generation: state.generation, txid: state.txid, timestamp_ms: state.timestamp_ms })
            }
            // Killed around a commit: the first sync finds which state it is.
            _ => None,
        };
        let (views, _) = watch::channel(initial);
        Ok(Follower { store, config, metrics, views, book: Mutex::new(Book::default()), started_ms: now_ms() })
    }

    /// A receiver of the published state.
    pub fn subscribe(&self) -> watch::Receiver<Option<View>> {
        self.views.subscribe()
    }

    /// The published state now.
    pub fn view(&self) -> Option<View> {
        *self.views.borrow()
    }

    /// Waits until the replica satisfies `bookmark`, at most `timeout`;
    /// returns the state reached, or the state it was still at.
    pub async fn wait_for(&self, bookmark: Bookmark, timeout: Duration) -> Result<View, Option<View>> {
        let mut receiver = self.views.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            receiver.wait_for(|view| view.is_some_and(|v| v.satisfies(&bookmark))).await.map(|view| *view)
        })
        .await;
        match waited {
            Ok(Ok(Some(view))) => Ok(view),
            _ => Err(self.view()),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // Plain values: a panic elsewhere cannot leave them torn.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls until `shutdown` resolves. A poll in progress when it does is
    /// finished first, so the replica and its sidecar stay in step.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let delay = match self.poll().await {
                Ok(()) => match self.book().applied_captured_ms.take() {
                    Some(captured_ms) => aligned_delay(self.config.poll, captured_ms, now_ms()),
                    None => self.config.poll,
                },
                Err(()) => {
                    // Back off while the store is down or an object is bad:
                    // the poll interval doubled per failure, capped at 30 s
                    // (or the poll interval, if that is longer).
                    let failures = self.book().consecutive_failures.clamp(1, 6) as u32;
                    Backoff::new(self.config.poll, self.config.poll.max(Duration::from_secs(30))).delay(failures - 1)
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One poll: the cheap check, and a sync when it finds something.
    /// Errors are recorded for `/status`; the published state is untouched.
    pub async fn poll(&self) -> Result<(), ()> {
        let started = std::time::Instant::now();
        let result = self.poll_inner().await;
        let now = now_ms();
        match result {
            Ok(polled) => {
                let mut book = self.book();
                book.last_ok_ms = Some(now);
                book.caught_up_ms = Some(now);
                book.last_error = None;
                book.consecutive_failures = 0;
                let txid = self.view().map(|v| v.txid);
                book.store_newest_txid = book.store_newest_txid.max(txid);
                if let Polled::Synced(summary) = polled {
                    if summary.objects > 0 {
                        book.last_applied_ms = Some(now);
                        book.applied_captured_ms = Some(summary.timestamp_ms);
                    }
                    self.metrics.record_sync(true, summary.objects, summary.bytes, started.elapsed());
                    tracing::info!(
                        txid = summary.to_txid.0,
                        objects = summary.objects,
                        bytes = summary.bytes,
                        seconds = summary.seconds,
                        "synced"
                    );
                }
                Ok(())
            }
            Err(error) => {
                let message = format!("{error:#}");
                tracing::warn!(error = %message, "sync failed; queries keep reading the last good state");
                self.metrics.record_sync(false, 0, 0, started.elapsed());
                let mut book = self.book();
                book.last_error = Some((message, now));
                book.consecutive_failures += 1;
                // The next check reads the manifest whole: what a failed
                // sync left undone must not hide behind a 304.
                book.manifest_checked = None;
                book.manifest = None;
                book.manifest_etag = None;
                book.busy = false;
                Err(())
            }
        }
    }

    async fn poll_inner(&self) -> anyhow::Result<Polled> {
        let Some(view) = self.view() else {
            return self.sync(None).await;
        };
        // 0. A busy database: the next segment is probably there already.
        // The sync's walk reads it by name, so probing first would only
        // add a request; if it is not there yet, the walk's one 404 costs
        // what the probe would have, and the next poll probes again.
        let busy = {
            let book = self.book();
            let fresh = book.manifest_checked.is_some_and(|at| at.elapsed() < self.config.manifest_interval);
            if book.busy && fresh { book.manifest.clone() } else { None }
        };
        if let Some(manifest) = busy {
            return self.sync(Some(manifest)).await;
        }
        // 1. Is there a next L0 segment?
        let next = l0_key(view.generation, view.txid.next());
        match self.store.head(&next).await {
            Ok(_) => {
                {
                    let mut book = self.book();
                    book.store_newest_txid = book.store_newest_txid.max(Some(view.txid.next()));
                }
                let manifest = self.manifest_for_sync().await?;
                return self.sync(manifest).await;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("probe {}", self.store.url()))),
        }
        // 2. Did the manifest change in a way that needs a sync? Asked once
        // per manifest interval: the probe sees everything else.
        let checked = std::time::Instant::now();
        let etag = {
            let book = self.book();
            if book.manifest_checked.is_some_and(|at| at.elapsed() < self.config.manifest_interval) {
                return Ok(Polled::Idle);
            }
            book.manifest_etag.clone()
        };
        let Some((manifest, etag)) = self.read_manifest_if_changed(etag).await? else {
            self.book().manifest_checked = Some(checked);
            return Ok(Polled::Idle);
        };
        {
            let mut book = self.book();
            if manifest.generation == view.generation {
                book.store_newest_txid = book.store_newest_txid.max(Some(manifest.newest.txid));
            }
        }
        let polled = if needs_sync(&manifest, view.generation, view.txid) {
            self.sync(Some(manifest.clone())).await?
        } else {
            Polled::Idle
        };
        // The replica now has everything this manifest asked for.
        let mut book = self.book();
        book.manifest_etag = etag;
        book.manifest = Some(manifest);
        book.manifest_checked = Some(checked);
        drop(book);
        Ok(polled)
    }

    /// The manifest a sync the probe asked for plans from: the one the last
    /// check found current, checked again (conditionally) once per manifest
    /// interval, so a busy database does not read it on every poll. `None`
    /// when none is known: the sync reads it.
    async fn manifest_for_sync(&self) -> anyhow::Result<Option<Manifest>> {
        let checked = std::time::Instant::now();
        let (known, etag) = {
            let book = self.book();
            let due = book.manifest_checked.is_none_or(|at| at.elapsed() >= self.config.manifest_interval);
            if !due && book.manifest.is_some() {
                return Ok(book.manifest.clone());
            }
            (book.manifest.clone(), book.manifest.as_ref().and(book.manifest_etag.clone()))
        };
        let manifest = match self.read_manifest_if_changed(etag).await? {
            None => known,
            Some((manifest, etag)) => {
                self.book().manifest_etag = etag;
                Some(manifest)
            }
        };
        let mut book = self.book();
        book.manifest = manifest.clone();
        book.manifest_checked = Some(checked);
        Ok(manifest)
    }

    /// `GET manifest.json`, conditional on `etag`: `None` when it is
    /// unchanged (`304`), else the manifest and its ETag.
    async fn read_manifest_if_changed(&self, etag: Option<ETag>) -> anyhow::Result<Option<(Manifest, Option<ETag>)>> {
        let options = GetOptions { range: None, if_none_match: etag };
        let result = match self.store.get(MANIFEST_KEY, options).await {
            Ok(result) => result,
            Err(StoreError::NotModified { .. }) => return Ok(None),
            Err(e) if e.is_not_found() => anyhow::bail!(
                "read {}/{MANIFEST_KEY}: not found (was the store's prefix deleted or moved?)",
                self.store.url()
            ),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("poll {}", self.store.url()))),
        };
        let etag = result.meta.etag.clone();
        let bytes = result.bytes().await?;
        Ok(Some((parse_document(MANIFEST_KEY, &bytes)?, etag)))
    }

    /// Syncs the replica, planned from `known` (a manifest the last check
    /// found current) or from the manifest read anew.
    async fn sync(&self, known: Option<Manifest>) -> anyhow::Result<Polled> {
        // A sync that reads the whole manifest counts as a check.
        let checked = known.is_none().then(std::time::Instant::now);
        let summary =
            sync_replica_from(Arc::clone(&self.store), &self.config.source, &self.config.db, &self.config.sync, known)
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("sync from {}", self.store.url())))?;
        let view = View { generation: summary.generation, txid: summary.to_txid, timestamp_ms: summary.timestamp_ms };
        {
            let mut book = self.book();
            if self.view().is_some_and(|v| v.generation != view.generation) {
                // Another lineage: TXIDs start over, so does what we knew.
                book.store_newest_txid = None;
            }
            book.store_newest_txid = book.store_newest_txid.max(Some(summary.manifest_newest)).max(Some(view.txid));
            if checked.is_some() {
                book.manifest_checked = checked;
            }
            book.busy = summary.objects > 0;
        }
        self.views.send_replace(Some(view));
        Ok(Polled::Synced(Box::new(summary)))
    }

    /// The state for `/status`, `/healthz` and `/metrics`.
    pub fn status(&self) -> Status {
        let now = now_ms();
        let view = self.view();
        let book = self.book();
        let seconds = |ms: u64| now.saturating_sub(ms) as f64 / 1000.0;
        let lag_transactions =
            view.map(|v| book.store_newest_txid.map_or(0, |newest| newest.0.saturating_sub(v.txid.0)));
        // Behind by what is known: lagging since the last time it was caught up.
        let lag_seconds = lag_transactions.map(|lag| {
            if lag == 0 && book.last_error.is_none() {
                0.0
            } else {
                seconds(book.caught_up_ms.unwrap_or(self.started_ms))
            }
        });
        let staleness_seconds = seconds(book.last_ok_ms.unwrap_or(self.started_ms));
        let max_staleness_seconds = self.config.max_staleness.as_secs_f64();
        Status {
            db: self.config.db.display().to_string(),
            source: self.store.url().to_string(),
            ready: view.is_some(),
            generation: view.map(|v| v.generation.to_string()),
            txid: view.map(|v| v.txid.0),
            txid_timestamp_ms: view.map(|v| v.timestamp_ms),
            store_newest_txid: book.store_newest_txid.map(|t| t.0),
            lag_transactions,
            lag_seconds,
            last_sync_ms: book.last_ok_ms,
            last_sync: book.last_ok_ms.map(distributary_core::rfc3339::format),
            staleness_seconds,
            max_staleness_seconds,
            healthy: view.is_some() && staleness_seconds <= max_staleness_seconds,
            last_error: book.last_error.as_ref().map(|(message, _)| message.clone()),
            last_error_ms: book.last_error.as_ref().map(|(_, ms)| *ms),
            consecutive_failures: book.consecutive_failures,
            last_applied_ms: book.last_applied_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bookmark_is_satisfied_by_its_txid_or_a_newer_generation() {
        let old = GenerationId([1; 16]);
        let new = GenerationId([2; 16]);
        let view = View { generation: old, txid: TxId(10), timestamp_ms: 0 };
        assert!(view.satisfies(&Bookmark { txid: TxId(10), generation: None }));
        assert!(!view.satisfies(&Bookmark { txid: TxId(11), generation: None }));
        assert!(view.satisfies(&Bookmark { txid: TxId(10), generation: Some(old) }));
        assert!(!view.satisfies(&Bookmark { txid: TxId(2), generation: Some(new) }), "an older generation");
        let moved = View { generation: new, txid: TxId(2), timestamp_ms: 0 };
        assert!(moved.satisfies(&Bookmark { txid: TxId(500), generation: Some(old) }), "a newer generation");
    }
}
