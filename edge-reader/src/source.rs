//! The store a command reads (`--source`): opened here so that every command
//! refuses an `s3://` URL the same way in the small device build.

use std::sync::Arc;

use anyhow::Result;
use distributary_core::store::Store;

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
