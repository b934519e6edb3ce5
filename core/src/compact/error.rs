//! Why a compaction failed.

use std::path::PathBuf;

use crate::format::FormatError;
use crate::manifest::ManifestError;
use crate::merge::MergeError;
use crate::store::StoreError;

/// Why a compaction failed. Each names the object or TXID range involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// The store failed (the message names the operation and key).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or updating the manifest or snapshot index failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A segment is corrupt or not one this version reads.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Merging inputs into `key` failed.
    #[error("merge {key}: {source}")]
    Merge {
        /// The object being built.
        key: String,
        /// Why.
        #[source]
        source: MergeError,
    },
    /// A local temp file could not be used.
    #[error("{op} temp file {}: {source}", path.display())]
    Io {
        /// "create", "open", "write".
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The objects do not form the chain their names promise.
    #[error("compact {key}: {reason}")]
    Inconsistent {
        /// The object that does not fit.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The chain kept changing under the run (segments it needed were
    /// deleted by newer runs) after several fresh starts.
    #[error("compact {key}: the chain kept changing under this run ({attempts} attempts); try again")]
    Raced {
        /// The object that disappeared last.
        key: String,
        /// Fresh starts tried.
        attempts: u32,
    },
    /// A blocking merge task failed to run to completion.
    #[error("merge {key}: the merge task stopped: {reason}")]
    Task {
        /// The object being built.
        key: String,
        /// The join error.
        reason: String,
    },
}
