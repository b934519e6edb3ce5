// Drives an EdgeReplica from Node for tests/tests/wasm.rs.
//   node node.mjs <package dir> <store URL> <sql> [<params as a JSON array>]
// Opens the replica (which syncs), prints one JSON line, then for every
// "sync" line on stdin syncs and prints another: {txid, rows} or
// {error, txid, rows} (a failed sync keeps the last good state, which the
// query then shows).
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const [pkg, storeUrl, sql, params = '[]'] = process.argv.slice(2);
const values = JSON.parse(params);
const { EdgeReplica } = await import(pathToFileURL(resolve(pkg, 'index.js')).href);

function report(replica, error) {
  const line = { txid: replica?.txid ?? null };
  if (error) line.error = error.message;
  if (replica) {
    // A query error (no such table, no such module: fts5) is reported like
    // a sync error rather than ending the script without a line.
    try {
      line.rows = replica.query(sql, values).rows;
    } catch (e) {
      line.error = line.error ? `${line.error}; ${e.message}` : e.message;
    }
    line.checksum = replica.checksum;
  }
  process.stdout.write(JSON.stringify(line, (_, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
}

let replica = null;
try {
  replica = await EdgeReplica.open(storeUrl, {});
  report(replica);
} catch (e) {
  report(null, e);
  process.exit(0);
}
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() !== 'sync') break;
  try {
    await replica.sync();
    report(replica);
  } catch (e) {
    report(replica, e);
  }
}
