//! `distributary verify STORE_URL`: checks a store and changes nothing.
//!
//! It walks each generation the way readers do — by name, from the manifest
//! and the snapshot index, no LIST — and reads every object it reaches once.
//! What is checked, and the one rule behind the checksum checks:
//!
//! - every object: header checksum, frame layout, page index and file
//!   checksum (the segment decoder, over the whole object); its name
//!   (`min_txid` for L0 and L1, `max_txid` and the SNAPSHOT flag for a
//!   snapshot), generation, page size and key check;
//! - each level's chain is contiguous: `l1/{t+1}` → … and `l0/{t+1}` → …
//!   until not found, reaching what the manifest says;
//! - checksums: every object *claims* the database's checksum at two TXIDs
//!   (post-apply at `max_txid`, pre-apply at `min_txid - 1`), and so do the
//!   manifest (at `newest`) and the index (at each snapshot). All claims on
//!   one TXID must agree. That is the checksum chain (a segment's pre-apply
//!   equals the post-apply of the segment before it) without assuming which
//!   objects are adjacent: by invariant 1 an object that overlaps others
//!   still claims the true state at `min_txid - 1`;
//! - the manifest and the index agree with the objects they name, and every
//!   kept snapshot's restore chain (snapshot → L1 → L0, as
//!   [`distributary_core::plan`] plans it) reaches the newest state;
//! - `--deep`: every frame is decoded too (page checksums; AES-GCM
//!   tags with the key), and the chain is replayed from the oldest kept
//!   snapshot through core's [`ObjectApplier`] into [`PageHashes`] (8 bytes
//!   per page), so every post-apply checksum is recomputed from pages;
//! - `--list`: every generation found is verified, and objects that nothing
//!   reaches (orphans) or that are not names of the layout (strays) are
//!   reported.
//!
//! Nothing needs the encryption key but `--deep`'s decoding: checksums are
//! over stored (sealed) bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Seek, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use distributary_core::apply::{ApplyError, ObjectApplier, PageHashes};
use distributary_core::format::{
    Compression, EncryptionKey, Event, FormatError, Header, KeyCheck, PageCodec, SegmentDecoder, SegmentReader,
};
use distributary_core::layout::{Level, MANIFEST_KEY, SegmentKey, l0_key, l1_key, snapshot_index_key, snapshot_key};
use distributary_core::manifest::{
    Document, Manifest, ManifestError, SnapshotIndex, SnapshotRef, read_manifest, read_snapshot_index,
};
use distributary_core::plan::{ReplicaPosition, known_snapshots};
use distributary_core::retry::{RetryBound, classify, retry_bounded};
use distributary_core::store::{GetOptions, Store, StoreError};
use distributary_core::{Checksum, GenerationId, TxId};
use futures::StreamExt;

/// `distributary verify --help`.
pub const LONG_ABOUT: &str = "\
Check a store without changing it (read-only: works on http(s):// stores).

Walks the manifest's generation by name, as readers do (no LIST unless
--list): the snapshots the manifest and the snapshot index name, the L1
chain, the L0 chain, and every kept snapshot's restore chain to the newest
state. Every object reached is downloaded once and checked through the
segment decoder: header checksum, frame layout, page index and file
checksum (so a flipped byte anywhere is caught without --deep), its name,
generation, page size and key check, TXID contiguity, and the checksum
chain (pre-apply = the previous state's post-apply; the manifest's and the
index's checksums, sizes and TXIDs agree with the objects).

--deep also decodes every page frame (page checksums; AES-GCM tags with
--encryption-key-file) and replays the chain from the oldest kept snapshot,
recomputing every post-apply checksum from the pages (8 bytes of memory per
page). Without the key, an encrypted store gets every check but decoding.

Prints one line per problem (KIND: KEY: what is wrong) and a summary; exit
status 0 when clean, 1 on a problem or a store error.";

/// Arguments of `distributary verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The store (file:///path, s3://bucket/prefix?..., http(s)://host/prefix).
    store_url: String,
    /// Also LIST the store: verify every generation found, and report
    /// objects nothing reaches (orphans) and names outside the layout (strays).
    #[arg(long)]
    list: bool,
    /// Also decode every frame and replay the chain, recomputing every
    /// post-apply checksum from the pages.
    #[arg(long)]
    deep: bool,
    /// Print JSON: {"problems": [{"key", "kind", "message"}], counts}.
    #[arg(long)]
    json: bool,
    /// Key file of an encrypted store (only --deep needs it, to open frames).
    #[arg(long)]
    encryption_key_file: Option<PathBuf>,
    /// How long to keep retrying a store that fails transiently (5xx,
    /// throttling, timeouts) before exiting with status 1.
    #[arg(long, default_value = "2m", value_parser = distributary_core::duration::parse_duration)]
    retry_for: std::time::Duration,
}

