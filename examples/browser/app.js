// Opens a replica of the store named by ?store= (default ./store, beside
// this page), runs ?sql= (or the form's query), renders the rows, and syncs
// on the Sync button. ?lazy=1 reads the database page by page with range
// requests (any size opens at once), ?lazy=0 downloads it whole; without it
// the replica picks (lazy past a 16 MiB snapshot). ?opfs=0 turns off the
// OPFS cache of fetched ranges (on where the browser has OPFS). #result carries
// data-state="done" and a JSON copy of the last result in data-json, for
// scripts that drive the page.
import { EdgeReplica } from './pkg/index.js';

const params = new URLSearchParams(location.search);
const storeUrl = new URL(params.get('store') ?? './store', location.href).href;
const form = document.querySelector('#query');
if (params.has('sql')) form.sql.value = params.get('sql');
document.querySelector('#store').textContent = storeUrl;

const result = document.querySelector('#result');
const error = document.querySelector('#error');
let replica;
// The replica's requests that reached the network (OPFS hits never do):
// all of them, and those that brought bytes of an object (not a *.json
// document, nor a probe for a segment not written yet).
const network = { requests: 0, objects: 0 };
async function countingFetch(request) {
  network.requests += 1;
  const response = await fetch(request);
  if (response.ok && !new URL(request.url).pathname.endsWith('.json')) network.objects += 1;
  return response;
}

function render(columns, rows) {
  const table = document.createElement('table');
  const head = table.insertRow();
  for (const column of columns) head.appendChild(document.createElement('th')).textContent = column;
  for (const row of rows) {
    const tr = table.insertRow();
    for (const column of columns) tr.insertCell().textContent = String(row[column]);
  }
  result.replaceChildren(table);
}

async function run(action) {
  result.dataset.state = 'loading';
  error.textContent = '';
  try {
    await action();
    const { columns, rows } = await replica.queryAsync(form.sql.value);
    render(columns, rows);
    document.querySelector('#txid').textContent = replica.txid;
    document.querySelector('#mode').textContent = replica.lazy
      ? `lazy: ${replica.stats.requests} requests, ${replica.stats.bytes} bytes fetched`
      : `downloaded: ${replica.size} bytes`;
    result.dataset.json = JSON.stringify({ txid: replica.txid, columns, rows, lazy: replica.lazy, size: replica.size, stats: replica.stats, network });
    result.dataset.state = 'done';
  } catch (e) {
    error.textContent = e.message;
    result.dataset.json = JSON.stringify({ error: e.message, txid: replica?.txid ?? null });
    result.dataset.state = 'error';
  }
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  run(async () => {});
});
document.querySelector('#sync').addEventListener('click', () => run(() => replica.sync()));
run(async () => {
  const lazy = { 1: true, 0: false }[params.get('lazy')] ?? 'auto';
  replica = await EdgeReplica.open(storeUrl, { lazy, opfs: params.get('opfs') !== '0', fetch: countingFetch });
});
