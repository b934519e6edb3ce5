// One cold wasm reader for bench/lazy.py, in Node:
//   node reader.mjs <package dir> <store URL> <lazy|full> [cacheBytes]
// Loads the module, then for each line on stdin runs one step and prints a
// JSON line with its wall time and what it cost the reader:
//   open                     EdgeReplica.open (the first sync)
//   query SQL [JSON params]  queryAsync (rows, time)
//   sync                     replica.sync()
// Each line also carries the wasm memory's size (it only grows: its peak)
// and the lazy reader's own request and byte counts.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const [pkg, storeUrl, mode, cacheBytes] = process.argv.slice(2);
const glue = await import(pathToFileURL(resolve(pkg, 'distributary_edge_wasm.js')).href);
let started = performance.now();
const wasm = glue.initSync({ module: readFileSync(resolve(pkg, 'distributary_edge_wasm_bg.wasm')) });
const loadMs = performance.now() - started;
const { EdgeReplica } = glue;

const print = (line) =>
  process.stdout.write(
    JSON.stringify(
      { ...line, wasmBytes: wasm.memory.buffer.byteLength, rss: process.memoryUsage().rss, stats: replica?.stats ?? null },
      (_, v) => (typeof v === 'bigint' ? v.toString() : v),
    ) + '\n',
  );

let replica = null;
print({ step: 'load', ms: loadMs });
for await (const line of createInterface({ input: process.stdin })) {
  const [step, ...rest] = line.split('\t');
  try {
    started = performance.now();
    if (step === 'open') {
      const options = { lazy: mode === 'lazy' };
      if (cacheBytes) options.cacheBytes = Number(cacheBytes);
      if (mode === 'full') options.maxBytes = 1.75 * 2 ** 30;
      replica = await EdgeReplica.open(storeUrl, options);
      print({ step, ms: performance.now() - started, txid: replica.txid, size: replica.size });
    } else if (step === 'query') {
      const result = await replica.queryAsync(rest[0], JSON.parse(rest[1] ?? '[]'));
      print({ step, ms: performance.now() - started, rows: result.rows.length, first: result.rows[0] ?? null });
    } else if (step === 'sync') {
      await replica.sync();
      print({ step, ms: performance.now() - started, txid: replica.txid });
    } else {
      break;
    }
  } catch (e) {
    print({ step, error: e.message });
  }
}