/// What is wrong, for machines (`--json`'s `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    /// An object that something names (or a chain needs) is not there.
    Missing,
    /// The object's bytes fail a check: checksum, layout, frame decoding.
    Corrupt,
    /// The object does not continue its chain: name, range, generation.
    Discontinuous,
    /// Two checksums of the same state disagree.
    Checksum,
    /// The manifest or the index says something else than the object.
    Disagrees,
    /// A kept snapshot's restore chain does not reach the newest state.
    Unreachable,
    /// An object of the layout that nothing reaches (`--list`).
    Orphan,
    /// A key that is not a name of the layout (`--list`).
    Stray,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Corrupt => "corrupt",
            Kind::Discontinuous => "discontinuous",
            Kind::Checksum => "checksum",
            Kind::Disagrees => "disagrees",
            Kind::Unreachable => "unreachable",
            Kind::Orphan => "orphan",
            Kind::Stray => "stray",
        }
    }
}

/// One problem found.
#[derive(Clone, Debug, serde::Serialize)]
struct Problem {
    key: String,
    kind: Kind,
    message: String,
}

/// An object read and decoded: what its header and trailer say.
#[derive(Clone, Debug)]
struct Info {
    header: Header,
    post_apply: Checksum,
    size: u64,
}

/// The result of looking an object up by name.
#[derive(Clone, Debug)]
enum Fetched {
    /// Read, decoded; its problems (if any) were reported.
    Found(Info),
    /// Not in the store.
    Missing,
    /// In the store but unreadable (reported): a chain cannot go past it.
    Bad,
}

/// A document read (manifest, snapshot index).
enum Doc<T> {
    Found(T),
    Missing,
    /// Unreadable (reported).
    Bad,
}

/// A segment of a chain, by its `min_txid`.
#[derive(Clone, Debug)]
struct Seg {
    max_txid: TxId,
    key: String,
    timestamp_ms: u64,
}

/// What is known about one generation while it is verified.
struct GenState {
    generation: GenerationId,
    /// What every header must say (from the manifest), if known.
    page_size: Option<u32>,
    key_check: Option<KeyCheck>,
    /// The database's checksum at a TXID, and who said so first.
    claims: BTreeMap<TxId, (Checksum, String)>,
    l1: BTreeMap<TxId, Seg>,
    l0: BTreeMap<TxId, Seg>,
    /// Snapshots found and sound, by TXID.
    snapshots: BTreeMap<TxId, Seg>,
    /// The snapshot `--deep` replays the chain from.
    replay_base: Option<TxId>,
}

impl GenState {
    fn new(generation: GenerationId, page_size: Option<u32>, key_check: Option<KeyCheck>) -> GenState {
        GenState {
            generation,
            page_size,
            key_check,
            claims: BTreeMap::new(),
            l1: BTreeMap::new(),
            l0: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            replay_base: None,
        }
    }

    /// The TXID of the newest state any object of the generation reaches.
    fn newest_seen(&self) -> TxId {
        let ends = self.l1.values().chain(self.l0.values()).chain(self.snapshots.values());
        ends.map(|s| s.max_txid).max().unwrap_or(TxId::ZERO)
    }

    /// The object ending exactly at `txid`, if any.
    fn ending_at(&self, txid: TxId) -> Option<&Seg> {
        let mut all = self.l0.values().chain(self.l1.values()).chain(self.snapshots.values());
        all.find(|s| s.max_txid == txid)
    }
}

