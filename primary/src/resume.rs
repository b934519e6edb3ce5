//! Whether a store's progress in the metadata folder can be resumed as it
//! stands.
//!
//! The hot path fsyncs nothing (see `crate::state`): a killed process loses
//! no write the kernel already holds, so within one boot of the machine the
//! folder is exactly as the replicator left it. A machine restart can lose
//! any of those writes: the last commits of `state.db`, pending files (or
//! their contents), the record of an upload. Then the folder and the store
//! may disagree either way, and resuming blindly could upload a TXID twice
//! under other boundaries, which forks the chain. So a start in another
//! boot (or with a folder that does not say which) asks the store how far
//! its chain goes and checks that the pending files continue it whole; a
//! store that is ahead of the folder, or pending files that are missing or
//! torn, make that store continue from the store's newest TXID instead,
//! with a full catch-up.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};
use distributary_core::format::{HEADER_SIZE, SegmentReader, read_segment_header};
use distributary_core::manifest::read_manifest;
use distributary_core::plan::probe_newest;
use distributary_core::store::Store;
use distributary_core::{GenerationId, TxId};

/// The current boot of this machine (Linux); `None` where the system does
/// not say, which makes every start check its stores.
pub fn current_boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

/// The newest TXID of `generation` in the store: walks its L0 objects by
/// name from the newer of the manifest's newest and `known` (a TXID the
/// store held: every recorded one ends an uploaded object, so its successor
/// names the next). `None` when the store's manifest is of another
/// generation or absent (the genesis snapshot was never published).
pub async fn store_newest(store: &dyn Store, generation: GenerationId, known: TxId) -> Result<Option<TxId>> {
    let Some(manifest) = read_manifest(store).await.context("read the store's manifest")? else { return Ok(None) };
    let mut manifest = manifest.value;
    if manifest.generation != generation {
        return Ok(None);
    }
    if known > manifest.newest.txid {
        manifest.newest.txid = known;
    }
    Ok(Some(probe_newest(store, &manifest).await.context("walk the L0 chain")?.txid))
}

/// Checks that the pending files of `dir` continue a store at `after` up
/// to `through` with no gap: one file starting at each TXID after the
/// previous one's last. With `verify_contents`, every file is read whole
/// and its checksums checked (after a machine restart a file may be
/// present but torn). Files at or before `after` are shipped leftovers and
/// files past `through` orphans; both are ignored (and removed on start).
/// Returns what is wrong, if anything.
pub fn pending_gap(dir: &Path, after: TxId, through: TxId, verify_contents: bool) -> Result<Option<String>> {
    let mut next = after.next();
    while next <= through {
        let name =
            if next == TxId(1) { crate::capture::GENESIS_NAME.to_string() } else { crate::capture::pending_name(next) };
        let path = dir.join(&name);
        let label = path.display().to_string();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some(format!("no pending segment starts at TXID {next} ({label} is missing)")));
            }
            Err(e) => return Err(e).with_context(|| format!("open {label}")),
        };
        let header = if verify_contents {
            match SegmentReader::open(label.clone(), BufReader::new(file)).and_then(|reader| {
                let header = reader.header().clone();
                reader.finish().map(|_| header)
            }) {
                Ok(header) => header,
                Err(e) => return Ok(Some(format!("{label} is damaged: {e}"))),
            }
        } else {
            let mut bytes = [0u8; HEADER_SIZE];
            let read = (&file).read_exact(&mut bytes);
            match read.map_err(anyhow::Error::from).and_then(|()| Ok(read_segment_header(&label, &bytes)?)) {
                Ok(header) => header,
                Err(e) => return Ok(Some(format!("{label} is damaged: {e:#}"))),
            }
        };
        if header.min_txid != next || header.max_txid < next || header.max_txid > through {
            return Ok(Some(format!("{label} holds {} where TXIDs {next}..={through} were expected", header.range())));
        }
        next = header.max_txid.next();
    }
    Ok(None)
}
