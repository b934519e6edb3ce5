#!/usr/bin/env python3
"""Lazy wasm reader benchmark (issue 19): a cold reader's first answer from a
1 GB database behind a static HTTP server on loopback (nginx), in Node.

Steps:
 1. Build a WAL database of --db-mb MiB: `items(id INTEGER PRIMARY KEY, name
    TEXT, body TEXT)`, 250-byte text-like bodies (compress about 2:1).
    Seeded, and kept in --work-dir between runs.
 2. `distributary replicate --once` ships it to a folder store (a snapshot);
    a rollback-journal copy of the same file is served for sql.js-httpvfs.
 3. nginx serves both, the wasm package, sql.js-httpvfs and a bench page;
    its access log counts every request and body byte of the data (the
    store, or the database file) per run.
 4. In Node, each run a fresh process (cold reader, cold cache):
    - lazy: EdgeReplica.open(url, {lazy: true}) then a primary-key point
      query, --rounds times with random keys; then a 100-row range scan;
    - full: the default full-download mode, open then the same point query;
    - sync: a lazy reader answers, the primary commits 1,000 transactions
      (one row each, `distributary replicate` running), the reader syncs
      and answers a query on a new row.
    Time to the first answer (open + query), requests and bytes, the wasm
    memory's peak (it only grows) and the process's RSS.
 5. In headless Chromium (sql.js-httpvfs needs a browser: synchronous XHR in
    a Web Worker), sql.js-httpvfs over the database file beside our lazy
    reader, each in a fresh context: the same point query and range scan.

Usage:
  python3 bench/lazy.py                  # 1 GB, 5 rounds (~10 min the first time: builds the database)
  python3 bench/lazy.py --db-mb 64 --rounds 2   # smoke run
"""
import argparse, json, os, random, shutil, signal, sqlite3, statistics, subprocess, sys, time

import common
from common import binary, free_port, machine, stop, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JS = os.path.join(ROOT, "edge-wasm", "js")
WORDS = ("the of and to in is was for on that with as by at from this be are it an or have not which "
         "order customer invoice shipped pending total amount region account payment status created "
         "updated warehouse product quantity price discount tax note reference batch").split()
POINT = "SELECT id, name, body FROM items WHERE id = ?"
RANGE = "SELECT id, name, length(body) AS n FROM items WHERE id >= ? ORDER BY id LIMIT 100"


def make_database(path, size_mb, seed):
    rng = random.Random(seed)
    corpus = " ".join(rng.choice(WORDS) for _ in range(200_000))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, body TEXT)")
    target = size_mb << 20
    next_id = 1
    while True:
        rows = []
        for _ in range(20_000):
            at = rng.randrange(len(corpus) - 250)
            rows.append((next_id, f"item {next_id:09d}", corpus[at:at + 250]))
            next_id += 1
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)", rows)
        conn.commit()
        pages, size = conn.execute("SELECT * FROM pragma_page_count, pragma_page_size").fetchone()
        if pages * size >= target:
            break
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return next_id - 1


