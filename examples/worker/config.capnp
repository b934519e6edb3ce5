# workerd configuration for the example Worker (Cloudflare's runtime, run
# locally: npx workerd serve config.capnp). On Cloudflare, deploy worker.js
# with wrangler instead; STORE_URL becomes a var.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .replicaWorker),
    # Fetches to the store. workerd's default outbound refuses private and
    # loopback addresses; a local test store lives on loopback.
    (name = "outbound", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "main")],
);

const replicaWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "pkg/index.js", esModule = embed "pkg/index.js"),
    (name = "pkg/opfs.js", esModule = embed "pkg/opfs.js"),
    (name = "pkg/distributary_edge_wasm.js", esModule = embed "pkg/distributary_edge_wasm.js"),
    (name = "pkg/distributary_edge_wasm_bg.wasm", wasm = embed "pkg/distributary_edge_wasm_bg.wasm"),
  ],
  compatibilityDate = "2025-01-01",
  bindings = [
    # The store's URL, from the environment: STORE_URL=https://cdn.example.com/app-db
    (name = "STORE_URL", fromEnvironment = "STORE_URL"),
    (name = "ENCRYPTION_KEY", fromEnvironment = "ENCRYPTION_KEY"),
  ],
  globalOutbound = "outbound",
);
