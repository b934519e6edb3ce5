// Opens a replica of the store named by ?store= (default ./store, beside
// this page), runs ?sql= (or the form's query), renders the rows, and syncs
// on the Sync button. #result carries data-state="done" and a JSON copy of
// the last result in data-json, for scripts that drive the page.
import { EdgeReplica } from './pkg/index.js';

const params = new URLSearchParams(location.search);
const storeUrl = new URL(params.get('store') ?? './store', location.href).href;
const form = document.querySelector('#query');
if (params.has('sql')) form.sql.value = params.get('sql');
document.querySelector('#store').textContent = storeUrl;

const result = document.querySelector('#result');
const error = document.querySelector('#error');
let replica;

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
    const { columns, rows } = replica.query(form.sql.value);
    render(columns, rows);
    document.querySelector('#txid').textContent = replica.txid;
    result.dataset.json = JSON.stringify({ txid: replica.txid, columns, rows });
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
  replica = await EdgeReplica.open(storeUrl, {});
});
