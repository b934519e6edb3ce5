// Runs core's read-only store conformance suite in wasm, against the store
// the reader uses (core's HttpStore over this host's fetch), for
// tests/tests/wasm.rs:
//   node conformance.mjs <test package dir> <store URL> <served folder>
// The package is the test-only build (scripts/build-wasm.sh with
// EDGE_WASM_FEATURES=conformance). The suite writes through the folder
// between its reads. Prints "passed" and exits 0 when every check passed;
// a failed check's message goes to stderr and the exit code is not 0.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [pkg, storeUrl, folder] = process.argv.slice(2);
const glue = await import(pathToFileURL(resolve(pkg, 'distributary_edge_wasm.js')).href);
glue.initSync({ module: readFileSync(resolve(pkg, 'distributary_edge_wasm_bg.wasm')) });

const served = {
  read(key) {
    try {
      return readFileSync(join(folder, key));
    } catch (e) {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    }
  },
  // Written aside and renamed, as a store writes: the server never sends
  // half an object.
  write(key, bytes) {
    const path = join(folder, key);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(`${path}.partial`, bytes);
    renameSync(`${path}.partial`, path);
  },
  remove(key) {
    rmSync(join(folder, key), { force: true });
  },
};

try {
  await glue.runReadOnlyConformance(storeUrl, served);
  console.log('passed');
} catch (e) {
  console.error(`failed: ${e?.message ?? e}`);
  process.exit(1);
}
