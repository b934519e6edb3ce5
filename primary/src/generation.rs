//! What a store already holds, for a store this replicator has no local
//! progress for: nothing (start a generation), or a generation of this
//! database whose chain the replicator continues after a full catch-up
//! (its metadata folder was deleted, or the database was restored).

use anyhow::{Context, Result};
use distributary_core::format::KeyCheck;
use distributary_core::manifest::read_manifest;
use distributary_core::plan::probe_newest_sealed;
use distributary_core::store::Store;
use distributary_core::{Checksum, GenerationId, TxId, clock};

/// How the replicator starts on a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPlan {
    /// An empty prefix, or one whose generation cannot be continued: start a
    /// new generation with a snapshot at TXID 1.
    NewGeneration(GenerationId),
    /// Continue `generation` after `last_txid` (whose post-apply checksum is
    /// `checksum`) with a full catch-up segment.
    Continue {
        /// The generation to continue.
        generation: GenerationId,
        /// The newest TXID in the store.
        last_txid: TxId,
        /// The database checksum at `last_txid`.
        checksum: Checksum,
    },
}

/// Reads the manifest and walks the L0 chain by name past its newest TXID.
pub async fn plan_start(store: &dyn Store, page_size: u32, key_check: KeyCheck) -> Result<StartPlan> {
    let new_generation = || -> Result<StartPlan> { Ok(StartPlan::NewGeneration(GenerationId::new(clock::now_ms())?)) };
    let Some(manifest) = read_manifest(store).await.context("read the store's manifest")? else {
        return new_generation();
    };
    let manifest = manifest.value;
    if manifest.page_size != page_size {
        tracing::warn!(
            store = store.url(),
            old = manifest.page_size,
            new = page_size,
            "the database's page size changed: starting a new generation"
        );
        return new_generation();
    }
    if manifest.key_check.unwrap_or(KeyCheck::NONE) != key_check {
        tracing::warn!(store = store.url(), "the encryption key changed: starting a new generation");
        return new_generation();
    }
    let (newest, tail_key_check) = probe_newest_sealed(store, &manifest).await.context("walk the L0 chain")?;
    if tail_key_check.is_some_and(|tail| tail != key_check) {
        // The manifest lags the chain: its tail was sealed otherwise.
        tracing::warn!(store = store.url(), "the encryption key changed: starting a new generation");
        return new_generation();
    }
    let (last_txid, checksum) = (newest.txid, newest.checksum);
    Ok(StartPlan::Continue { generation: manifest.generation, last_txid, checksum })
}
