//! Distributary's core library: everything the replicator, the compactor and
//! the edge readers share. It builds for `wasm32-unknown-unknown` (with the
//! `http` store only); the format and merge code use no async runtime.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`ids`] | `TxId`, `PageNo`, `Checksum`, `GenerationId` newtypes |
//! | [`checksum`] | the rolling database checksum (XOR of per-page hashes) |
//! | [`format`] | the segment format: header, frames, index, trailer; streaming encoder and decoder |
//! | [`merge`] | k-way merge of contiguous segments (compaction), frames copied as bytes |
//! | [`compact`] | the compactor: L0 windows into L1, snapshots, manifest updates, retention |
//! | [`layout`] | object keys of the bucket layout |
//! | [`manifest`] | the manifest and snapshot index, updated by compare-and-swap |
//! | [`plan`] | planning a read without LIST: the chain of objects that reaches a target |
//! | [`apply`] | restore and sync: fetch, verify and apply segments to a SQLite file (`sqlite` feature) or to an image in memory (the wasm reader) |
//! | [`lazy`] | a lazy replica: pages read on demand by range requests, for databases too large to download (the wasm reader) |
//! | [`retry`] | which failures are worth retrying; the bounded retry of one-shot commands |
//! | [`atomic_file`] | replacing a file atomically and durably (temp file, fsync, rename, fsync of the folder) |
//! | [`replica`] | a replica's sidecar state (generation, TXID, checksum) and sync lock |
//! | [`store`] | the `Store` trait and its backends (file, S3, HTTP, memory) |
//! | [`poll`] | what a reader following a store decides at each poll |
//! | [`clock`] | wall-clock time and sleeping |
//! | [`http_server`] | the HTTP/1 server of the programs' endpoints, and `/metrics` in Prometheus' text format (`http-server` feature) |
//! | [`errors`] | an error and its causes in one line |
//! | [`duration`] | the one duration grammar of flags, variables and configuration keys |
//! | [`rfc3339`] | RFC 3339 times in commands' output and `restore --timestamp` |
//!
//! The byte-level specification is `docs/FORMAT.md`; the code mirrors it.
#![deny(missing_docs)]

pub mod apply;
#[cfg(not(target_arch = "wasm32"))]
pub mod atomic_file;
pub mod checksum;
pub mod clock;
#[cfg(not(target_arch = "wasm32"))]
pub mod compact;
pub mod duration;
pub mod errors;
pub mod format;
#[cfg(all(feature = "http-server", not(target_arch = "wasm32")))]
pub mod http_server;
pub mod ids;
pub mod layout;
pub mod lazy;
pub mod manifest;
pub mod merge;
pub mod order;
pub mod plan;
pub mod poll;
#[cfg(not(target_arch = "wasm32"))]
pub mod replica;
pub mod retry;
#[cfg(not(target_arch = "wasm32"))]
pub mod rfc3339;
pub mod store;

pub use ids::{Checksum, GenerationId, PageNo, TxId};
