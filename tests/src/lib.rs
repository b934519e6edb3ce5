//! Test harness for Distributary's end-to-end tests and benchmarks: real
//! servers started on free loopback ports and stopped on drop.
//!
//! | module | what |
//! |---|---|
//! | [`moto`] | a moto S3 server, with a fresh bucket per test |
//! | [`bins`] | the workspace's binaries, built on demand, for process tests |
//! | [`chain`] | walking and verifying a store's chain; a database's checksum |
//! | [`process`] | the programs as child processes: logs, SIGTERM / SIGKILL, memory and descriptors |
//! | [`proxy`] | a byte-counting TCP proxy (proves "zero requests") |
//! | [`faults`] | a fault-injecting HTTP proxy in front of moto: 5xx, throttling, latency, resets, truncated bodies, hangs |
//! | [`static_files`] | a static HTTP file server with ranges and CORS (stores read over HTTP) |
//! | [`history`] | a test-only producer: a real SQLite primary diffed into L0 segments, snapshots, compacted shapes |
//! | [`counting`] | a `Store` wrapper counting requests by kind |
//! | [`synthetic`] | synthetic L0 chains, restores by decoder, a crashing store (compactor tests) |

pub mod bins;
pub mod chain;
pub mod counting;
pub mod faults;
pub mod history;
pub mod moto;
pub mod process;
pub mod proxy;
pub mod static_files;
pub mod synthetic;
