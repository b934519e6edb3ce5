//! Stepping a [`Replicator`]: one short tick ([`Replicator::tick`]),
//! everything now ([`Replicator::sync_once`]), or until told to stop
//! ([`Replicator::run`]), with each store's uploads running beside the
//! ticks and their answers recorded as they come.

use std::time::Instant;

use anyhow::{Result, bail};
use distributary_core::TxId;
use distributary_core::retry::{ErrorClass, RetryBound, backoff, classify, retry_bounded};
use tokio::sync::{mpsc, watch};

use super::fleet::Fleet;
use super::{Replicator, SHORT_TICK};
use crate::shipper::Shipper;

/// How often a tick that captured nothing publishes the database's progress.
const PUBLISH_QUIET_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a store's uploads stand.
#[derive(Default)]
pub(crate) struct UploadState {
    /// An upload is under way.
    pub(super) in_flight: bool,
    /// When the last one started: the next may start one sync interval
    /// later. (Counted from its answer, each upload came a little later
    /// than the capture it was meant to ship, until the two were nearly an
    /// interval apart: steady writes waited up to two intervals.)
    last_started: Option<Instant>,
    /// Failures in a row.
    failures: u32,
    /// Not before this, after a failure.
    retry_at: Option<Instant>,
}

/// What a permanent store failure (access denied, no such bucket) does to
/// [`Replicator::run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPermanentFailure {
    /// Stop, returning the error (a replicator on its own exits 1).
    Stop,
    /// Keep retrying (a replicator supervising the app never stops it).
    Retry,
}

/// The answer to one upload.
pub(super) struct UploadDone {
    /// The [`Fleet`] member it belongs to.
    pub(super) member: u64,
    store: usize,
    result: Result<TxId>,
}

/// What one [`Replicator::tick`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Whether a capture pass ran.
    pub captured: bool,
}

impl Replicator {
    /// One short tick: a capture pass when due (the sync interval passed
    /// and a store may upload, a `/bookmark` asked, or the first commit
    /// after a quiet pass with no upload within the interval, which ships
    /// at once), then the checkpoint policy (which looks at the WAL's
    /// size). With `stopping`, a last capture pass and no checkpoint.
    pub fn tick(&mut self, stopping: bool) -> Result<Tick> {
        let requests = self.metrics.pass_requests();
        // Due within this tick (captures keep to the interval instead of
        // falling one tick behind it each time), and when a store may
        // upload: a capture then ships in the same tick. Captured on a
        // clock of its own, a capture could wait most of an interval in the
        // queue for its store's next upload (bench/serve.py, steady writes:
        // captures at .93 of each second, uploads at .70).
        let now = Instant::now();
        let may_upload = self.stores.iter().any(|s| s.may_upload_at(now));
        let interval_passed = self.last_capture.elapsed() + SHORT_TICK >= self.interval;
        // A quiet database with no commit since its last pass has nothing
        // to capture: the pass is skipped (a thousand idle databases would
        // otherwise each run one every interval).
        let new_commits = if may_upload && self.is_quiet() { Some(self.has_new_commits()?) } else { None };
        let bookmark = requests != self.seen_requests;
        let due = stopping || bookmark || (interval_passed && may_upload && new_commits != Some(false));
        // The first commit after a quiet pass ships at once, if no upload
        // went out within the interval; otherwise it waits for the upload
        // it would wait for anyway, and is captured then (captured at once,
        // it waited in the queue, and readers that align their polls to
        // capture times polled early).
        let woken = !due && new_commits == Some(true);
        if due || woken {
            self.last_capture = Instant::now();
            self.capture_pass()?;
            self.seen_requests = requests;
            self.metrics.record_capture_pass(&self.db_label);
        }
        if !stopping {
            self.maybe_checkpoint()?;
        }
        // What a quiet tick could change (the WAL's size after a
        // checkpoint) is published once a second: a thousand quiet
        // databases would otherwise rewrite their metrics hundreds of
        // thousands of times a second.
        if due || woken || self.last_published.elapsed() >= PUBLISH_QUIET_EVERY {
            self.publish_progress();
            self.last_published = Instant::now();
        }
        Ok(Tick { captured: due || woken })
    }

    /// Captures everything committed now and uploads it to every store,
    /// retrying transient failures until `bound`; returns each store's
    /// newest TXID. (`replicate --once`.)
    pub async fn sync_once(&mut self, bound: RetryBound) -> Result<Vec<(String, TxId)>> {
        tokio::task::block_in_place(|| -> Result<()> {
            self.capture_pass()?;
            // A second pass finds nothing and marks the app quiet, so the
            // checkpoint policy (TRUNCATE past the size limit) applies.
            self.capture_pass()?;
            self.maybe_checkpoint()
        })?;
        for index in 0..self.stores.len() {
            while !self.stores[index].queue.is_empty() {
                let store = &self.stores[index];
                let segments = store.queue.next_upload();
                let shipper = self.shipper(index);
                let dir = store.queue.dir().to_path_buf();
                let label = format!("upload to {}", store.spec.url);
                let through =
                    retry_bounded(bound, &label, classify_error, || shipper.upload(segments.clone(), &dir)).await?;
                self.acknowledge(index, through)?;
                self.publish_shipped(index);
            }
        }
        Ok(self.stores.iter().map(|s| (s.spec.url.clone(), s.shipped)).collect())
    }

