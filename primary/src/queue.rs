//! One store's captured segments that it has not acknowledged yet, in TXID
//! order: in memory in the common case (the WAL still holds their frames,
//! or a catch-up can rebuild what they hold), spilled to the store's
//! pending folder when they would hold too much memory or when the
//! metadata must record a capture past them before the store has them.

use std::collections::VecDeque;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use distributary_core::TxId;
use distributary_core::atomic_file;
use distributary_core::format::{HEADER_SIZE, Header, read_segment_header};

use crate::capture::{Body, Finished, GENESIS_NAME, pending_name};

/// A captured segment waiting for its store.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The capture record it belongs to (0: recorded before this start).
    pub seq: u64,
    /// Its header.
    pub header: Header,
    /// The first snapshot of a generation.
    pub genesis: bool,
    /// Its bytes.
    pub body: Body,
}

impl Queued {
    /// Its size in bytes, when it is held in memory.
    fn memory_bytes(&self) -> u64 {
        match &self.body {
            Body::Memory(bytes) => bytes.len() as u64,
            Body::File(_) => 0,
        }
    }

    /// A reader of its bytes.
    pub fn reader(&self) -> Result<Box<dyn Read + Send>> {
        Ok(match &self.body {
            Body::Memory(bytes) => Box::new(std::io::Cursor::new(bytes.clone())),
            Body::File(path) => Box::new(BufReader::with_capacity(
                16 * 1024,
                std::fs::File::open(path).with_context(|| format!("open pending segment {}", path.display()))?,
            )),
        })
    }
}

/// One store's segments not acknowledged yet.
pub struct SegmentQueue {
    entries: VecDeque<Queued>,
    /// Where segments are spilled.
    dir: PathBuf,
}

/// Segments uploaded at once at most (after a long outage), bounding the
/// merge's open files.
const MAX_PER_UPLOAD: usize = 256;

impl SegmentQueue {
    /// An empty queue spilling into `dir`.
    pub fn new(dir: PathBuf) -> SegmentQueue {
        SegmentQueue { entries: VecDeque::new(), dir }
    }

    /// The queue of a resumed store: the segments spilled before the
    /// restart, after `shipped` up to `captured` (checked to continue each
    /// other by the start; see `crate::resume::pending_gap`).
    pub fn load_spilled(dir: PathBuf, shipped: TxId, captured: TxId) -> Result<SegmentQueue> {
        let mut queue = SegmentQueue::new(dir);
        let mut next = shipped.next();
        while next <= captured {
            let genesis = next == TxId(1);
            let name = if genesis { GENESIS_NAME.to_string() } else { pending_name(next) };
            let path = queue.dir.join(name);
            let header = read_file_header(&path)?;
            if header.min_txid != next || header.max_txid > captured {
                bail!("pending segment {} holds {} where {next} was expected", path.display(), header.range());
            }
            next = header.max_txid.next();
            queue.entries.push_back(Queued { seq: 0, header, genesis, body: Body::File(path) });
        }
        Ok(queue)
    }

    /// Adds a segment captured after every one queued.
    pub fn push(&mut self, seq: u64, finished: Finished) {
        let Finished { header, genesis, body } = finished;
        self.entries.push_back(Queued { seq, header, genesis, body });
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.entries.iter().map(Queued::memory_bytes).sum()
    }

    /// Whether a segment of capture record `seq` (or an earlier one) is
    /// only in memory: the record cannot be written to the metadata before
    /// the store has it or it is spilled.
    pub fn holds_back(&self, seq: u64) -> bool {
        self.entries.iter().any(|q| q.seq <= seq && matches!(q.body, Body::Memory(_)))
    }

    /// Writes every segment held in memory of record `through_seq` or
    /// earlier to the pending folder, atomically and durably: the metadata
    /// then records the segments as spilled, and the WAL frames they hold
    /// may be checkpointed away, so a power cut must not lose the files.
    pub fn spill(&mut self, through_seq: u64) -> Result<()> {
        for queued in self.entries.iter_mut().filter(|q| q.seq <= through_seq) {
            let Body::Memory(bytes) = &queued.body else { continue };
            std::fs::create_dir_all(&self.dir).with_context(|| format!("create {}", self.dir.display()))?;
            let path = self.dir.join(pending_name(queued.header.min_txid));
            atomic_file::write_atomic(&path, bytes)
                .with_context(|| format!("spill a segment to {}", path.display()))?;
            queued.body = Body::File(path);
        }
        Ok(())
    }

    /// What the next upload sends: the genesis snapshot alone, or the
    /// segments after it (several are merged into one object).
    pub fn next_upload(&self) -> Vec<Queued> {
        match self.entries.front() {
            None => Vec::new(),
            Some(first) if first.genesis => vec![first.clone()],
            Some(_) => self.entries.iter().take_while(|q| !q.genesis).take(MAX_PER_UPLOAD).cloned().collect(),
        }
    }

    /// The store holds everything up to `through`: drops those segments,
    /// returning the spilled files to remove once that is recorded.
    pub fn acknowledge(&mut self, through: TxId) -> Vec<PathBuf> {
        let mut files = Vec::new();
        while let Some(first) = self.entries.front() {
            if first.header.max_txid > through {
                break;
            }
            if let Some(Queued { body: Body::File(path), .. }) = self.entries.pop_front() {
                files.push(path);
            }
        }
        files
    }

    /// The spill folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_file_header(path: &Path) -> Result<Header> {
    let mut bytes = [0u8; HEADER_SIZE];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .with_context(|| format!("read pending segment {}", path.display()))?;
    Ok(read_segment_header(&path.display().to_string(), &bytes)?)
}

/// Removes files the store holds already (their upload is recorded).
pub fn remove_files(files: &[PathBuf]) -> Result<()> {
    for path in files {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use distributary_core::format::{Compression, Flags, KeyCheck};
    use distributary_core::{Checksum, GenerationId};

    fn header(min: u64, max: u64) -> Header {
        Header {
            flags: Flags(0),
            page_size: 4096,
            commit: 1,
            min_txid: TxId(min),
            max_txid: TxId(max),
            timestamp_ms: 0,
            pre_apply_checksum: Checksum::EMPTY,
            generation: GenerationId::new(1).unwrap(),
            key_check: KeyCheck::NONE,
            compression: Compression::default().codecs(),
        }
    }

    fn memory(min: u64, max: u64) -> Finished {
        Finished { header: header(min, max), genesis: false, body: Body::Memory(vec![7u8; 10].into()) }
    }

    #[test]
    fn a_record_is_held_back_only_by_segments_in_memory_until_spilled_or_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = SegmentQueue::new(dir.path().join("pending"));
        queue.push(1, memory(2, 3));
        queue.push(2, memory(4, 4));
        assert!(queue.holds_back(1) && queue.holds_back(2));
        assert_eq!(queue.memory_bytes(), 20);
        queue.spill(1).unwrap();
        assert!(!queue.holds_back(1), "record 1's segment is on disk");
        assert!(queue.holds_back(2));
        assert!(dir.path().join("pending").join(pending_name(TxId(2))).exists());
        assert_eq!(queue.next_upload().len(), 2, "spilled and in memory go out together");
        let files = queue.acknowledge(TxId(3));
        assert_eq!(files, vec![dir.path().join("pending").join(pending_name(TxId(2)))]);
        assert!(queue.holds_back(2));
        assert!(queue.acknowledge(TxId(4)).is_empty());
        assert!(queue.is_empty());
    }
}
