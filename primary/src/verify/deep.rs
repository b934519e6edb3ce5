//! `--deep`: every frame decoded, and the chain replayed from the oldest
//! kept snapshot into page hashes, off the async threads.

use std::fs::File;
use std::io::BufReader;

use anyhow::{Context, Result};
use distributary_core::apply::{ApplyError, ObjectApplier, PageHashes};
use distributary_core::format::{Compression, EncryptionKey, Header, PageCodec, SegmentReader};
use distributary_core::layout::Level;
use distributary_core::plan::ReplicaPosition;
use distributary_core::{Checksum, TxId};

use super::Verifier;
use super::problem::{Kind, cause};
use super::state::{GenState, Info, Replay};

impl Verifier<'_> {
    /// `--deep`: decodes every frame of the spooled object; replays it if it
    /// continues the replay (or starts it: the generation's oldest
    /// snapshot). An object that failed its other checks stops the replay.
    pub(super) async fn deep_check(
        &mut self,
        state: &GenState,
        key: &str,
        level: Level,
        info: &Info,
        file: File,
        sound: bool,
    ) -> Result<()> {
        let header = info.header.clone();
        if header.flags.encrypted() && self.key.is_none() {
            self.sealed_without_key = true;
            return Ok(());
        }
        if !sound {
            self.replay = None;
        }
        let job = DeepJob {
            file,
            key: key.to_string(),
            header,
            snapshot: level == Level::Snapshot,
            codec_key: if info.header.flags.encrypted() { self.key.clone() } else { None },
            replay: self.replay.take(),
            start_replay: sound && state.replay_base == Some(info.header.max_txid) && level == Level::Snapshot,
        };
        let (replay, outcome) =
            tokio::task::spawn_blocking(move || job.run()).await.context("decode an object for --deep")?;
        self.replay = replay;
        if let Err(error) = outcome {
            let kind = match error {
                ApplyError::PostChecksum { .. } => Kind::Checksum,
                ApplyError::Discontinuous { .. } => Kind::Discontinuous,
                _ => Kind::Corrupt,
            };
            self.problem(kind, key, format!("--deep: {}", cause(&error, key)));
        }
        Ok(())
    }
}

/// `--deep`'s work on one object, off the async threads.
pub(super) struct DeepJob {
    pub(super) file: File,
    pub(super) key: String,
    pub(super) header: Header,
    pub(super) snapshot: bool,
    pub(super) codec_key: Option<EncryptionKey>,
    pub(super) replay: Option<Replay>,
    pub(super) start_replay: bool,
}

impl DeepJob {
    /// Returns the replay (moved on, kept, started or stopped) and the outcome.
    pub(super) fn run(self) -> (Option<Replay>, Result<(), ApplyError>) {
        let DeepJob { file, key, header, snapshot, codec_key, replay, start_replay } = self;
        let reader = BufReader::new(file);
        if snapshot {
            // A snapshot stands alone: its pages give its checksum.
            let empty = ReplicaPosition {
                generation: header.generation,
                txid: TxId::ZERO,
                checksum: Checksum::EMPTY,
                timestamp_ms: 0,
            };
            let mut applier =
                match ObjectApplier::new(header.generation, codec_key.as_ref(), header.page_size, empty, 0) {
                    Ok(applier) => applier,
                    Err(e) => return (replay, Err(e)),
                };
            let mut sink = PageHashes::new(header.page_size);
            return match applier.apply_object(&mut sink, &key, reader) {
                Ok(_) if start_replay && replay.is_none() => (Some(Replay { applier, sink }), Ok(())),
                Ok(_) => (replay, Ok(())),
                Err(e) => (replay, Err(e)),
            };
        }
        let continues = replay.as_ref().is_some_and(|r| {
            let at = r.applier.position().txid;
            header.min_txid <= at.next() && header.max_txid > at
        });
        match replay {
            Some(mut r) if continues => match r.applier.apply_object(&mut r.sink, &key, reader) {
                Ok(_) => (Some(r), Ok(())),
                Err(e) => (None, Err(e)),
            },
            other => (other, decode_frames(&key, &header, codec_key.as_ref(), reader)),
        }
    }
}

/// Decodes every frame of a segment (page checksums, AES-GCM tags).
pub(super) fn decode_frames(
    key: &str,
    header: &Header,
    codec_key: Option<&EncryptionKey>,
    reader: BufReader<File>,
) -> Result<(), ApplyError> {
    let mut codec = PageCodec::new(header.generation, codec_key, Compression::default())?;
    let mut reader = SegmentReader::open(key, reader)?;
    let mut page = vec![0u8; header.page_size as usize];
    while reader.next_page(&mut codec, &mut page)?.is_some() {}
    Ok(())
}