    /// Ticks until `shutdown` turns true, uploading each store's queue at
    /// most once per its sync interval (at once after a quiet period);
    /// then captures once more and uploads everything before returning.
    /// A capture that fails is retried with backoff (and logged); at the
    /// shutdown its error is returned. (A [`Fleet`] of one.)
    pub async fn run(self, shutdown: watch::Receiver<bool>, on_permanent: OnPermanentFailure) -> Result<()> {
        let mut fleet = Fleet::new(on_permanent);
        fleet.add(self);
        fleet.run(shutdown, None).await
    }

    /// Starts an upload for every store with segments queued, none under
    /// way, its sync interval passed since its last upload (or `now_all`),
    /// and no failure to wait out.
    pub(super) fn start_uploads(&mut self, member: u64, done: &mpsc::UnboundedSender<UploadDone>, now_all: bool) {
        let now = Instant::now();
        for index in 0..self.stores.len() {
            let store = &self.stores[index];
            let upload = &store.upload;
            if store.queue.is_empty()
                || upload.retry_at.is_some_and(|at| now < at)
                || !(store.may_upload_at(now) || (now_all && !upload.in_flight))
            {
                continue;
            }
            let segments = store.queue.next_upload();
            let dir = store.queue.dir().to_path_buf();
            let shipper = self.shipper(index);
            let done = done.clone();
            self.stores[index].upload.in_flight = true;
            self.stores[index].upload.last_started = Some(now);
            tokio::spawn(async move {
                let result = shipper.upload(segments, &dir).await;
                let _ = done.send(UploadDone { member, store: index, result });
            });
        }
    }

    /// Records an upload's answer: progress on success; on failure a
    /// retry after backoff, or the error when permanent and `on_permanent`
    /// says stop.
    pub(super) fn upload_done(&mut self, done: UploadDone, on_permanent: OnPermanentFailure) -> Result<()> {
        let UploadDone { store: index, result, .. } = done;
        self.stores[index].upload.in_flight = false;
        match result {
            Ok(through) => {
                let upload = &mut self.stores[index].upload;
                upload.failures = 0;
                upload.retry_at = None;
                self.acknowledge(index, through)?;
                self.publish_shipped(index);
                Ok(())
            }
            Err(e) => {
                let url = self.stores[index].spec.url.clone();
                if on_permanent == OnPermanentFailure::Stop && classify_error(&e) == ErrorClass::Permanent {
                    tracing::error!(store = %url, error = %format!("{e:#}"), "the store refuses uploads: stopping");
                    bail!("replicate to {url}: {e:#}");
                }
                let upload = &mut self.stores[index].upload;
                upload.failures += 1;
                upload.retry_at = Some(Instant::now() + backoff(upload.failures));
                let message = format!("{e:#}");
                tracing::warn!(store = %url, error = %message, "upload failed; retrying");
                self.metrics.update_replica(&self.db_label, &url, |s| s.last_error = Some(message));
                Ok(())
            }
        }
    }

    /// The uploader of the store at `index`.
    fn shipper(&self, index: usize) -> Shipper {
        Shipper { store: self.stores[index].spec.store.clone(), metrics: self.metrics.clone() }
    }

    /// Publishes a store's acknowledged progress.
    fn publish_shipped(&self, index: usize) {
        let store = &self.stores[index];
        let all_shipped = store.queue.is_empty();
        self.metrics.update_replica(&self.db_label, &store.spec.url, |s| {
            s.shipped_txid = s.shipped_txid.max(store.shipped.0);
            if all_shipped {
                s.oldest_unshipped_ms = None;
            }
            s.last_error = None;
        });
    }
}

impl super::StoreReplica {
    /// Whether an upload may start at `now`: none under way, and its sync
    /// interval passed since the last one started (within one tick, so the
    /// capture that just ran, on the same cadence, ships now and not a
    /// tick later).
    fn may_upload_at(&self, now: Instant) -> bool {
        !self.upload.in_flight
            && self.upload.last_started.is_none_or(|t| now + SHORT_TICK >= t + self.spec.sync_interval)
    }
}

/// The class of a failure, from its whole cause chain.
fn classify_error(error: &anyhow::Error) -> ErrorClass {
    classify(error.as_ref())
}
