//! `distributary`: the primary side of Distributary as a library — the
//! replicator ([`replicator::Replicator`]) and every command of the CLI
//! (`src/main.rs` only parses arguments and starts the runtime).
//!
//! | module | what |
//! |---|---|
//! | [`replicate`] | `distributary replicate`: arguments, `--exec` supervision, signals |
//! | [`replicator`] | one database's replication: capture, checkpoints, catch-up, uploads, metadata; the fleet that steps them all |
//! | [`folder`] | a folder of databases: scanned, each to its own prefix, added and removed while running |
//! | [`compact`] | `distributary compact`: L1 segments, snapshots, retention (without Lambda) |
//! | [`config`] | YAML configuration: ours, and Litestream 0.3 and 0.5 files as they are |
//! | [`wal`] | reading SQLite's WAL: frames, salts, checksums, commits |
//! | [`source`] | the replicator's connections: read lock, write lock, checkpoints |
//! | [`state`] | the metadata folder: capture position, page hashes, per-store TXIDs |
//! | [`capture`] | WAL transactions (or a page scan) into segments |
//! | [`queue`] | a store's captured segments not acknowledged yet; spilling |
//! | [`generation`] | what a store holds: start a generation or continue one |
//! | [`shipper`] | uploading segments, genesis snapshot and manifest |
//! | [`resume`] | whether a store's recorded progress can be resumed |
//! | [`metrics`] | Prometheus metrics and the `/status` endpoint |
//! | [`restore`] | `distributary restore`: a database file at a TXID, a time or a snapshot |
//! | [`snapshots`] | `distributary snapshots`: the snapshots that can be restored |
//! | [`generations`] | `distributary generations`: the lineages a store holds |
//! | [`verify`] | `distributary verify`: chains, checksums, manifest and snapshots checked; nothing changed |
//! | [`limits`] | process limits raised at start (open files) |

pub mod capture;
pub mod compact;
pub mod config;
pub mod folder;
pub mod generation;
pub mod generations;
pub mod limits;
pub mod metrics;
pub mod queue;
pub mod replicate;
pub mod replicator;
pub mod restore;
pub mod resume;
pub mod shipper;
pub mod signals;
pub mod snapshots;
pub mod source;
pub mod state;
pub mod verify;
pub mod wal;
