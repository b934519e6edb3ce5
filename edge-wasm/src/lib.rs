//! Distributary's edge reader in WebAssembly: a live, read-only replica of a
//! Distributary store, held in wasm memory or read page by page, for web
//! pages, Cloudflare Workers and Node services, queried locally with SQLite
//! compiled to wasm.
//!
//! Nothing here re-implements the log: the format, the plan, the chain walk
//! and the verification are `distributary-core`'s (`lazy::LazyReplica`, in
//! both modes), so every object is checked as the native `edge-reader sync`
//! checks it and a bad object is refused with the same message.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | `replica` | `EdgeReplica`, the JavaScript API: `open`, `sync`, `query`, `queryAsync`, `txid`, `export` |
//! | `lazy` | SQLite reading a version's pages through a VFS; a query run again once the page it missed is fetched |
//! | `fetch` | core's read-only `HttpStore` over the host's `fetch` (browsers, Node, workerd) |
//! | `sqlite` | a query-only connection and its rows as JavaScript values |
//!
//! On native targets the crate is empty: it exists for `wasm32-unknown-unknown`
//! (built by `scripts/build-wasm.sh` into an npm package).
#![deny(missing_docs)]

#[cfg(all(target_arch = "wasm32", feature = "conformance"))]
mod conformance;
#[cfg(target_arch = "wasm32")]
mod fetch;
#[cfg(target_arch = "wasm32")]
mod lazy;
#[cfg(target_arch = "wasm32")]
mod replica;
#[cfg(target_arch = "wasm32")]
mod sqlite;

#[cfg(target_arch = "wasm32")]
pub use replica::EdgeReplica;
