//! One object or document read and checked: a segment on its own and
//! against its generation (name, range, checksum claims), the manifest and
//! the snapshot index as documents.

use std::fs::File;
use std::io::{Seek, Write};

use anyhow::{Context, Result};
use distributary_core::format::{Event, FormatError, SegmentDecoder};
use distributary_core::layout::{Level, snapshot_index_key};
use distributary_core::manifest::{Document, ManifestError, SnapshotIndex, read_snapshot_index};
use distributary_core::store::GetOptions;
use distributary_core::{Checksum, GenerationId, TxId};
use futures::StreamExt;

use super::Verifier;
use super::problem::{Kind, cause};
use super::state::{Doc, Fetched, GenState, Info};

impl Verifier<'_> {
    /// own and against the generation, and, with `--deep`, decodes and
    /// replays it.
    pub(super) async fn inspect(
        &mut self,
        state: &mut GenState,
        key: &str,
        level: Level,
        txid: TxId,
    ) -> Result<Fetched> {
        if let Some(fetched) = self.cache.get(key) {
            return Ok(fetched.clone());
        }
        let (fetched, spooled) = self.fetch(key).await?;
        if let Fetched::Found(info) = &fetched {
            let sound = self.check_object(state, key, level, txid, info);
            if let Some(file) = spooled {
                self.deep_check(state, key, level, info, file, sound).await?;
            }
        }
        self.cache.insert(key.to_string(), fetched.clone());
        Ok(fetched)
    }

    /// Downloads `key` through the segment decoder (and, with `--deep`,
    /// into a temp file for the second pass).
    pub(super) async fn fetch(&mut self, key: &str) -> Result<(Fetched, Option<File>)> {
        if self.listed.as_ref().is_some_and(|listed| !listed.contains(key)) {
            return Ok((Fetched::Missing, None));
        }
        let result = match self.store.get(key, GetOptions::default()).await {
            Ok(result) => result,
            Err(e) if e.is_not_found() => return Ok((Fetched::Missing, None)),
            Err(e) => return Err(e).with_context(|| format!("read {key}")),
        };
        self.seen.insert(key.to_string());
        self.objects += 1;
        let size = result.meta.size;
        let mut spool = match self.deep {
            true => Some(tempfile::tempfile().context("create a temp file for --deep")?),
            false => None,
        };
        let mut decoder = SegmentDecoder::new(key);
        let (mut header, mut trailer, mut failure) = (None, None, None);
        let mut body = result.body;
        let mut drain = |decoder: &mut SegmentDecoder| -> Option<FormatError> {
            loop {
                match decoder.next_event() {
                    Ok(Some(Event::Header(h))) => header = Some(h),
                    Ok(Some(Event::Frame(_))) => {}
                    Ok(Some(Event::Trailer(t))) => trailer = Some(t),
                    Ok(None) => return None,
                    Err(e) => return Some(e),
                }
            }
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("read {key}"))?;
            if let Some(file) = &mut spool {
                file.write_all(&chunk).context("write a temp file for --deep")?;
            }
            if failure.is_none() {
                decoder.push(&chunk);
                failure = drain(&mut decoder);
            }
        }
        if failure.is_none() {
            decoder.finish_input();
            failure = drain(&mut decoder);
        }
        let (header, trailer) = match (failure, header, trailer) {
            (None, Some(header), Some(trailer)) => (header, trailer),
            (failure, _, _) => {
                let message = failure.map_or("the object ended before its trailer".to_string(), |e| cause(&e, key));
                self.problem(Kind::Corrupt, key, message);
                return Ok((Fetched::Bad, None));
            }
        };
        if let Some(file) = &mut spool {
            file.rewind().context("rewind a temp file for --deep")?;
        }
        Ok((Fetched::Found(Info { header, post_apply: trailer.post_apply_checksum, size }), spool))
    }

    /// The checks of one object against its name and generation, and its
    /// two checksum claims. Returns whether it passed.
    pub(super) fn check_object(
        &mut self,
        state: &mut GenState,
        key: &str,
        level: Level,
        txid: TxId,
        info: &Info,
    ) -> bool {
        let header = &info.header;
        let before = self.problems.len();
        if header.generation != state.generation {
            self.problem(
                Kind::Discontinuous,
                key,
                format!("belongs to generation {}, not {}", header.generation, state.generation),
            );
        }
        match level {
            Level::Snapshot if !header.flags.snapshot() => {
                self.problem(Kind::Discontinuous, key, format!("holds {} without the SNAPSHOT flag", header.range()))
            }
            Level::Snapshot if header.max_txid != txid => self.problem(
                Kind::Discontinuous,
                key,
                format!("holds {}: a snapshot is named by its max_txid", header.range()),
            ),
            Level::L0 | Level::L1 if header.min_txid != txid => self.problem(
                Kind::Discontinuous,
                key,
                format!("holds {}: a segment is named by its min_txid", header.range()),
            ),
            _ => {}
        }
        if let Some(page_size) = state.page_size
            && header.page_size != page_size
        {
            self.problem(Kind::Disagrees, key, format!("page size {} != the manifest's {page_size}", header.page_size));
        }
        if let Some(key_check) = state.key_check
            && header.key_check != key_check
        {
            self.problem(Kind::Disagrees, key, format!("key check {} != the manifest's {key_check}", header.key_check));
        }
        if self.problems.len() > before {
            return false;
        }
        self.claim(state, header.max_txid, info.post_apply, key, "post-apply");
        if !header.flags.snapshot()
            && let Some(previous) = header.min_txid.prev()
        {
            self.claim(state, previous, header.pre_apply_checksum, key, "pre-apply");
        }
        self.problems.len() == before
    }

    /// Records that `key` says the database's checksum at `txid` is
    /// `checksum`; reports it if someone said otherwise first.
    pub(super) fn claim(&mut self, state: &mut GenState, txid: TxId, checksum: Checksum, key: &str, what: &str) {
        match state.claims.get(&txid) {
            Some((first, who)) if *first != checksum => {
                let message = format!("{what} checksum {checksum} (the database at TXID {txid}) != {first}, the {who}");
                self.problem(Kind::Checksum, key, message);
            }
            Some(_) => {}
            None => {
                state.claims.insert(txid, (checksum, format!("{what} checksum of {key}")));
            }
        }
    }

    /// Reads the snapshot index of `generation`.
    pub(super) async fn read_index(&mut self, generation: GenerationId) -> Result<Doc<SnapshotIndex>> {
        let key = snapshot_index_key(generation);
        let doc = self.read_doc(&key, read_snapshot_index(self.store, generation).await).await?;
        if let Doc::Found(index) = &doc {
            if index.generation != generation {
                self.problem(
                    Kind::Disagrees,
                    &key,
                    format!("names generation {}, not its folder's {generation}", index.generation),
                );
            }
            if index.snapshots.windows(2).any(|w| w[0].txid >= w[1].txid) {
                self.problem(Kind::Disagrees, &key, "its snapshots are not in ascending TXID order");
            }
        }
        Ok(doc)
    }

    pub(super) async fn read_doc<T: Document>(
        &mut self,
        key: &str,
        result: Result<Option<distributary_core::manifest::Versioned<T>>, ManifestError>,
    ) -> Result<Doc<T>> {
        Ok(match result {
            Ok(Some(document)) => {
                self.seen.insert(key.to_string());
                self.objects += 1;
                Doc::Found(document.value)
            }
            Ok(None) => Doc::Missing,
            Err(ManifestError::Store(e)) => return Err(e).with_context(|| format!("read {key}")),
            Err(e) => {
                self.seen.insert(key.to_string());
                self.problem(Kind::Corrupt, key, cause(&e, key));
                Doc::Bad
            }
        })
    }
}
