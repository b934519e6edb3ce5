//! Every database of a process, stepped by one task: a [`Fleet`] ticks
//! each [`Replicator`] when it is due and starts its uploads, so a
//! thousand databases cost a thousand values, not a thousand threads
//! (each task that blocked in its own tick took a runtime thread with it:
//! 50 databases ran on 53 threads).
//!
//! A database that has been quiet for a while is ticked less often, up to
//! a limit that grows with the number of databases ([`idle_tick_for`]):
//! one database keeps the short tick (a commit after a quiet period ships
//! within it), a thousand idle ones are looked at two thousand times a
//! second in all instead of fifty thousand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use distributary_core::retry::backoff;
use tokio::sync::{mpsc, watch};

use super::uploads::UploadDone;
use super::{OnPermanentFailure, Replicator, SHORT_TICK};

/// Idle ticks per second a fleet spends at most, in all: past this many
/// databases, a quiet one is looked at less often than every short tick.
const IDLE_TICKS_PER_SECOND: u32 = 2_000;

/// Short ticks a database spends quiet before it is ticked less often: an
/// app that commits every few ticks keeps the short tick.
const QUIET_TICKS_BEFORE_IDLE: u32 = 50;

/// How early a member may be ticked: members due within this of each
/// other are ticked in one pass of the loop, so the loop wakes about once
/// per short tick however many members it has.
const TICK_SLACK: Duration = Duration::from_millis(2);

/// How often a quiet database is ticked, in a fleet of `members`.
pub fn idle_tick_for(members: usize) -> Duration {
    let spread = Duration::from_secs(1).mul_f64(members as f64 / f64::from(IDLE_TICKS_PER_SECOND));
    spread.max(SHORT_TICK)
}

/// A change to the set of databases while the fleet runs (a folder watcher
/// found a new database, or one went away).
pub enum Change {
    /// Start stepping this replicator.
    Add(Box<Replicator>),
    /// Flush and stop the replicator of this database.
    Remove(PathBuf),
}

/// One database in the fleet, with where its run loop stands.
struct Member {
    replicator: Replicator,
    /// When it is ticked next.
    next_tick: Instant,
    /// Ticks in a row that found nothing to do.
    quiet_ticks: u32,
    /// Captures that failed in a row, and when to try again.
    failures: u32,
    retry_capture_at: Option<Instant>,
    /// Told to stop: its next tick is its last capture.
    stopping: bool,
    /// Its last capture ran: only uploads are left.
    flushing: bool,
}

impl Member {
    fn new(replicator: Replicator) -> Member {
        Member {
            replicator,
            next_tick: Instant::now(),
            quiet_ticks: 0,
            failures: 0,
            retry_capture_at: None,
            stopping: false,
            flushing: false,
        }
    }

    /// Whether everything captured is uploaded and nothing is under way.
    fn drained(&self) -> bool {
        self.flushing && self.settled()
    }

    /// Whether it has nothing queued or in flight: a tick that captured
    /// nothing then leaves it quiet.
    fn settled(&self) -> bool {
        self.replicator.stores.iter().all(|s| s.queue.is_empty() && !s.upload.in_flight)
    }
}

/// The databases of one process and their run loops.
pub struct Fleet {
    members: BTreeMap<u64, Member>,
    next_id: u64,
    on_permanent: OnPermanentFailure,
    done_tx: mpsc::UnboundedSender<UploadDone>,
    done_rx: mpsc::UnboundedReceiver<UploadDone>,
    /// The first error a member stopped with: `run` returns it.
    first_error: Option<anyhow::Error>,
}

impl Fleet {
    /// An empty fleet; `on_permanent` says what a store that refuses
    /// uploads does to it.
    pub fn new(on_permanent: OnPermanentFailure) -> Fleet {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Fleet { members: BTreeMap::new(), next_id: 0, on_permanent, done_tx, done_rx, first_error: None }
    }

    /// Adds a database.
    pub fn add(&mut self, replicator: Replicator) {
        replicator.metrics.register_database(&replicator.db_label);
        tracing::debug!(db = %replicator.db_label, "replicating");
        self.members.insert(self.next_id, Member::new(replicator));
        self.next_id += 1;
    }

