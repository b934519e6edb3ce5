//! The apply loop of native readers: objects fetched in the background
//! ([`fetch`](super::fetch)) are verified and written on one blocking
//! thread: in chain order into a sink that commits (a live replica's SQLite
//! transaction, `sqlite.rs`), or the snapshot last into a new file written
//! in place (`file.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::fetch::{Item, drive};
use super::verify::empty_position;
use super::{ApplyError, ObjectApplier, PageSink, Progress, SyncOptions};
use crate::plan::{Base, Plan, ReplicaPosition};
use crate::store::Store;

/// Commit at least every this many objects.
const MAX_OBJECTS_PER_COMMIT: usize = 4096;
/// How often progress is reported while a run goes on.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How far a run has come, shared by the download tasks, the applier
/// thread and the progress reports.
#[derive(Default)]
pub(super) struct Counters {
    pub fetched: AtomicU64,
    pub expected: AtomicU64,
    pub pages: Arc<AtomicU64>,
    objects: AtomicU64,
    bytes: AtomicU64,
    txid: AtomicU64,
}

impl Counters {
    /// `objects` objects of `bytes` bytes applied, reaching `txid`.
    pub fn applied(&self, objects: u64, bytes: u64, txid: crate::ids::TxId) {
        self.objects.store(objects, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.txid.store(txid.0, Ordering::Relaxed);
    }

    fn progress(&self) -> Progress {
        Progress {
            txid: crate::ids::TxId(self.txid.load(Ordering::Relaxed)),
            objects: self.objects.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            fetched: self.fetched.load(Ordering::Relaxed),
            expected: self.expected.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            done: false,
        }
    }
}

/// What the loop needs of a sink beyond [`PageSink`].
pub(super) trait CommitSink: PageSink {
    /// Keeps everything applied so far, which brought the database to
    /// `position`: readers of a live replica see it from now on.
    fn commit(&mut self, position: ReplicaPosition) -> Result<(), ApplyError>;

    /// Whether the open commit holds so much (page hashes, WAL) that it
    /// should end now.
    fn commit_is_full(&self) -> bool;

    /// The primary's page 1 at the position reached, if this run wrote it.
    fn take_page_one(&mut self) -> Option<Vec<u8>>;

    /// The file written, for messages.
    fn path(&self) -> &std::path::Path;

    /// The database's size in pages when the sink was opened.
    fn opened_size(&self) -> u32;
}

/// What a run of the loop did.
pub(super) struct Outcome<S> {
    pub position: ReplicaPosition,
    /// The database's size in pages at `position`.
    pub pages: u32,
    pub objects: u64,
    pub bytes: u64,
    pub page_one: Option<Vec<u8>>,
    /// The sink, for the caller to finish.
    pub sink: S,
}

/// The position a plan's chain starts from (a snapshot replaces whatever
/// the file holds, so it starts from nothing).
pub(super) fn base_position(plan: &Plan) -> ReplicaPosition {
    match plan.base {
        Base::Replica(position) => position,
        Base::Snapshot(_) => empty_position(plan.generation),
    }
}

/// What an applier thread works from: the chain's objects in order, the
/// run's counters, the runtime to wait on downloads with, and the store
/// (for an object it fetches itself).
pub(super) struct Applying {
    pub items: mpsc::Receiver<Item>,
    pub counters: Arc<Counters>,
    pub runtime: tokio::runtime::Handle,
    pub store: Arc<dyn Store>,
}

/// In which order the applier takes the chain.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// Every object in chain order.
    Chain,
    /// The objects after the snapshot first; the applier fetches the
    /// snapshot itself, last.
    SnapshotLast,
}

