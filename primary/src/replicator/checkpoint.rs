//! The checkpoint policy: checkpoint windows that let the app restart its
//! WAL without taking its write lock, and a TRUNCATE once the app is idle
//! and the WAL file is past its size limit.

use anyhow::{Result, bail};

use super::wal_capture::{OldTail, ReadBatch};
use super::{MAX_FRAMES_PER_CAPTURE, RESTART_POLL, RESTART_WINDOW, Replicator, WINDOW_CHECKPOINT_EVERY};
use crate::capture::PageReader;
use crate::source::{CheckpointMode, Source};
use crate::wal;

impl Replicator {
    /// Takes the write lock, waiting through busy periods.
    pub(super) fn lock_writes(&mut self) -> Result<()> {
        lock_writes(&mut self.source, &self.db_label)
    }

    /// Releases the write lock, recording how long the app was kept out.
    pub(super) fn unlock_writes(&self) -> Result<()> {
        if let Some(held) = self.source.unlock_writes()? {
            self.metrics.record_write_lock_hold(held);
        }
        Ok(())
    }

    /// Runs the checkpoint policy: PASSIVE past `passive_frames` frames,
    /// TRUNCATE past `truncate_bytes`, never checkpointing a frame away
    /// before it was captured.
    pub fn maybe_checkpoint(&mut self) -> Result<()> {
        let wal_path = wal::wal_path(self.source.db_path());
        let wal_bytes = || std::fs::metadata(&wal_path).map_or(0, |m| m.len());
        // The WAL index says how many frames the WAL holds without reading
        // one: this runs on every short tick.
        let frames = match self.source.wal_frames()? {
            Some(frames) => u64::from(frames),
            None => self.capture.wal.map_or(0, |c| c.frame),
        };
        // Once the app restarts the WAL from its first frame, the file keeps
        // its high-water mark while few frames are in use: a file past the
        // size limit still needs the checkpoint (and the TRUNCATE after it)
        // on a quiet tick, however few frames it holds now. Without this a
        // WAL restarted below `passive_frames` stayed oversized forever.
        let idle = self.quiet && self.quiet_since.is_some_and(|t| t.elapsed() >= self.policy.truncate_after_quiet);
        let oversized_and_quiet = idle && wal_bytes() > self.policy.truncate_bytes;
        if frames < self.policy.passive_frames && !oversized_and_quiet {
            return Ok(());
        }
        // A window that completed at this position, with nothing committed
        // since, has nothing to add (a WAL that stays past the threshold
        // because the app is idle).
        let already_complete = self.checkpointed_at.is_some()
            && self.checkpointed_at == self.capture.wal
            && self.capture.wal.is_some_and(|c| c.frame >= frames);
        if !already_complete {
            if !self.checkpoint_window()? {
                return Ok(());
            }
            self.checkpointed_at = self.capture.wal;
        }
        // A complete PASSIVE checkpoint lets the next commit restart the WAL
        // from its start, so the file stops growing; TRUNCATE only gives the
        // space back. It needs no reader on the WAL and takes the write lock
        // itself, so it cannot run inside a sync point: it waits for a quiet
        // tick, and a commit slipping in anyway is detected by the data
        // version and caught up like lost continuity.
        if wal_bytes() <= self.policy.truncate_bytes || !idle {
            return Ok(());
        }
        // A commit after this reading shows in the data version; one
        // before it is captured here.
        let version = self.source.data_version()?;
        self.capture_available(usize::MAX)?;
        self.source.end_read()?;
        // TRUNCATE holds the write lock itself, for the whole checkpoint.
        let started = std::time::Instant::now();
        let truncate = self.source.checkpoint(CheckpointMode::Truncate);
        self.metrics.record_write_lock_hold(started.elapsed());
        // Hold the WAL before looking: a commit after this is kept by the
        // read transaction, one before it shows in the data version.
        self.source.begin_read()?;
        let raced = self.source.data_version()? != version;
        let truncate = truncate?;
        self.metrics.record_checkpoint(true);
        tracing::info!(db = %self.db_label, busy = truncate.busy, "checkpoint (truncate)");
        if raced {
            tracing::info!(db = %self.db_label, "a commit raced the TRUNCATE checkpoint: catching up by page hashes");
            self.catch_up()?;
        } else if !truncate.busy {
            self.wal_index.clear();
            self.capture.wal = None;
            self.checkpointed_at = None;
            self.commit_state(&[], false)?;
        }
        Ok(())
    }