/// `--deep`'s replay: the state of the chain in page hashes.
struct Replay {
    applier: ObjectApplier,
    sink: PageHashes,
}

struct Verifier<'a> {
    store: &'a dyn Store,
    deep: bool,
    key: Option<EncryptionKey>,
    json: bool,
    /// The keys LIST returned (`--list`): a name not among them is not
    /// requested. Objects a manifest read before the LIST names were
    /// published before it, so they are listed.
    listed: Option<HashSet<String>>,
    cache: HashMap<String, Fetched>,
    /// Keys read (found), for orphans.
    seen: HashSet<String>,
    problems: Vec<Problem>,
    objects: u64,
    generations: Vec<GenerationId>,
    replay: Option<Replay>,
    /// `--deep` met sealed frames without a key.
    sealed_without_key: bool,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let store = distributary_core::store::open(&args.store_url)
        .await
        .with_context(|| format!("open store {}", args.store_url))?;
    let key = match &args.encryption_key_file {
        Some(path) => Some(EncryptionKey::from_file(path)?),
        None => None,
    };
    // A walk cut short by a failing store starts over: problems found on
    // the way would otherwise be reported twice.
    let bound = RetryBound { give_up_after: args.retry_for };
    let verifier = retry_bounded(
        bound,
        "verify",
        |e: &anyhow::Error| classify(e.as_ref()),
        || async {
            let mut verifier = Verifier {
                store: store.as_ref(),
                deep: args.deep,
                key: key.clone(),
                json: args.json,
                listed: None,
                cache: HashMap::new(),
                seen: HashSet::new(),
                problems: Vec::new(),
                objects: 0,
                generations: Vec::new(),
                replay: None,
                sealed_without_key: false,
            };
            verifier.run(args.list).await.map(|()| verifier)
        },
    )
    .await
    .with_context(|| format!("verify {}", store.url()))?;
    if verifier.sealed_without_key {
        eprintln!(
            "distributary: the store is encrypted and no --encryption-key-file was given: --deep checked every byte but decoded no frame"
        );
    }
    let problems = verifier.problems.len();
    if args.json {
        let json = serde_json::json!({
            "store": store.url(),
            "deep": args.deep,
            "list": args.list,
            "generations": verifier.generations.len(),
            "generation_ids": verifier.generations.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            "objects": verifier.objects,
            "problem_count": problems,
            "problems": verifier.problems,
        });
        println!("{json}");
    } else {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        println!(
            "verified {}: {}, {}, {}",
            store.url(),
            plural(verifier.generations.len(), "generation"),
            plural(verifier.objects as usize, "object"),
            plural(problems, "problem")
        );
    }
    Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

