// Drives an EdgeReplica from Node for tests/tests/wasm.rs.
//   node node.mjs <package dir> <store URL> <sql> [<params as a JSON array>] [<options JSON>]
// Opens the replica (which syncs), prints one JSON line, then for every
// line on stdin prints another:
//   sync          syncs: {txid, rows} or {error, txid, rows} (a failed sync
//                 keeps the last good state, which the query then shows)
//   export PATH   writes the database (exportAsync) to PATH: {written}
//   race SQL      runs SQL while a sync publishes the next version,
//                 holding the query's snapshot reads until the sync is done:
//                 {rows (SQL's), syncedFirst, txid (after the sync)}
import { createInterface } from 'node:readline';
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const [pkg, storeUrl, sql, params = '[]', optionsJson = '{}'] = process.argv.slice(2);
const values = JSON.parse(params);
const options = JSON.parse(optionsJson);
const { EdgeReplica } = await import(pathToFileURL(resolve(pkg, 'index.js')).href);

// The replica calls the global fetch: "race" holds reads of snapshot pages
// (ranged GETs of a snapshot past its head) behind a gate.
const realFetch = globalThis.fetch;
let gate = null;
globalThis.fetch = async (request, init) => {
  const range = request.headers?.get?.('range') ?? '';
  if (gate && request.url.includes('/snapshots/') && !range.startsWith('bytes=0-')) await gate.promise;
  return realFetch(request, init);
};

const json = (value) => JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
const print = (line) => process.stdout.write(json(line) + '\n');

async function report(replica, error) {
  const line = { txid: replica?.txid ?? null };
  if (error) line.error = error.message;
  if (replica) {
    // A query error (no such table, no such module: fts5) is reported like
    // a sync error rather than ending the script without a line.
    try {
      line.rows = (await replica.queryAsync(sql, values)).rows;
    } catch (e) {
      line.error = line.error ? `${line.error}; ${e.message}` : e.message;
    }
    line.checksum = replica.checksum;
    line.lazy = replica.lazy;
  }
  print(line);
}

let replica = null;
try {
  replica = await EdgeReplica.open(storeUrl, options);
  await report(replica);
} catch (e) {
  await report(null, e);
  process.exit(0);
}
for await (const line of createInterface({ input: process.stdin })) {
  const command = line.trim().split(' ')[0];
  const argument = line.trim().slice(command.length + 1);
  if (command === 'sync') {
    try {
      await replica.sync();
      await report(replica);
    } catch (e) {
      await report(replica, e);
    }
  } else if (command === 'export') {
    const bytes = await replica.exportAsync();
    writeFileSync(argument, bytes);
    print({ written: bytes.length });
  } else if (command === 'race') {
    let release;
    gate = { promise: new Promise((r) => (release = r)) };
    const order = [];
    const query = replica.queryAsync(argument, []).then((result) => { order.push('query'); return result; });
    await replica.sync();
    order.push('sync');
    gate = null;
    release();
    const result = await query;
    print({ rows: result.rows, syncedFirst: order[0] === 'sync', txid: replica.txid });
  } else {
    break;
  }
}
