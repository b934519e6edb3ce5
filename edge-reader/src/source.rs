//! The store a command reads (`--source`): opened here so that every command
//! refuses an `s3://` URL the same way in the small device build; and the
//! arguments `sync` and `serve` share (the store, the replica, the key).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use distributary_core::format::EncryptionKey;
use distributary_core::store::Store;

/// The arguments of the commands that keep a replica (`sync`, `serve`).
#[derive(clap::Args)]
pub struct ReplicaArgs {
    /// The store: s3://bucket/prefix, file:///path or https://cdn/prefix.
    #[arg(long, env = "EDGE_READER_SOURCE")]
    pub source: String,
    /// The replica's SQLite file (created by the first sync if missing).
    #[arg(long, env = "EDGE_READER_DB")]
    pub db: PathBuf,
    /// Key file for an encrypted store (32 raw bytes, 64 hex digits or base64).
    #[arg(long, env = "EDGE_READER_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// Objects downloaded at once during a sync.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Replace --db even if it is not this store's replica (an ordinary
    /// SQLite file, or another store's replica): its content is lost.
    #[arg(long)]
    pub force: bool,
}

impl ReplicaArgs {
    /// The store's encryption key, if a key file is given.
    pub fn key(&self) -> Result<Option<EncryptionKey>> {
        let Some(path) = &self.encryption_key_file else { return Ok(None) };
        Ok(Some(EncryptionKey::from_file(path)?))
    }
}

/// What the small build (without the `s3` feature) says to an `s3://` URL:
/// the reason, and the two ways out.
#[cfg(not(feature = "s3"))]
pub const NO_S3: &str = "this edge-reader was built without S3 support (the small device build): \
     read the store over https:// (a CDN, the bucket's website or public endpoint, or presigned URLs) \
     or use the full build (cargo build -p edge-reader, default features)";

/// Opens the store `url` names (`file://`, `http(s)://`, and `s3://` in the
/// full build).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    // Core's own refusal ("this build has no s3:// support") cannot name
    // the edge reader's builds; checking the scheme first keeps the message
    // the one place the fix is spelled out.
    #[cfg(not(feature = "s3"))]
    if url.starts_with("s3://") {
        anyhow::bail!("open store {url}: {NO_S3}");
    }
    #[cfg(not(feature = "abs"))]
    if url.starts_with("abs://") {
        anyhow::bail!(
            "open store {url}: this edge-reader was built without Azure Blob Storage support (the small \
             device build): read the container over https:// (a CDN, public access or SAS URLs) or use \
             the full build (cargo build -p edge-reader, default features)"
        );
    }
    Ok(distributary_core::store::open(url).await?)
}

#[cfg(all(test, not(feature = "s3")))]
mod tests {
    #[tokio::test]
    async fn the_small_build_refuses_s3_and_names_the_fix() {
        let err = super::open("s3://bucket/app?region=us-east-1").await.unwrap_err().to_string();
        assert!(err.contains("built without S3 support"), "{err}");
        assert!(err.contains("https://"), "{err}");
        assert!(err.contains("full build"), "{err}");
    }
}
