//! The walk over generations: the manifest's (everything it and the
//! snapshot index name, and every kept snapshot's restore chain) and, with
//! `--list`, every other one found, with orphans and strays.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, bail};
use distributary_core::format::KeyCheck;
use distributary_core::layout::{Level, MANIFEST_KEY, SegmentKey, l0_key, l1_key, snapshot_index_key};
use distributary_core::manifest::{Manifest, SnapshotRef, read_manifest};
use distributary_core::plan::known_snapshots;
use distributary_core::store::StoreError;
use distributary_core::{GenerationId, TxId};

use super::Verifier;
use super::problem::Kind;
use super::state::{Doc, GenState};

impl Verifier<'_> {
    pub(super) async fn run(&mut self, list: bool) -> Result<()> {
        let manifest = match self.read_doc(MANIFEST_KEY, read_manifest(self.store).await).await? {
            Doc::Found(manifest) => Some(manifest),
            Doc::Missing => {
                self.problem(Kind::Missing, MANIFEST_KEY, "not found: the store holds no replica (is the URL right?)");
                None
            }
            Doc::Bad => None,
        };
        if let (Some(key), Some(manifest)) = (&self.key, &manifest) {
            match manifest.key_check {
                Some(check) if check != key.check() => bail!(
                    "the key of --encryption-key-file (key check {}) is not the store's (key check {check})",
                    key.check()
                ),
                Some(_) => {}
                None => {
                    eprintln!("distributary: the store is not encrypted; ignoring --encryption-key-file");
                    self.key = None;
                }
            }
        }
        // Listed after the manifest was read: everything it names is older.
        let mut others = Vec::new();
        if list {
            let objects = self.store.list("").await.map_err(|e| match e {
                StoreError::Unsupported { .. } => anyhow::anyhow!("list: {e} (run without --list)"),
                e => anyhow::Error::new(e).context("list the store"),
            })?;
            let keys: HashSet<String> = objects.into_iter().map(|o| o.key).collect();
            let mut found: BTreeMap<GenerationId, Vec<TxId>> = BTreeMap::new();
            for key in &keys {
                if let Some(segment) = SegmentKey::parse(key) {
                    let snapshots = found.entry(segment.generation).or_default();
                    if segment.level == Level::Snapshot {
                        snapshots.push(segment.txid);
                    }
                } else if let Some(generation) = key.strip_suffix("/snapshots/index.json").and_then(|g| g.parse().ok())
                {
                    found.entry(generation).or_default();
                }
            }
            others = found.into_iter().filter(|(g, _)| manifest.as_ref().is_none_or(|m| m.generation != *g)).collect();
            self.listed = Some(keys);
        }
        if let Some(manifest) = &manifest {
            self.verify_current(manifest).await?;
        }
        for (generation, mut snapshots) in others {
            snapshots.sort();
            self.verify_other(generation, snapshots).await?;
        }
        if let Some(listed) = self.listed.take() {
            let mut keys: Vec<&String> = listed.iter().filter(|k| !self.seen.contains(*k)).collect();
            keys.sort();
            for key in keys {
                if SegmentKey::parse(key).is_some() {
                    self.problem(
                        Kind::Orphan,
                        key,
                        "not reached from the manifest, a snapshot index or any chain (left by an interrupted compaction, or by hand)",
                    );
                } else {
                    self.problem(
                        Kind::Stray,
                        key,
                        "not a name of the layout (manifest.json, <generation>/{l0,l1,snapshots}/<txid>.seg, <generation>/snapshots/index.json)",
                    );
                }
            }
        }
        Ok(())
    }

    /// The manifest's generation: everything it and the index name.
    pub(super) async fn verify_current(&mut self, manifest: &Manifest) -> Result<()> {
        let generation = manifest.generation;
        self.generations.push(generation);
        self.replay = None;
        let mut state =
            GenState::new(generation, Some(manifest.page_size), Some(manifest.key_check.unwrap_or(KeyCheck::NONE)));
        let index = self.read_index(generation).await?;
        let index = match index {
            Doc::Found(index) => Some(index),
            Doc::Missing => {
                self.problem(
                    Kind::Missing,
                    &snapshot_index_key(generation),
                    "not found: every generation has one from its first snapshot on",
                );
                None
            }
            Doc::Bad => None,
        };
        if let (Some(snapshot), Some(index)) = (manifest.snapshot, &index)
            && let Some(entry) = index.snapshots.iter().find(|s| s.txid == snapshot.txid)
            && *entry != snapshot
        {
            self.problem(
                Kind::Disagrees,
                MANIFEST_KEY,
                format!(
                    "records snapshot {} as {}, the snapshot index as {}",
                    snapshot.txid,
                    show(&snapshot),
                    show(entry)
                ),
            );
        }
        if manifest.snapshot.is_none() {
            self.problem(
                Kind::Disagrees,
                MANIFEST_KEY,
                "names no snapshot: nothing can be restored from an empty file",
            );
        }
        let snapshots = known_snapshots(manifest, index.as_ref());
        state.replay_base = snapshots.first().map(|s| s.txid);
        for snapshot in &snapshots {
            let in_index = index.as_ref().is_some_and(|i| i.snapshots.iter().any(|s| s.txid == snapshot.txid));
            let named_by = if in_index { "the snapshot index" } else { "the manifest" };
            self.verify_snapshot(&mut state, snapshot.txid, Some(snapshot), named_by).await?;
        }

        let newest = manifest.newest;
        if let Some(snapshot) = manifest.snapshot
            && snapshot.txid > newest.txid
        {
            self.problem(
                Kind::Disagrees,
                MANIFEST_KEY,
                format!("its snapshot {} is past its newest TXID {}", snapshot.txid, newest.txid),
            );
        }
        if let Some(chain) = manifest.l1 {
            self.walk_l1(&mut state, chain.min_txid, Some(chain.max_txid)).await?;
            if manifest.l0_min_txid != chain.max_txid.next() {
                self.problem(
                    Kind::Disagrees,
                    MANIFEST_KEY,
                    format!("l0_min_txid {} does not follow l1.max_txid {}", manifest.l0_min_txid, chain.max_txid),
                );
            }
            if newest.txid < chain.max_txid {
                self.problem(
                    Kind::Disagrees,
                    MANIFEST_KEY,
                    format!("newest TXID {} is before l1.max_txid {}", newest.txid, chain.max_txid),
                );
            }
            // L0 segments already merged into L1 are optional (retention
            // deletes them), but those kept must be sound.
            let kept = manifest.l0_kept_min_txid.unwrap_or(chain.min_txid);
            let walked_past = state.l1.values().any(|seg| seg.max_txid >= kept);
            if manifest.l0_kept_min_txid.is_some()
                && kept < manifest.l0_min_txid
                && kept >= chain.min_txid
                && walked_past
                && !state.l1.contains_key(&kept)
            {
                self.problem(
                    Kind::Disagrees,
                    MANIFEST_KEY,
                    format!("l0_kept_min_txid {kept} is not the first TXID of an L1 segment"),
                );
            }
            self.walk_covered_l0(&mut state, kept, manifest.l0_min_txid).await?;
        }
        let broken = self.walk_l0(&mut state, manifest.l0_min_txid, Some(newest.txid)).await?;

        // The manifest's newest position is the end of an object that says so.
        match state.ending_at(newest.txid).cloned() {
            Some(seg) => {
                self.claim(&mut state, newest.txid, newest.checksum, MANIFEST_KEY, "newest");
                if seg.timestamp_ms != newest.timestamp_ms {
                    self.problem(
                        Kind::Disagrees,
                        MANIFEST_KEY,
                        format!(
                            "newest TXID {} has timestamp {} ms, but {} says {} ms",
                            newest.txid, newest.timestamp_ms, seg.key, seg.timestamp_ms
                        ),
                    );
                }
            }
            None if broken.is_none() => {
                self.problem(
                    Kind::Disagrees,
                    MANIFEST_KEY,
                    format!("newest TXID {} is not the last TXID of any object the chain holds", newest.txid),
                );
            }
            None => {}
        }
        let l1 = manifest.l1.map(|c| (c.min_txid, c.max_txid));
        self.check_restore_chains(&mut state, l1, newest.txid, broken, "the manifest's newest TXID").await
    }

    /// A generation that is not the manifest's (`--list`): its snapshot
    /// index (or the snapshots listed, if it has none) and the chains after
    /// the oldest snapshot.
    pub(super) async fn verify_other(&mut self, generation: GenerationId, listed_snapshots: Vec<TxId>) -> Result<()> {
        self.generations.push(generation);
        self.replay = None;
        let mut state = GenState::new(generation, None, None);
        let refs: Vec<(TxId, Option<SnapshotRef>)> = match self.read_index(generation).await? {
            Doc::Found(index) => index.snapshots.iter().map(|s| (s.txid, Some(*s))).collect(),
            Doc::Missing | Doc::Bad => {
                if !self.problems.iter().any(|p| p.key == snapshot_index_key(generation)) {
                    self.problem(
                        Kind::Missing,
                        &snapshot_index_key(generation),
                        "not found: verifying the snapshots listed instead",
                    );
                }
                listed_snapshots.iter().map(|t| (*t, None)).collect()
            }
        };
        state.replay_base = refs.first().map(|(t, _)| *t);
        for (txid, snapshot) in &refs {
            self.verify_snapshot(&mut state, *txid, snapshot.as_ref(), "the snapshot index").await?;
        }
        let Some(&oldest) = state.snapshots.keys().next() else {
            return Ok(());
        };
        self.walk_l1(&mut state, oldest.next(), None).await?;
        let l1 = match (state.l1.keys().next(), state.l1.values().last()) {
            (Some(&min_txid), Some(last)) => Some((min_txid, last.max_txid)),
            _ => None,
        };
        let l0_from = match l1 {
            Some((min_txid, max_txid)) => {
                self.walk_covered_l0(&mut state, min_txid, max_txid.next()).await?;
                max_txid.next()
            }
            None => oldest.next(),
        };
        self.walk_l0(&mut state, l0_from, None).await?;
        let newest = state.newest_seen();
        self.check_restore_chains(&mut state, l1, newest, None, "the newest TXID of the generation").await
    }

    /// Each snapshot found reaches `newest` as a reader would plan it:
    /// L1 by name if the snapshot is within the L1 chain, then L0 by name.
    /// A chain that stops at `broken` (the L0 chain's own hole, reported
    /// already) is not reported again.
    pub(super) async fn check_restore_chains(
        &mut self,
        state: &mut GenState,
        l1: Option<(TxId, TxId)>,
        newest: TxId,
        broken: Option<TxId>,
        what: &str,
    ) -> Result<()> {
        let snapshots: Vec<(TxId, String)> = state.snapshots.iter().map(|(t, s)| (*t, s.key.clone())).collect();
        for (txid, key) in snapshots {
            let mut at = txid;
            let mut stuck_at = None;
            if let Some((min_txid, max_txid)) = l1
                && at < max_txid
                && at.next() >= min_txid
            {
                while at < max_txid {
                    match self.probe(state, Level::L1, at.next()).await? {
                        Some(end) => at = end,
                        None => {
                            stuck_at = Some(l1_key(state.generation, at.next()));
                            break;
                        }
                    }
                }
            }
            if stuck_at.is_none() {
                while at < newest {
                    match self.probe(state, Level::L0, at.next()).await? {
                        Some(end) => at = end,
                        None => {
                            stuck_at = Some(l0_key(state.generation, at.next()));
                            break;
                        }
                    }
                }
            }
            if let Some(next) = stuck_at
                && broken != Some(at)
            {
                self.problem(
                    Kind::Unreachable,
                    &key,
                    format!(
                        "its restore chain stops at TXID {at}: {next} is missing or unreadable ({what} is {newest})"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// A snapshot record, for messages.
pub(super) fn show(snapshot: &SnapshotRef) -> String {
    format!(
        "{{size {}, pages {}, checksum {}, timestamp {} ms}}",
        snapshot.size, snapshot.commit, snapshot.checksum, snapshot.timestamp_ms
    )
}