    /// Steps every database until `shutdown` turns true (or its sender is
    /// dropped), applying `changes` as they come; then captures each once
    /// more and uploads everything before returning. A capture that fails
    /// is retried with backoff (and logged); at the shutdown its error is
    /// returned, as is a store's permanent refusal with
    /// [`OnPermanentFailure::Stop`] (which stops every database).
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut changes: Option<mpsc::UnboundedReceiver<Change>>,
    ) -> Result<()> {
        let mut sender_gone = false;
        loop {
            let stopping = sender_gone || *shutdown.borrow() || self.stop_all_requested();
            if stopping {
                self.members.values_mut().for_each(|m| m.stopping = true);
            }
            tokio::task::block_in_place(|| self.tick_due());
            self.start_uploads();
            self.remove_drained();
            // Databases still being opened (the app creating one, a folder's
            // new ones) join and flush before the fleet is done.
            if stopping && self.members.is_empty() && changes.is_none() {
                return self.first_error.map_or(Ok(()), Err);
            }
            let wake = self.next_wake();
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(done) = self.done_rx.recv() => self.upload_done(done),
                changed = shutdown.changed(), if !stopping => sender_gone = changed.is_err(),
                change = next_change(&mut changes), if changes.is_some() => match change {
                    Some(change) => self.apply(change, stopping),
                    None => changes = None,
                },
            }
            // Answers that came meanwhile, without waiting.
            while let Ok(done) = self.done_rx.try_recv() {
                self.upload_done(done);
            }
        }
    }

    /// Whether a member's error stops everyone.
    fn stop_all_requested(&self) -> bool {
        self.first_error.is_some() && self.on_permanent == OnPermanentFailure::Stop
    }

    fn apply(&mut self, change: Change, stopping: bool) {
        match change {
            // Added during the shutdown, it flushes at once.
            Change::Add(replicator) => {
                self.add(*replicator);
                if stopping {
                    self.members.values_mut().for_each(|m| m.stopping = true);
                }
            }
            // Sent only for a database the fleet was given (the sender
            // waits for its start to finish first).
            Change::Remove(path) => {
                for member in self.members.values_mut().filter(|m| m.replicator.db_path() == path) {
                    tracing::info!(db = %member.replicator.db_label, "the database is gone: flushing and stopping");
                    member.stopping = true;
                    member.next_tick = Instant::now();
                }
            }
        }
    }

    /// Ticks every member that is due.
    fn tick_due(&mut self) {
        let idle_tick = idle_tick_for(self.members.len());
        let now = Instant::now();
        let mut failed = Vec::new();
        for (id, member) in &mut self.members {
            let due = member.next_tick <= now + TICK_SLACK || member.stopping;
            let may_retry = member.retry_capture_at.is_none_or(|at| now >= at);
            if member.flushing || !due || !may_retry {
                continue;
            }
            match member.replicator.tick(member.stopping) {
                Ok(_) => {
                    member.failures = 0;
                    member.retry_capture_at = None;
                    member.flushing = member.stopping;
                    let quiet = member.replicator.is_quiet() && member.settled();
                    member.quiet_ticks = if quiet { member.quiet_ticks.saturating_add(1) } else { 0 };
                    if member.quiet_ticks == QUIET_TICKS_BEFORE_IDLE {
                        member.replicator.release_idle();
                    }
                    let tick = if member.quiet_ticks > QUIET_TICKS_BEFORE_IDLE { idle_tick } else { SHORT_TICK };
                    // From the pass's start: members ticked together stay together.
                    member.next_tick = now + tick.min(member.replicator.interval);
                }
                Err(e) => {
                    member.failures += 1;
                    member.replicator.metrics.record_error();
                    let db = &member.replicator.db_label;
                    tracing::error!(db = %db, error = %format!("{e:#}"), "capture failed; retrying");
                    if member.stopping {
                        failed.push((*id, e));
                        continue;
                    }
                    member.retry_capture_at = Some(Instant::now() + backoff(member.failures));
                    member.next_tick = member.retry_capture_at.expect("set above");
                }
            }
        }
        for (id, error) in failed {
            self.members.remove(&id);
            self.first_error.get_or_insert(error);
        }
    }

    fn start_uploads(&mut self) {
        for (id, member) in &mut self.members {
            member.replicator.start_uploads(*id, &self.done_tx, member.flushing);
        }
    }

    fn upload_done(&mut self, done: UploadDone) {
        let id = done.member;
        let Some(member) = self.members.get_mut(&id) else { return };
        if let Err(e) = member.replicator.upload_done(done, self.on_permanent) {
            // A store refused for good: this database stops at once.
            self.members.remove(&id);
            self.first_error.get_or_insert(e);
        }
    }

    /// Members that flushed everything leave.
    fn remove_drained(&mut self) {
        self.members.retain(|_, member| {
            let drained = member.drained();
            if drained {
                tracing::debug!(db = %member.replicator.db_label, "stopped");
            }
            !drained
        });
    }

    /// When the loop must look again without an event: the earliest tick,
    /// or a second from now with nothing due.
    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(1);
        for member in self.members.values().filter(|m| !m.flushing) {
            wake = wake.min(member.next_tick);
        }
        // Uploads wait for their store's interval, checked on each wake.
        if self.members.values().any(|m| m.replicator.stores.iter().any(|s| !s.queue.is_empty())) {
            wake = wake.min(Instant::now() + SHORT_TICK);
        }
        wake
    }
}

async fn next_change(changes: &mut Option<mpsc::UnboundedReceiver<Change>>) -> Option<Change> {
    match changes {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
