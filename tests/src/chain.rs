//! Checks on what a store holds: walk a generation's chain by name from its
//! first snapshot through every L0 segment, verifying each object fully, and
//! compute a database's rolling checksum through SQLite.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use distributary_core::format::{Compression, EncryptionKey, PageCodec, SegmentReader};
use distributary_core::layout::{l0_key, snapshot_key};
use distributary_core::manifest::read_manifest;
use distributary_core::store::Store;
use distributary_core::{Checksum, GenerationId, PageNo, TxId};

/// What a walk of the chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The generation walked.
    pub generation: GenerationId,
    /// `(min_txid, max_txid)` of each segment after the snapshot, in order.
    pub segments: Vec<(TxId, TxId)>,
    /// The newest TXID.
    pub last_txid: TxId,
    /// The database checksum at `last_txid`.
    pub checksum: Checksum,
}

/// Walks the current generation: `snapshots/1`, then `l0/{t+1}` until not
/// found, verifying every object (file checksum, every page decodes with
/// `key`), TXID contiguity and the checksum chain.
pub async fn walk(store: &dyn Store, key: Option<&EncryptionKey>) -> Result<Chain> {
    let manifest = read_manifest(store).await?.context("the store has no manifest")?.value;
    let generation = manifest.generation;
    let (_, checksum) = verify_object(store, &snapshot_key(generation, TxId(1)), key).await?;
    let mut chain = Chain { generation, segments: Vec::new(), last_txid: TxId(1), checksum };
    loop {
        let object = l0_key(generation, chain.last_txid.next());
        let header = match store.head(&object).await {
            Ok(_) => verify_object(store, &object, key).await?,
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(e.into()),
        };
        let (header, post) = header;
        ensure!(header.min_txid == chain.last_txid.next(), "{object}: starts at {}", header.min_txid);
        if !header.flags.snapshot() {
            ensure!(
                header.pre_apply_checksum == chain.checksum,
                "{object}: pre-apply checksum {} does not follow {}",
                header.pre_apply_checksum,
                chain.checksum
            );
        }
        chain.segments.push((header.min_txid, header.max_txid));
        chain.last_txid = header.max_txid;
        chain.checksum = post;
    }
    Ok(chain)
}

/// Applies the current generation's chain to a database file at `path`,
/// segment by segment from its first snapshot, and calls `check` with the
/// file after each (every state a replica can be in, as `edge-reader`
/// applies it: each page written in place, the file cut to the segment's
/// size). Returns how many states were checked.
pub async fn replay_each(
    store: &dyn Store,
    path: &Path,
    mut check: impl FnMut(&Path, TxId) -> Result<()>,
) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let manifest = read_manifest(store).await?.context("the store has no manifest")?.value;
    let generation = manifest.generation;
    let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)?;
    let mut object = snapshot_key(generation, TxId(1));
    let mut checked = 0;
    loop {
        let (bytes, _) = match store.get_bytes(&object).await {
            Ok(got) => got,
            Err(e) if e.is_not_found() && checked > 0 => break,
            Err(e) => return Err(e).with_context(|| format!("get {object}")),
        };
        let mut reader = SegmentReader::open(object.as_str(), &bytes[..])?;
        let header = reader.header().clone();
        let mut codec = PageCodec::new(header.generation, None, Compression::default())?;
        let mut page = vec![0u8; header.page_size as usize];
        while let Some(pgno) = reader.next_page(&mut codec, &mut page)? {
            file.write_all_at(&page, u64::from(pgno.0 - 1) * u64::from(header.page_size))?;
        }
        file.set_len(u64::from(header.commit) * u64::from(header.page_size))?;
        check(path, header.max_txid).with_context(|| format!("the state at TXID {}", header.max_txid))?;
        checked += 1;
        object = l0_key(generation, header.max_txid.next());
    }
    Ok(checked)
}

async fn verify_object(
    store: &dyn Store,
    object: &str,
    key: Option<&EncryptionKey>,
) -> Result<(distributary_core::format::Header, Checksum)> {
    let (bytes, _) = store.get_bytes(object).await.with_context(|| format!("get {object}"))?;
    let mut reader = SegmentReader::open(object, &bytes[..])?;
    let header = reader.header().clone();
    let mut codec = PageCodec::new(header.generation, key, Compression::default())?;
    let mut page = vec![0u8; header.page_size as usize];
    while reader.next_page(&mut codec, &mut page)?.is_some() {}
    let trailer = *reader.trailer().context("trailer")?;
    Ok((header, trailer.post_apply_checksum))
}

/// The rolling checksum of a database as SQLite sees it now (WAL included),
/// read through `sqlite_dbpage`.
pub fn database_checksum(path: &Path) -> Result<Checksum> {
    let connection = rusqlite::Connection::open(path)?;
    let mut statement = connection.prepare("SELECT pgno, data FROM sqlite_dbpage ORDER BY pgno")?;
    let mut rows = statement.query([])?;
    let mut checksum = Checksum::EMPTY;
    let mut expected = 1;
    while let Some(row) = rows.next()? {
        let pgno: u32 = row.get(0)?;
        if pgno != expected {
            bail!("sqlite_dbpage skipped from {expected} to {pgno}");
        }
        expected += 1;
        checksum = checksum.toggle_page(PageNo(pgno), row.get_ref(1)?.as_blob()?);
    }
    Ok(checksum)
}