/// Fetches `plan`'s chain from `store` and hands it in `order` to `apply`
/// on a blocking thread, reporting progress to `options.progress` every
/// [`PROGRESS_EVERY`] and once at the end.
pub(super) async fn apply_plan<S, F>(
    store: Arc<dyn Store>,
    plan: &Plan,
    options: &SyncOptions,
    order: Order,
    apply: F,
) -> Result<Outcome<S>, ApplyError>
where
    S: Send + 'static,
    F: FnOnce(Applying) -> Result<Outcome<S>, ApplyError> + Send + 'static,
{
    let counters = Arc::new(Counters::default());
    let (tx, items) = mpsc::channel::<Item>(options.concurrency.max(1));
    let applier = {
        let applying = Applying {
            items,
            counters: Arc::clone(&counters),
            runtime: tokio::runtime::Handle::current(),
            store: Arc::clone(&store),
        };
        tokio::task::spawn_blocking(move || apply(applying))
    };
    let reporter = options.progress.clone().map(|progress| {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROGRESS_EVERY);
            loop {
                every.tick().await;
                progress(&counters.progress());
            }
        })
    });
    let driver = drive(store, plan, order == Order::SnapshotLast, Arc::clone(&counters), tx);
    let (_, applied) = tokio::join!(driver, applier);
    if let Some(reporter) = reporter {
        reporter.abort();
        if let Some(progress) = &options.progress {
            progress(&Progress { done: true, ..counters.progress() });
        }
    }
    applied.map_err(|e| ApplyError::Task { op: "apply segments", reason: e.to_string() })?
}

/// Applies the chain in order to `sink`, committing as it goes.
pub(super) fn apply_in_order<S: CommitSink>(
    sink: S,
    plan: &Plan,
    options: &SyncOptions,
    applying: Applying,
) -> Result<Outcome<S>, ApplyError> {
    let Applying { items: mut rx, counters, runtime, .. } = applying;
    let position = base_position(plan);
    let mut objects =
        ObjectApplier::new(plan.generation, options.key.as_ref(), plan.page_size, position, sink.opened_size())?;
    objects.count_pages_in(Arc::clone(&counters.pages));
    let mut applier = Applier { objects, sink, count: 0, bytes: 0 };
    let mut objects_in_commit = 0usize;
    while let Some(item) = rx.blocking_recv() {
        let (key, size, body) = match item {
            Item::Object { key, size, body } => (key, size, body),
            Item::Failed(error) => {
                applier.commit_before_failing();
                return Err(error);
            }
        };
        let applied = runtime
            .block_on(body)
            .map_err(|e| ApplyError::Task { op: "download segment", reason: e.to_string() })
            .and_then(|body| body)
            .and_then(|body| applier.objects.apply_object(&mut applier.sink, &key, body.into_reader()));
        let snapshot = match applied {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // Keep what was verified before the bad object.
                drop(rx);
                applier.commit_before_failing();
                return Err(error);
            }
        };
        applier.count += 1;
        applier.bytes += size;
        objects_in_commit += 1;
        counters.applied(applier.count, applier.bytes, applier.objects.position().txid);
        // Commit when nothing else is ready (so readers see progress while
        // downloads continue), after a snapshot (its page hashes need not be
        // kept), and often enough to bound memory and the WAL.
        if snapshot || rx.is_empty() || objects_in_commit >= MAX_OBJECTS_PER_COMMIT || applier.sink.commit_is_full() {
            applier.commit()?;
            objects_in_commit = 0;
        }
    }
    applier.commit()?;
    let mut sink = applier.sink;
    Ok(Outcome {
        position: applier.objects.position(),
        pages: applier.objects.size(),
        objects: applier.count,
        bytes: applier.bytes,
        page_one: sink.take_page_one(),
        sink,
    })
}

/// The shared verifier over a sink, with the run's counters.
struct Applier<S> {
    objects: ObjectApplier,
    sink: S,
    count: u64,
    bytes: u64,
}

impl<S: CommitSink> Applier<S> {
    fn commit(&mut self) -> Result<(), ApplyError> {
        self.sink.commit(self.objects.position())
    }

    /// Commits what was verified before a failure. The failure is what the
    /// caller must hear about: a commit that fails too (SQLite can refuse
    /// it after the failed object's rollback) is only logged.
    fn commit_before_failing(&mut self) {
        if let Err(e) = self.commit() {
            tracing::warn!(db = %self.sink.path().display(), error = %e, "commit what was applied before the failure");
        }
    }
}