def rows_of(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT max(id) FROM items").fetchone()[0]
    finally:
        conn.close()


class Nginx:
    """nginx over `root`, logging status, body bytes and URI per request."""

    def __init__(self, root, work):
        self.prefix = os.path.join(work, "nginx")
        os.makedirs(os.path.join(self.prefix, "temp"), exist_ok=True)
        self.log = os.path.join(self.prefix, "access.log")
        self.port = free_port()
        temp = os.path.join(self.prefix, "temp")
        with open(os.path.join(self.prefix, "nginx.conf"), "w") as f:
            f.write(f"""daemon off; master_process off; pid {self.prefix}/nginx.pid; error_log {self.prefix}/error.log;
events {{ worker_connections 256; }}
http {{
  types {{ text/html html; application/javascript js mjs; application/wasm wasm; application/json json; }}
  default_type application/octet-stream;
  log_format counted '$status $body_bytes_sent $request_uri';
  access_log {self.log} counted;
  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
  sendfile on; etag on;
  server {{ listen 127.0.0.1:{self.port}; root {root}; disable_symlinks off; }}
}}
""")
        open(self.log, "w").close()
        self.proc = subprocess.Popen(["/usr/sbin/nginx", "-p", self.prefix, "-e", os.path.join(self.prefix, "error.log"),
                                      "-c", os.path.join(self.prefix, "nginx.conf")])
        wait_for(lambda: self._up(), "nginx to listen", timeout=20)
        self.mark()

    def _up(self):
        import socket
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def mark(self):
        self.offset = os.path.getsize(self.log)

    def counts(self, prefixes=("/store/", "/db/")):
        """Requests and body bytes for data under `prefixes` since mark()."""
        time.sleep(0.2)  # nginx writes its log line after the response
        with open(self.log) as f:
            f.seek(self.offset)
            lines = f.read().splitlines()
        requests = bytes_ = 0
        for line in lines:
            status, sent, uri = line.split(" ", 2)
            if uri.startswith(prefixes):
                requests += 1
                bytes_ += int(sent)
        self.mark()
        return requests, bytes_

    def stop(self):
        stop(self.proc)


class Reader:
    """One Node process running bench/lazy/reader.mjs."""

    def __init__(self, pkg, url, mode):
        self.proc = subprocess.Popen(["node", os.path.join(ROOT, "bench", "lazy", "reader.mjs"), pkg, url, mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.load = self.read()

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("the Node reader exited early")
        result = json.loads(line)
        if "error" in result:
            sys.exit(f"reader: {result['error']}")
        return result

    def step(self, *fields):
        self.proc.stdin.write("\t".join(fields) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def median(values):
    return statistics.median(values) if values else float("nan")


def cold_node(args, nginx, pkg, store_url, mode, sql, params_of, rows):
    runs = []
    for round_ in range(args.rounds if mode == "lazy" else args.full_rounds):
        nginx.mark()
        reader = Reader(pkg, store_url, mode)
        opened = reader.step("open")
        key = params_of(rows)
        answered = reader.step("query", sql, json.dumps(key))
        requests, bytes_ = nginx.counts()
        reader.close()
        runs.append({"open_ms": opened["ms"], "query_ms": answered["ms"], "first_answer_ms": opened["ms"] + answered["ms"],
                     "requests": requests, "bytes": bytes_, "rows": answered["rows"],
                     "wasm_bytes": answered["wasmBytes"], "rss": answered["rss"], "load_ms": reader.load["ms"],
                     "rss_after_load": reader.load["rss"]})
        print(f"  {mode} {sql.split()[0]} round {round_ + 1}: first answer {runs[-1]['first_answer_ms']:.0f} ms "
              f"(open {opened['ms']:.0f} + query {answered['ms']:.0f}), {requests} requests, {bytes_ / 1024:.0f} KiB, "
              f"wasm memory {answered['wasmBytes'] / 2**20:.0f} MiB, RSS {answered['rss'] / 2**20:.0f} MiB", flush=True)
    return runs


def summarize(runs):
    keys = ["first_answer_ms", "open_ms", "query_ms", "requests", "bytes", "wasm_bytes", "rss", "rss_after_load", "load_ms"]
    return {k: median([r[k] for r in runs]) for k in keys} | {"max_wasm_bytes": max(r["wasm_bytes"] for r in runs),
                                                            "max_rss": max(r["rss"] for r in runs)}


def sync_after_commits(args, nginx, pkg, store_url, db, store, distributary, rows):
    reader = Reader(pkg, store_url, "lazy")
    reader.step("open")
    reader.step("query", POINT, json.dumps([rows // 2]))
    replicator = subprocess.Popen([distributary, "replicate", "--sync-interval", "100ms", db, "file://" + store],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA busy_timeout=5000")
    for i in range(args.commits):
        conn.execute("INSERT INTO items (name, body) VALUES (?, ?)", (f"new {i}", "fresh " * 40))
        conn.commit()
        time.sleep(0.005)
    newest = conn.execute("SELECT max(id) FROM items").fetchone()[0]
    conn.close()
    time.sleep(1)
    replicator.send_signal(signal.SIGTERM)
    replicator.wait(timeout=60)
    nginx.mark()
    synced = reader.step("sync")
    sync_requests, sync_bytes = nginx.counts()
    answered = reader.step("query", POINT, json.dumps([newest]))
    query_requests, query_bytes = nginx.counts()
    reader.close()
    result = {"commits": args.commits, "sync_ms": synced["ms"], "sync_requests": sync_requests, "sync_bytes": sync_bytes,
              "query_ms": answered["ms"], "query_requests": query_requests, "query_bytes": query_bytes,
              "rows": answered["rows"], "wasm_bytes": answered["wasmBytes"]}
    print(f"  sync after {args.commits} commits: {synced['ms']:.0f} ms, {sync_requests} requests, "
          f"{sync_bytes / 1024:.0f} KiB; then a point query on a new row: {answered['ms']:.0f} ms, "
          f"{query_requests} requests, {query_bytes / 1024:.0f} KiB", flush=True)
    return result


def chromium(args, nginx, rows):
    env = dict(os.environ, EDGE_WASM_JS=JS)
    results = {}
    for reader, source in [("edge", "store=/store"), ("httpvfs", "db=/db/app.db")]:
        for name, sql, key in [("point", POINT, lambda: [random.randrange(1, rows)]),
                               ("range", RANGE, lambda: [random.randrange(1, rows - 100)])]:
            runs = []
            for _ in range(args.browser_rounds):
                from urllib.parse import quote
                url = f"{nginx.url}/page.html?reader={reader}&{source}&sql={quote(sql)}&params={quote(json.dumps(key()))}"
                nginx.mark()
                out = subprocess.run(["node", os.path.join(ROOT, "bench", "lazy", "browser.mjs"), url], env=env,
                                     capture_output=True, text=True, timeout=300)
                if out.returncode != 0:
                    sys.exit(f"browser.mjs failed: {out.stderr}")
                page = json.loads(out.stdout.splitlines()[-1])
                if "error" in page:
                    sys.exit(f"{reader} in Chromium: {page['error']}")
                requests, bytes_ = nginx.counts()
                runs.append(page | {"requests": requests, "bytes": bytes_})
                print(f"  chromium {reader} {name}: first answer {page['totalMs']:.0f} ms, {requests} requests, "
                      f"{bytes_ / 1024:.0f} KiB, {page['rows']} rows", flush=True)
            results[f"{reader}_{name}"] = {k: median([r[k] for r in runs]) for k in ["totalMs", "openMs", "queryMs", "requests", "bytes"]}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--full-rounds", type=int, default=1)
    parser.add_argument("--browser-rounds", type=int, default=3)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--work-dir", default="/tmp/distributary-lazy-bench")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    random.seed(19)
    distributary = binary("distributary")
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    db = os.path.join(work, f"app-{args.db_mb}.db")
    if not os.path.exists(db + ".done"):
        for f in (db, db + "-wal", db + "-shm"):
            if os.path.exists(f):
                os.remove(f)
        t = time.time()
        make_database(db, args.db_mb, seed=19)
        open(db + ".done", "w").close()
        print(f"built {db} in {time.time() - t:.0f} s", flush=True)
    rows = rows_of(db)
    size = os.path.getsize(db)

    site = os.path.join(work, "site")
    shutil.rmtree(site, ignore_errors=True)
    os.makedirs(os.path.join(site, "db"))
    store = os.path.join(site, "store")
    t = time.time()
    subprocess.run([distributary, "replicate", "--once", db, "file://" + store], check=True, capture_output=True)
    print(f"replicated {size / 1e9:.2f} GB to a folder store in {time.time() - t:.0f} s", flush=True)
    # sql.js-httpvfs reads the file as SQLite wrote it, in rollback-journal mode.
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.copyfile(db, os.path.join(site, "db", "app.db"))
    with open(os.path.join(site, "db", "app.db"), "r+b") as f:
        f.seek(18)
        f.write(bytes([1, 1]))
    pkg = os.path.join(work, "pkg")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-wasm.sh"), pkg], check=True)
    os.symlink(pkg, os.path.join(site, "pkg"))
    os.symlink(os.path.join(JS, "node_modules", "sql.js-httpvfs", "dist"), os.path.join(site, "httpvfs"))
    shutil.copyfile(os.path.join(ROOT, "bench", "lazy", "page.html"), os.path.join(site, "page.html"))

    nginx = Nginx(site, work)
    try:
        store_url = f"{nginx.url}/store"
        results = {"machine": machine(work), "db_bytes": size, "rows": rows,
                   "store_bytes": common.dir_bytes(store), "wasm_package_bytes": os.path.getsize(os.path.join(pkg, "distributary_edge_wasm_bg.wasm"))}
        print("Node, cold readers:", flush=True)
        results["lazy_point"] = summarize(cold_node(args, nginx, pkg, store_url, "lazy", POINT, lambda n: [random.randrange(1, n)], rows))
        results["lazy_range"] = summarize(cold_node(args, nginx, pkg, store_url, "lazy", RANGE, lambda n: [random.randrange(1, n - 100)], rows))
        results["full_point"] = summarize(cold_node(args, nginx, pkg, store_url, "full", POINT, lambda n: [random.randrange(1, n)], rows))
        print("Headless Chromium, cold contexts:", flush=True)
        results["chromium"] = chromium(args, nginx, rows)
        print("Following the primary:", flush=True)
        results["sync"] = sync_after_commits(args, nginx, pkg, store_url, db, store, distributary, rows)
    finally:
        nginx.stop()
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def report(r):
    kib = lambda b: f"{b / 1024:,.0f} KiB"
    print(f"\n{r['db_bytes'] / 1e9:.2f} GB database, {r['rows']:,} rows; store {r['store_bytes'] / 1e6:.0f} MB; "
          f"{r['machine']}")
    print(f"| reader | query | first answer (median) | requests | transferred | wasm memory (peak) | RSS (peak; after loading the module) |")
    print("|---|---|---|---|---|---|---|")
    for key, reader, query in [("lazy_point", "ours, lazy (Node)", "point"), ("lazy_range", "ours, lazy (Node)", "100-row range"),
                               ("full_point", "ours, full download (Node)", "point")]:
        s = r[key]
        print(f"| {reader} | {query} | {s['first_answer_ms']:,.0f} ms (open {s['open_ms']:,.0f} + query {s['query_ms']:,.0f}) | "
              f"{s['requests']:.0f} | {kib(s['bytes'])} | {s['max_wasm_bytes'] / 2**20:,.1f} MiB | "
              f"{s['max_rss'] / 2**20:,.0f} MiB; {s['rss_after_load'] / 2**20:,.0f} MiB |")
    for key, reader in [("edge_point", "ours, lazy (Chromium)"), ("httpvfs_point", "sql.js-httpvfs (Chromium)"),
                        ("edge_range", "ours, lazy (Chromium)"), ("httpvfs_range", "sql.js-httpvfs (Chromium)")]:
        s = r["chromium"][key]
        print(f"| {reader} | {'point' if 'point' in key else '100-row range'} | {s['totalMs']:,.0f} ms | {s['requests']:.0f} | {kib(s['bytes'])} | | |")
    s = r["sync"]
    print(f"\nsync after {s['commits']} commits: {s['sync_ms']:,.0f} ms, {s['sync_requests']} requests, {kib(s['sync_bytes'])}; "
          f"point query on a new row after it: {s['query_ms']:,.0f} ms, {s['query_requests']} requests, {kib(s['query_bytes'])}")


if __name__ == "__main__":
    main()
