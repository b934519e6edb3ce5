// @distributary/edge-wasm: a live read-only replica of a Distributary store,
// in wasm memory, queried with SQLite compiled to wasm.
//
// The wasm module loads itself on first use in browsers (fetched beside this
// file) and Node (read from disk). Workers cannot compile wasm at run time:
// import the .wasm as a module and pass it to initialize() first.
import init, { initSync, EdgeReplica } from './distributary_edge_wasm.js';
import { DEFAULT_OPFS_BYTES, opfsAvailable, opfsFetch, opfsIdle } from './opfs.js';

let loading = null;

/** Instantiates the wasm module from a compiled WebAssembly.Module or its bytes (Workers). */
export function initialize(module) {
  initSync({ module });
  loading = Promise.resolve();
}

/** Loads the wasm module beside this file, once. */
export function ready() {
  if (!loading) {
    const url = new URL('./distributary_edge_wasm_bg.wasm', import.meta.url);
    if (url.protocol === 'file:') {
      // Node: its fetch() cannot read file: URLs.
      loading = import('node:fs/promises')
        .then((fs) => fs.readFile(url))
        .then((bytes) => init({ module_or_path: bytes }));
    } else {
      loading = init({ module_or_path: url });
    }
    loading.catch(() => {
      loading = null;
    });
  }
  return loading;
}

// EdgeReplica.open is the entry point: make it load the module first, and
// put the OPFS cache under the replica's requests where the browser has it.
const open = EdgeReplica.open;
EdgeReplica.open = async function (url, options) {
  await ready();
  return open.call(EdgeReplica, url, withOpfs(url, options));
};

/** `options` with the OPFS cache as its fetch, unless `opfs: false` or no OPFS. */
function withOpfs(url, options) {
  const { opfs, opfsBytes } = options ?? {};
  if (opfs !== undefined && typeof opfs !== 'boolean') {
    throw new Error(`open ${url}: options.opfs must be true or false`);
  }
  if (opfsBytes !== undefined && !(Number.isSafeInteger(opfsBytes) && opfsBytes >= 1 << 20)) {
    throw new Error(`open ${url}: options.opfsBytes must be a whole number of bytes, at least 1048576 (1 MiB)`);
  }
  if (opfs === false || !opfsAvailable()) return options;
  const base = options?.fetch ?? ((request) => globalThis.fetch(request));
  return { ...options, fetch: opfsFetch(url, base, opfsBytes ?? DEFAULT_OPFS_BYTES) };
}

export { EdgeReplica, opfsIdle };
