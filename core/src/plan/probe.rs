//! Probing the L0 chain by name for the store's newest state, as readers
//! find it ([`probe_newest`]).

use super::PlanError;
use crate::format::{HEADER_SIZE, TRAILER_SIZE, Trailer, read_segment_header};
use crate::layout::l0_key;
use crate::manifest::{Manifest, Position};
use crate::store::{ByteRange, Store};

/// The store's newest state, found the way readers find it: from the
/// manifest's `newest`, probe `l0/{t+1}` by name (a 96-byte header range
/// read each) until one is not found, then read the last object's trailer
/// for its post-apply checksum. Returns the manifest's `newest` when no L0
/// object follows it. Costs one request per L0 object past the manifest,
/// plus one not found, plus one trailer read.
pub async fn probe_newest(store: &dyn Store, manifest: &Manifest) -> Result<Position, PlanError> {
    Ok(probe_newest_sealed(store, manifest).await?.0)
}

/// [`probe_newest`], with the key check of the newest L0 object's header
/// (`None` when no L0 object follows the manifest's `newest`): a writer
/// continuing the chain must seal with the same key.
pub async fn probe_newest_sealed(
    store: &dyn Store,
    manifest: &Manifest,
) -> Result<(Position, Option<crate::format::KeyCheck>), PlanError> {
    let generation = manifest.generation;
    let mut newest = manifest.newest;
    let mut last_key = None;
    let mut key_check = None;
    loop {
        let key = l0_key(generation, newest.txid.next());
        let head = match store.get_range(&key, ByteRange::Bounded { start: 0, end: HEADER_SIZE as u64 }).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(e.into()),
        };
        let header = read_segment_header(&key, &head)?;
        if header.min_txid != newest.txid.next() || header.generation != generation {
            return Err(PlanError::Misnamed {
                key,
                reason: format!("holds {} of generation {}", header.range(), header.generation),
            });
        }
        newest.txid = header.max_txid;
        newest.timestamp_ms = header.timestamp_ms;
        key_check = Some(header.key_check);
        last_key = Some(key);
    }
    if let Some(key) = last_key {
        let tail = store.get_range(&key, ByteRange::Suffix(TRAILER_SIZE as u64)).await?;
        let bytes: [u8; TRAILER_SIZE] = tail[..].try_into().map_err(|_| PlanError::Misnamed {
            key: key.clone(),
            reason: format!("its trailer is {} bytes, not {TRAILER_SIZE}", tail.len()),
        })?;
        newest.checksum = Trailer::decode(&bytes, &key)?.post_apply_checksum;
    }
    Ok((newest, key_check))
}