    /// A checkpoint window: lets the app checkpoint and restart its WAL
    /// without ever taking its write lock.
    ///
    /// 1. read what was committed since the last capture into memory (a few
    ///    milliseconds: the app's commits past SQLite's checkpoint threshold
    ///    cost it more until the window opens, so nothing slow goes first);
    /// 2. let go of the read mark, run PASSIVE (it copies every frame: no
    ///    reader of ours is in the way) and wait, up to [`RESTART_WINDOW`],
    ///    for the app's next commit to restart the WAL from its first frame
    ///    (SQLite does that when every frame is copied and no reader holds a
    ///    mark); the app's own autocheckpoint copies what it commits
    ///    meanwhile;
    /// 3. hold a read mark again, write the batch of step 1 as segments, and
    ///    capture at once: what was committed after step 1 is the previous
    ///    WAL's tail, still at the end of the file until the new WAL grows
    ///    that far ([`Replicator::read_old_tail`] reads it and proves it
    ///    whole, or a catch-up follows).
    ///
    /// Returns whether the WAL was restarted or can restart at the app's
    /// next commit; `false` when something kept the checkpoint from
    /// completing (the app's readers, or a commit stream that never let the
    /// app's checkpoint finish): try again later.
    fn checkpoint_window(&mut self) -> Result<bool> {
        let include = vec![true; self.stores.len()];
        let batch = loop {
            let Some(mut read) = self.read_batch(MAX_FRAMES_PER_CAPTURE)? else {
                if self.catch_up_due {
                    self.catch_up()?;
                    self.catch_up_due = false;
                }
                break None;
            };
            if !read.reached_end {
                // A previous WAL's tail, or a backlog longer than a batch:
                // written now, then read on.
                self.write_batch(read, &include)?;
                continue;
            }
            let frames = std::mem::take(&mut read.frames);
            let mut reader =
                PageReader::new(self.source.db_path(), self.source.db_file(), self.capture.page_size, frames);
            read.pages = Some(reader.read_all(&read.batch)?);
            if reader.read_from_wal() && !self.wal_not_restarted_since(read.end)? {
                self.catch_up_due = true;
                break None;
            }
            break Some(read);
        };
        let wal_path = wal::wal_path(self.source.db_path());
        let salts = |header: Option<wal::WalHeader>| header.map(|h| (h.salt1, h.salt2));
        let before = salts(wal::read_header(&wal_path)?);
        let version = self.source.data_version()?;
        self.source.end_read()?;
        let opened = std::time::Instant::now();
        let outcome = (|| -> Result<bool> {
            let mut checkpointed_at = opened;
            let mut last = self.source.checkpoint(CheckpointMode::Passive)?;
            loop {
                if salts(wal::read_header(&wal_path)?) != before {
                    return Ok(true);
                }
                let complete = !last.busy && last.log_frames == last.checkpointed_frames;
                // Everything copied and nothing committed since: the app's
                // next commit restarts the WAL, with no tail to read.
                if complete && self.source.data_version()? == version {
                    return Ok(true);
                }
                if opened.elapsed() >= RESTART_WINDOW {
                    return Ok(false);
                }
                std::thread::sleep(RESTART_POLL);
                if checkpointed_at.elapsed() >= WINDOW_CHECKPOINT_EVERY {
                    last = self.source.checkpoint(CheckpointMode::Passive)?;
                    checkpointed_at = std::time::Instant::now();
                }
            }
        })();
        // Hold the WAL again, whatever happened, before reading its tail.
        self.source.begin_read()?;
        if let Some(batch) = batch {
            // Until it is written, the WAL may have restarted over it: if
            // writing fails, only a catch-up can tell what the stores miss.
            self.catch_up_due = true;
            // The previous WAL's tail is read first: the new WAL grows over
            // it while the batch is encoded.
            let written = (|| {
                let tail = self.read_tail_after(&batch)?;
                self.write_batch(batch, &include)?;
                anyhow::Ok(tail)
            })();
            let tail = written.inspect_err(|e| {
                tracing::warn!(
                    db = %self.db_label,
                    error = %format!("{e:#}"),
                    "a checkpoint window's batch was not written: catching up by page hashes at the next capture"
                );
            })?;
            self.catch_up_due = false;
            self.write_tail(tail, &include)?;
        }
        let restarted = outcome?;
        self.metrics.record_checkpoint(false);
        tracing::debug!(db = %self.db_label, restarted, window_ms = opened.elapsed().as_millis() as u64, "checkpoint window");
        self.capture_available(usize::MAX)?;
        Ok(restarted)
    }
}

impl Replicator {
    /// The previous WAL's tail after `batch` (not yet written), if the WAL
    /// restarted after it.
    fn read_tail_after(&mut self, batch: &ReadBatch) -> Result<Option<(wal::WalHeader, OldTail)>> {
        let wal_path = wal::wal_path(self.source.db_path());
        let Some(header) = wal::read_header(&wal_path)? else { return Ok(None) };
        if (header.salt1, header.salt2) == (batch.end.salt1, batch.end.salt2)
            || header.page_size != self.capture.page_size
        {
            return Ok(None); // read on as usual (a new page size is refused there)
        }
        let tail = self.read_old_tail(&header, batch.end, batch.batch.commit)?;
        Ok(Some((header, tail)))
    }

    /// Writes a tail read by [`Replicator::read_tail_after`], once the batch
    /// before it is written, and moves the capture to the new WAL.
    fn write_tail(&mut self, tail: Option<(wal::WalHeader, OldTail)>, include: &[bool]) -> Result<()> {
        match tail {
            None => {}
            Some((_, OldTail::Complete(Some(tail)))) => {
                self.write_batch(tail, include)?;
            }
            Some((header, OldTail::Complete(None))) => {
                self.wal_index.clear();
                self.capture.wal = Some(header.start());
            }
            Some((_, OldTail::Unproven)) => self.catch_up_due = true,
        }
        Ok(())
    }
}

/// Takes the write lock of `source`, waiting through busy periods.
pub(super) fn lock_writes(source: &mut Source, db_label: &str) -> Result<()> {
    for _ in 0..30 {
        if source.lock_writes()? {
            return Ok(());
        }
    }
    bail!("take the write lock of {db_label}: the app held it for over a minute")
}
