// A Worker that holds a live read-only replica of a Distributary store in
// memory and answers SQL queries from it:
//   GET /?sql=SELECT+count(*)+FROM+events  ->  {"txid":..,"columns":[..],"rows":[..]}
// Each request syncs first (one conditional GET of the manifest when
// nothing changed, then only the new segments). The replica survives
// between requests for as long as the isolate does.
import wasm from './pkg/distributary_edge_wasm_bg.wasm';
import { EdgeReplica, initialize } from './pkg/index.js';

// Workers cannot compile wasm at run time: instantiate the bundled module.
initialize(wasm);

let replica = null;

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const sql = url.searchParams.get('sql') ?? 'SELECT name FROM sqlite_schema ORDER BY name';
    const params = JSON.parse(url.searchParams.get('params') ?? '[]');
    try {
      if (replica === null) {
        replica = await EdgeReplica.open(env.STORE_URL, env.ENCRYPTION_KEY ? { key: env.ENCRYPTION_KEY } : {});
      } else {
        await replica.sync();
      }
      const { columns, rows } = replica.query(sql, params);
      return Response.json({ txid: replica.txid, columns, rows });
    } catch (e) {
      return Response.json({ error: e.message, txid: replica?.txid ?? null }, { status: 500 });
    }
  },
};
