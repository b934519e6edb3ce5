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

mod chains;
mod deep;
mod generations;
mod objects;
mod problem;
mod state;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use distributary_core::GenerationId;
use distributary_core::format::EncryptionKey;
use distributary_core::retry::{RetryBound, classify, retry_bounded};
use distributary_core::store::Store;

use self::problem::Problem;
use self::state::{Fetched, Replay};

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

/// One walk over a store: what it read, what it found wrong, and (with
/// `--deep`) the chain replayed so far. Its methods live beside the part of
/// the walk they do: [`generations`] (the manifest's generation and the
/// others), [`chains`] (the L1, L0 and snapshot chains), [`objects`] (one
/// object or document read and checked), [`deep`] (frames decoded and
/// replayed), [`problem`] (what is reported).
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