impl Verifier<'_> {
    async fn run(&mut self, list: bool) -> Result<()> {
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
    async fn verify_current(&mut self, manifest: &Manifest) -> Result<()> {
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
    async fn verify_other(&mut self, generation: GenerationId, listed_snapshots: Vec<TxId>) -> Result<()> {
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
    async fn check_restore_chains(
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

    /// The end of the object of `level` starting at `txid`, from the chains
    /// walked or else by name.
    async fn probe(&mut self, state: &mut GenState, level: Level, txid: TxId) -> Result<Option<TxId>> {
        let chain = if level == Level::L1 { &state.l1 } else { &state.l0 };
        if let Some(seg) = chain.get(&txid) {
            return Ok(Some(seg.max_txid));
        }
        let key = if level == Level::L1 { l1_key(state.generation, txid) } else { l0_key(state.generation, txid) };
        Ok(match self.inspect(state, &key, level, txid).await? {
            Fetched::Found(info) if info.header.max_txid >= txid => {
                self.record(state, level, txid, &key, &info);
                Some(info.header.max_txid)
            }
            _ => None,
        })
    }

    fn record(&self, state: &mut GenState, level: Level, txid: TxId, key: &str, info: &Info) {
        let seg = Seg { max_txid: info.header.max_txid, key: key.to_string(), timestamp_ms: info.header.timestamp_ms };
        match level {
            Level::L0 => state.l0.insert(txid, seg),
            Level::L1 => state.l1.insert(txid, seg),
            Level::Snapshot => state.snapshots.insert(txid, seg),
        };
    }

    /// A snapshot named by the manifest or an index (`named_by`), checked
    /// against what it records.
    async fn verify_snapshot(
        &mut self,
        state: &mut GenState,
        txid: TxId,
        recorded: Option<&SnapshotRef>,
        named_by: &str,
    ) -> Result<()> {
        let key = snapshot_key(state.generation, txid);
        match self.inspect(state, &key, Level::Snapshot, txid).await? {
            Fetched::Missing => self.problem(Kind::Missing, &key, format!("not found, but {named_by} names it")),
            Fetched::Bad => {}
            Fetched::Found(info) => {
                if let Some(recorded) = recorded {
                    let mut differences = Vec::new();
                    let mut differ = |field: &str, recorded: String, actual: String| {
                        if recorded != actual {
                            differences.push(format!("{field} {recorded} (the object: {actual})"));
                        }
                    };
                    differ("size", recorded.size.to_string(), info.size.to_string());
                    differ("pages", recorded.commit.to_string(), info.header.commit.to_string());
                    differ("checksum", recorded.checksum.to_string(), info.post_apply.to_string());
                    differ("timestamp", recorded.timestamp_ms.to_string(), info.header.timestamp_ms.to_string());
                    if !differences.is_empty() {
                        self.problem(Kind::Disagrees, &key, format!("{named_by} records {}", differences.join(", ")));
                    }
                }
                if info.header.flags.snapshot() && info.header.max_txid == txid {
                    self.record(state, Level::Snapshot, txid, &key, &info);
                }
            }
        }
        Ok(())
    }

    /// The L1 chain by name from `from_txid` until not found; `until` is
    /// where the manifest says it ends.
    async fn walk_l1(&mut self, state: &mut GenState, from_txid: TxId, until: Option<TxId>) -> Result<()> {
        let mut txid = from_txid;
        loop {
            let key = l1_key(state.generation, txid);
            match self.inspect(state, &key, Level::L1, txid).await? {
                Fetched::Missing => {
                    if let Some(until) = until
                        && txid <= until
                    {
                        self.problem(
                            Kind::Missing,
                            &key,
                            format!(
                                "not found: the manifest's L1 chain [{from_txid}, {until}] stops at TXID {}",
                                TxId(txid.0.saturating_sub(1))
                            ),
                        );
                    }
                    return Ok(());
                }
                Fetched::Bad => return Ok(()),
                Fetched::Found(info) => {
                    let max_txid = info.header.max_txid;
                    if max_txid < txid {
                        return Ok(()); // misnamed (reported): the chain cannot go on
                    }
                    if let Some(until) = until
                        && txid <= until
                        && max_txid > until
                    {
                        self.problem(
                            Kind::Disagrees,
                            &key,
                            format!(
                                "holds {}, past the manifest's l1.max_txid {until}: no L1 segment ends there",
                                info.header.range()
                            ),
                        );
                    }
                    self.record(state, Level::L1, txid, &key, &info);
                    txid = max_txid.next();
                }
            }
        }
    }

    /// The L0 chain by name from `from_txid` until not found. With `newest`
    /// (the manifest's), a chain that stops before it is reported; returns
    /// the TXID where it stopped then.
    async fn walk_l0(&mut self, state: &mut GenState, from_txid: TxId, newest: Option<TxId>) -> Result<Option<TxId>> {
        let mut txid = from_txid;
        loop {
            let key = l0_key(state.generation, txid);
            let before = TxId(txid.0.saturating_sub(1));
            let short = newest.is_some_and(|newest| txid <= newest);
            match self.inspect(state, &key, Level::L0, txid).await? {
                Fetched::Missing => {
                    if let (true, Some(newest)) = (short, newest) {
                        self.problem(
                            Kind::Missing,
                            &key,
                            format!(
                                "not found: the L0 chain from TXID {from_txid} stops at TXID {before}, before the manifest's newest TXID {newest}"
                            ),
                        );
                        return Ok(Some(before));
                    }
                    return Ok(None);
                }
                Fetched::Bad => return Ok(short.then_some(before)),
                Fetched::Found(info) => {
                    if info.header.max_txid < txid {
                        return Ok(short.then_some(before));
                    }
                    self.record(state, Level::L0, txid, &key, &info);
                    txid = info.header.max_txid.next();
                }
            }
        }
    }

    /// The L0 segments kept under L1 segments `[kept, l0_min_txid)`: each
    /// L1 segment's by name from its first TXID, until not found (retention
    /// deletes them newest first, so a prefix of them may remain); none may
    /// cross the L1 segment's end.
    async fn walk_covered_l0(&mut self, state: &mut GenState, kept: TxId, l0_min_txid: TxId) -> Result<()> {
        let groups: Vec<(TxId, Seg)> = state.l1.range(kept..l0_min_txid).map(|(t, s)| (*t, s.clone())).collect();
        for (min_txid, l1) in groups {
            let mut txid = min_txid;
            while txid <= l1.max_txid {
                let key = l0_key(state.generation, txid);
                let Fetched::Found(info) = self.inspect(state, &key, Level::L0, txid).await? else {
                    break;
                };
                if info.header.max_txid < txid {
                    break;
                }
                if info.header.max_txid > l1.max_txid {
                    self.problem(
                        Kind::Discontinuous,
                        &key,
                        format!(
                            "holds {}, past the end of {} at TXID {}: L0 and L1 boundaries must agree",
                            info.header.range(),
                            l1.key,
                            l1.max_txid
                        ),
                    );
                    break;
                }
                self.record(state, Level::L0, txid, &key, &info);
                txid = info.header.max_txid.next();
            }
        }
        Ok(())
    }

    /// Reads object `key` (named by `txid` at `level`) once, checks it on its
    /// own and against the generation, and, with `--deep`, decodes and
    /// replays it.
    async fn inspect(&mut self, state: &mut GenState, key: &str, level: Level, txid: TxId) -> Result<Fetched> {
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
    async fn fetch(&mut self, key: &str) -> Result<(Fetched, Option<File>)> {
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
    fn check_object(&mut self, state: &mut GenState, key: &str, level: Level, txid: TxId, info: &Info) -> bool {
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
    fn claim(&mut self, state: &mut GenState, txid: TxId, checksum: Checksum, key: &str, what: &str) {
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

    /// `--deep`: decodes every frame of the spooled object; replays it if it
    /// continues the replay (or starts it: the generation's oldest
    /// snapshot). An object that failed its other checks stops the replay.
    async fn deep_check(
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

    /// Reads the snapshot index of `generation`.
    async fn read_index(&mut self, generation: GenerationId) -> Result<Doc<SnapshotIndex>> {
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

    async fn read_doc<T: Document>(
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

    fn problem(&mut self, kind: Kind, key: &str, message: impl Into<String>) {
        let problem = Problem { key: key.to_string(), kind, message: message.into() };
        if !self.json {
            println!("{}: {}: {}", kind.as_str(), problem.key, problem.message);
        }
        self.problems.push(problem);
    }
}

/// `--deep`'s work on one object, off the async threads.
struct DeepJob {
    file: File,
    key: String,
    header: Header,
    snapshot: bool,
    codec_key: Option<EncryptionKey>,
    replay: Option<Replay>,
    start_replay: bool,
}

impl DeepJob {
    /// Returns the replay (moved on, kept, started or stopped) and the outcome.
    fn run(self) -> (Option<Replay>, Result<(), ApplyError>) {
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
fn decode_frames(
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

/// An error's message without the "verb KEY" it starts with (the problem
/// line names the key already).
fn cause(error: &dyn std::fmt::Display, key: &str) -> String {
    let text = error.to_string();
    if let Some(at) = text.find(key)
        && let Some((_, cause)) = text[at + key.len()..].split_once(": ")
    {
        return cause.to_string();
    }
    text
}

/// A snapshot record, for messages.
fn show(snapshot: &SnapshotRef) -> String {
    format!(
        "{{size {}, pages {}, checksum {}, timestamp {} ms}}",
        snapshot.size, snapshot.commit, snapshot.checksum, snapshot.timestamp_ms
    )
}
