//! Test harness for Distributary's end-to-end tests and benchmarks: real
//! servers started on free loopback ports and stopped on drop.
//!
//! | module | what |
//! |---|---|
//! | [`moto`] | a moto S3 server, with a fresh bucket per test |
//! | [`azurite`] | Azurite's blob service (Azure Storage emulator), with a fresh container per test |
//! | [`test_store`] | a folder store; either kind (folder or moto) for one test body run on both |
//! | [`wal_primary`] | a WAL-mode SQLite primary shipped to a folder store by the real `replicate --once` and `compact` |
//! | [`sshd`] | OpenSSH's sshd with throwaway keys, for the SFTP store |
//! | [`nginx`] | nginx in the foreground around a `docs/DEPLOY.md` block (for [`cdn`] and [`web_servers`]) |
//! | [`cdn`] | nginx as a CDN (the `docs/DEPLOY.md` CDN block) in front of an origin, its access log |
//! | [`cdn_run`] | issue #18's scenario: primary, moto, CDN and a reader fleet, measured (test and bench) |
//! | [`fleet`] | many simulated edge readers in one process: serve's follower protocol over in-memory replicas |
//! | [`bins`] | the workspace's binaries, built on demand, for process tests |
//! | [`chain`] | walking and verifying a store's chain; a database's checksum |
//! | [`lambda`] | S3 event JSON and the real Lambda runtime API (`cargo lambda watch`) for the compactor |
//! | [`programs`] | the CLIs run from tests: one-shot commands with their output, `replicate` in the background or once, requests to `edge-reader serve` |
//! | [`e2e`] | the pipeline as processes: the app, sync loops, serve, snapshot restore checks |
//! | [`process`] | the programs as child processes: logs, waiting for a port, SIGTERM / SIGKILL, memory and descriptors |
//! | [`proxy`] | a byte-counting TCP proxy (proves "zero requests") |
//! | [`faults`] | a fault-injecting HTTP proxy in front of moto: 5xx, throttling, latency, resets, truncated bodies, hangs |
//! | [`static_files`] | a static HTTP file server with ranges and CORS (stores read over HTTP) |
//! | [`history`] | a test-only producer: a real SQLite primary diffed into L0 segments, snapshots, compacted shapes |
//! | [`counting`] | a `Store` wrapper counting requests by kind |
//! | [`web_servers`] | Python's `http.server` and nginx (the `docs/DEPLOY.md` block) publishing a store folder, counting requests |
//! | [`synthetic`] | synthetic L0 chains, restores by decoder, a crashing store (compactor tests) |

pub mod accounts;
pub mod azurite;
pub mod bins;
pub mod cdn;
pub mod cdn_run;
pub mod chain;
pub mod counting;
pub mod e2e;
pub mod faults;
pub mod fleet;
pub mod history;
pub mod lambda;
pub mod moto;
pub mod nginx;
pub mod process;
pub mod programs;
pub mod proxy;
pub mod sshd;
pub mod static_files;
pub mod synthetic;
pub mod test_store;
pub mod wal_primary;
pub mod web_servers;

/// Runs test body `$name(kind)` once per store kind, as `$name::file` and
/// `$name::moto`: the calling module defines `enum Kind { File, Moto }` and
/// `async fn $name(kind: Kind)`.
#[macro_export]
macro_rules! on_every_store {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn file() {
                super::$name(super::Kind::File).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn moto() {
                super::$name(super::Kind::Moto).await;
            }
        }
    };
}
