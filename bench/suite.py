#!/usr/bin/env python3
"""The benchmark suite of issue #9 in one run: Distributary beside Litestream
0.5.x on the same workloads, one table at the end. Run it through
`scripts/bench`, which builds the release binaries and installs the tools.

Sections, in order (each reuses the code of its stand-alone script):
  restore     bench/restore.py: a >= 1 GB database (snapshot + 1,000 one-commit
              segments / L0 files) restored by both tools from file:// stores;
              medians over rounds, content verified by SHA-256.
  lag         bench/serve.py: commit on the primary -> visible to a reader.
              `distributary replicate --sync-interval 1s` + `edge-reader serve
              --poll 1s`, beside `litestream replicate` (sync-interval 1s) + the
              Litestream VFS (1 s poll) in the sqlite3 CLI; file:// stores.
  throughput  bench/bursts.py: app write rate with each replicator (single-row INSERTs, and 4
              writers of two UPDATEs + one INSERT) over the rate with none, in
              interleaved bursts, and
              bench/busy0.py's busy-timeout-0 app (file:// stores, 1 s sync).
  s3          here: both replicators at once on S3 (one moto on loopback, one
              bucket and one counting proxy, bench/s3proxy.py, per tool); an
              active window (the same writer commits --rate transactions/s to
              both databases) then an idle window (no writes). Requests by
              kind and bytes uploaded are counted at the proxy; CPU and RSS
              from /proc. Distributary's column includes its compactor
              (defaults), because Litestream compacts inside its replicator:
              in the replicator's process (`--compaction local`, the
              default, as Litestream) or, with --compaction watch,
              `distributary compact --watch` on its own proxy. In both windows one reader per
              tool, each on its own proxy and asked a trivial query once a
              second: `edge-reader serve --poll 1s` (default
              --manifest-interval, 30 s) and the Litestream VFS (1 s poll) in
              the sqlite3 CLI. Then a cost table: request $ per month of 1
              database with 1, 10 and 10,000 readers (writer side + N x the
              measured reader; readers on S3 add linearly), active and idle,
              and Distributary's readers behind a CDN: S3 = writer side + the
              CDN's origin GETs, the CDN's request charge (CloudFront) apart;
              its numbers come from the cdn section's JSON (--cdn-json), the
              row says "not measured" without it.
  cdn         tests/src/bin/cdn_bench.rs (run_cdn below): 1,000 then 10,000
              simulated edge readers (serve's protocol, in-memory replicas, one
              process) behind nginx running the CDN block of docs/DEPLOY.md, the
              real replicator shipping 10 commits/s to moto: origin and reader
              requests/s, hit ratio, lag p50/p99, CPU. Its own table, and JSON.
  many        bench/many.py: 1,000 idle databases in one process (a folder,
              `replicate --dir` beside Litestream's `dir:`): threads,
              descriptors, RSS, idle CPU and store writes, then 10 written at
              once and their lag to the store (--quick: 100 databases).

  lazy        bench/lazy.py: the wasm reader's lazy mode on a 1 GB database
              behind nginx: a cold reader's first answer (point query, 100-row
              range) in Node, requests, bytes and memory, beside the full
              download and, in headless Chromium, sql.js-httpvfs; then a sync
              after 1,000 commits. Its own table (--quick: 64 MiB, 2 rounds).

Usage: python3 bench/suite.py [--quick] [--only restore,lag,throughput,s3,many,cdn,lazy] [--cdn-json PATH]
  --cdn-json PATH: {"readers", "origin_requests_per_s" (CDN -> S3, all readers
  together), "reader_requests_per_s" (readers -> CDN, all together), "hit_ratio"}
"""
import argparse, http.client, json, os, random, shutil, sqlite3, statistics, subprocess, sys, tempfile, threading, time
from types import SimpleNamespace

import bursts, busy0, common, many, restore, s3proxy, serve
from common import ProcStats, free_port, litestream_env, quantile, stop, wait_for

SECTIONS = ("restore", "lag", "throughput", "s3", "many", "cdn", "lazy")
SYNC_INTERVAL = "1s"  # both tools; each one's default


def settings(quick):
    """Sizes and durations: the full run (about 30 min) or a smoke run."""
    if quick:
        return SimpleNamespace(db_mb=32, restore_transactions=30, restore_rounds=1, lag_writes=20,
                               throughput_transactions=2000, throughput_rounds=2, busy0_seconds=10, window=60, rate=10, seed_rows=2000,
                               many_dbs=100)
    return SimpleNamespace(db_mb=1000, restore_transactions=1000, restore_rounds=3, lag_writes=100,
                           throughput_transactions=20000, throughput_rounds=8, busy0_seconds=60, window=300, rate=10, seed_rows=20000,
                           many_dbs=1000)


# ---- restore, lag, throughput: the stand-alone scripts' code paths ----

def run_restore(cfg, work, binaries):
    args = SimpleNamespace(db_mb=cfg.db_mb, transactions=cfg.restore_transactions, spacing=0.2,
                           rounds=cfg.restore_rounds, seed=42, compacted=False)
    folder = os.path.join(work, "restore")
    os.makedirs(folder)
    try:
        return restore.run(args, folder, binaries["distributary"], binaries["litestream"], litestream_env())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_lag(cfg, work, binaries):
    folder = os.path.join(work, "lag")
    os.makedirs(folder)
    lags = {"distributary": serve.lag_distributary(folder, cfg.lag_writes),
            "litestream": serve.lag_litestream(folder, cfg.lag_writes)}
    shutil.rmtree(folder, ignore_errors=True)
    return {tool: (quantile(v, 0.5), quantile(v, 0.99), len(v)) if v else None for tool, v in lags.items()}


def run_many(cfg, work, binaries):
    """bench/many.py's measures for each tool."""
    args = SimpleNamespace(idle_seconds=20, written=10, commits=4)
    return {tool: many.measure(tool, cfg.many_dbs, args) for tool in ("distributary", "litestream")}


def run_throughput(cfg, work, binaries):
    """Per workload (bench/bursts.py: single-row INSERTs, and 4 writers of
    two UPDATEs and an INSERT per transaction, in interleaved bursts with
    one long-lived replicator per mode): the median of each cycle's app rate
    with a replicator over the rate with none, and replicator CPU per 1,000
    transactions. Then the busy-timeout-0 app of bench/busy0.py beside each."""
    result = {}
    modes = ("none", "distributary", "litestream")
    for workload in ("single", "writers4"):
        runs = bursts.measure(workload, modes, binaries, cfg.throughput_rounds, cfg.throughput_transactions,
                              seconds=4, pause=1.5)
        result[workload] = {mode: (statistics.median(runs[mode]["rates"]), bursts.ratios(runs, mode)[1],
                                   runs[mode]["cpu"] / runs[mode]["transactions"] * 1000)
                            for mode in ("distributary", "litestream")}
    busy = {mode: busy0.run(mode, cfg.busy0_seconds, binaries) for mode in ("distributary", "litestream")}
    result["busy0"] = busy
    return result


# ---- s3: requests, bytes, CPU, RSS through counting proxies ----

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def start_moto():
    port = free_port()
    proc = subprocess.Popen([shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            return conn.getresponse().status == 200
        except OSError:
            return False

    wait_for(answers, "moto_server", timeout=60)
    return proc, port


def create_bucket(port, bucket):
    """Straight to moto, so the proxies count only the tools' requests."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("PUT", "/" + bucket)
    status = conn.getresponse().status
    if status != 200:
        sys.exit(f"create bucket {bucket}: HTTP {status}")


def seed_database(path, rows):
    """A WAL database with `rows` events of ~500 bytes: the state before the windows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    rng = random.Random(7)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO events (body) VALUES (?)",
                     (("seed %d %s" % (i, rng.randbytes(240).hex()),) for i in range(rows)))
    conn.execute("COMMIT")
    return conn  # kept open, as apps do


def litestream_config(path, db, bucket, proxy_port):
    """Litestream 0.5 defaults except the sync interval, written out for S3 on moto."""
    with open(path, "w") as f:
        f.write(f"""dbs:
  - path: {db}
    replica:
      type: s3
      bucket: {bucket}
      path: db
      region: us-east-1
      endpoint: http://127.0.0.1:{proxy_port}
      force-path-style: true
      sync-interval: {SYNC_INTERVAL}
""")


class Sampler:
    """Peak VmRSS of some processes, sampled every 0.5 s while a window runs."""

    def __init__(self, stats):
        self.stats, self.peak, self.running = stats, dict.fromkeys(stats, 0.0), True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while self.running:
            for name, st in self.stats.items():
                try:
                    self.peak[name] = max(self.peak[name], st.rss_mb())
                except (FileNotFoundError, ProcessLookupError):
                    pass
            time.sleep(0.5)

    def finish(self):
        self.running = False
        self.thread.join()
        return self.peak


def window(seconds, proxies, stats, write=None, rate=0):
    """One measured window: requests and bytes per proxy, CPU s and peak RSS
    per process; commits `rate` transactions/s through `write` if given."""
    before = {name: p.snapshot() for name, p in proxies.items()}
    cpu0 = {name: st.cpu_seconds() for name, st in stats.items()}
    sampler = Sampler(stats)
    start = time.perf_counter()
    written = 0
    while (now := time.perf_counter()) < start + seconds:
        if write:
            write(written)
            written += 1
            time.sleep(max(0.0, start + written / rate - time.perf_counter()))
        else:
            time.sleep(min(1.0, start + seconds - now))
    elapsed = time.perf_counter() - start
    peak = sampler.finish()
    return {"seconds": elapsed, "written": written,
            "requests": {name: s3proxy.delta(p.snapshot(), before[name]) for name, p in proxies.items()},
            "cpu": {name: st.cpu_seconds() - cpu0[name] for name, st in stats.items()},
            "rss": peak}


READER_POLL = "1s"  # both readers: edge-reader serve --poll 1s, and the VFS's default
READERS = ("distributary-reader", "litestream-reader")


def s3_url(bucket, proxy_port):
    """Distributary's store URL for `bucket` on moto, through a proxy."""
    return f"s3://{bucket}/db?endpoint=http://127.0.0.1:{proxy_port}&region=us-east-1"


def start_edge_reader(binary, folder, proxy_port, env, logs):
    """`edge-reader serve --poll 1s` (default --manifest-interval) on the S3
    store through its own proxy; returns (process, its HTTP port) once its
    first sync is done, so that sync falls in neither window."""
    port = free_port()
    proc = subprocess.Popen([binary, "serve", "--source", s3_url("distributary", proxy_port),
                             "--db", os.path.join(folder, "reader.db"), "--listen", f"127.0.0.1:{port}",
                             "--poll", READER_POLL], stdout=logs, stderr=logs, env=env)
    serve.wait_http(port, "/status", lambda status, body: status == 200 and json.loads(body)["ready"])
    return proc, port


def start_vfs_reader(folder, proxy_port, env):
    """The Litestream VFS on Litestream's bucket through its own proxy (the
    same URL form as `litestream replicate`'s config: endpoint, region,
    path-style); returns it once it has answered a first query."""
    url = f"s3://litestream/db?endpoint=http://127.0.0.1:{proxy_port}&region=us-east-1&forcePathStyle=true"
    reader = serve.VfsReader(url, env, folder)
    reader.query_int("SELECT count(*) FROM events")
    return reader


class ReaderQueries:
    """One trivial query a second to each reader while the windows run, as an
    app would, so a reader that syncs on demand (the VFS) keeps polling."""

    SQL = "SELECT coalesce(max(id), 0) FROM events"

    def __init__(self, edge_port, vfs):
        self.client = http.client.HTTPConnection("127.0.0.1", edge_port, timeout=10)
        self.vfs, self.failed, self.running = vfs, 0, True
        self.last = {"distributary-reader": None, "litestream-reader": None}  # max(id) each last saw
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def ask_edge_reader(self):
        self.client.request("POST", "/query", json.dumps({"sql": self.SQL}), {"Content-Type": "application/json"})
        response = self.client.getresponse()
        body = response.read()
        if response.status != 200:
            self.failed += 1
        else:
            self.last["distributary-reader"] = json.loads(body)["rows"][0][0]

    def loop(self):
        tick = time.perf_counter()
        while self.running:
            try:
                self.ask_edge_reader()
            except OSError:
                self.failed += 1
            self.last["litestream-reader"] = self.vfs.query_int(self.SQL)
            tick += 1.0
            time.sleep(max(0.0, tick - time.perf_counter()))

    def finish(self):
        self.running = False
        self.thread.join(timeout=30)  # a VFS that stopped answering must not hang the suite
        self.client.close()


def run_s3(cfg, work, binaries):
    folder = os.path.join(work, "s3")
    os.makedirs(folder)
    moto, moto_port = start_moto()
    procs, proxies, keepers, vfs, queries = {}, {}, [], None, None
    logs = open(os.path.join(folder, "replicators.log"), "wb")
    try:
        for tool in ("distributary", "litestream"):
            create_bucket(moto_port, tool)
        # The compactor and each reader get their own proxy to their tool's
        # bucket, so the tables can say which process made the requests.
        proxies = {name: s3proxy.CountingProxy(moto_port)
                   for name in ("distributary", "compactor", "litestream") + READERS}
        dbs = {tool: os.path.join(folder, tool + ".db") for tool in ("distributary", "litestream")}
        keepers = [seed_database(db, cfg.seed_rows) for db in dbs.values()]
        env = litestream_env(S3_ENV)
        # `local`: the replicator compacts in its own process (as Litestream
        # does), handed each segment it uploads; `watch`: `distributary
        # compact --watch` in a process of its own, reading them back.
        local = ["--compaction", "local"] if cfg.compaction == "local" else []
        procs["distributary"] = subprocess.Popen(
            [binaries["distributary"], "replicate", "--sync-interval", SYNC_INTERVAL, *local, dbs["distributary"],
             s3_url("distributary", proxies["distributary"].port)], stdout=logs, stderr=logs, env=env)
        if cfg.compaction == "watch":
            procs["compactor"] = subprocess.Popen(
                [binaries["distributary"], "compact", "--watch", s3_url("distributary", proxies["compactor"].port)],
                stdout=logs, stderr=logs, env=env)
        config = os.path.join(folder, "litestream.yml")
        litestream_config(config, dbs["litestream"], "litestream", proxies["litestream"].port)
        procs["litestream"] = subprocess.Popen([binaries["litestream"], "replicate", "-config", config],
                                               stdout=logs, stderr=logs, env=env)
        # The initial snapshot of each is not part of either window.
        for tool in ("distributary", "litestream"):
            wait_for(lambda: proxies[tool].snapshot()[0]["PUT"] > 0, f"{tool}'s first upload", timeout=120)
        time.sleep(15)
        # Nor is each reader's first sync (the whole database).
        procs["distributary-reader"], edge_port = start_edge_reader(
            binaries["edge-reader"], folder, proxies["distributary-reader"].port, env, logs)
        vfs = start_vfs_reader(folder, proxies["litestream-reader"].port, env)
        procs["litestream-reader"] = vfs.proc
        queries = ReaderQueries(edge_port, vfs)
        time.sleep(5)
        for name, proc in procs.items():
            if proc.poll() is not None:
                sys.exit(f"{name} exited early ({proc.returncode}); see {folder}/replicators.log")
        stats = {name: ProcStats(proc.pid) for name, proc in procs.items()}
        writers = [sqlite3.connect(db, isolation_level=None) for db in dbs.values()]
        for conn in writers:
            conn.execute("PRAGMA busy_timeout=10000")
        rng = random.Random(11)

        def write(i):
            row = ("active %d %s" % (i, rng.randbytes(150).hex()),)  # ~300 bytes of text, same in both
            for conn in writers:
                conn.execute("INSERT INTO events (body) VALUES (?)", row)

        print(f"s3: active window {cfg.window} s at {cfg.rate} txn/s", flush=True)
        active = window(cfg.window, proxies, stats, write, cfg.rate)
        print(f"s3: idle window {cfg.window} s", flush=True)
        idle = window(cfg.window, proxies, stats)
        for conn in writers:
            conn.close()
        queries.finish()
        peak = {name: st.peak_rss_mb() for name, st in stats.items()}
        # Failed HTTP queries to edge-reader serve; lines the VFS logged.
        result = {"active": active, "idle": idle, "lifetime_peak_rss": peak,
                  "reader_errors": {"distributary-reader": queries.failed, "litestream-reader": len(vfs.errors)},
                  "reader_last": queries.last}
        result["cost"] = cost_table(result, cfg.cdn)
        return result
    finally:
        if queries:
            queries.running = False
        if vfs:
            vfs.close()
            procs.pop("litestream-reader", None)
        for proc in procs.values():
            stop(proc)
        for proxy in proxies.values():
            proxy.close()
        for conn in keepers:
            conn.close()
        stop(moto)
        logs.close()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(folder, ignore_errors=True)


# ---- the cost table: 1 database, N readers, from this run's counts ----

READER_COUNTS = (1, 10, 10_000)
# CloudFront pay-as-you-go, United States and Europe: $0.0100 per 10,000 HTTPS
# requests (the list price given in issue #18, as of 2026-12-07). Its data
# transfer out, which S3 would also charge readers outside AWS, is not counted.
CDN_PRICE_PER_10000 = 0.0100
CDN_FIELDS = ("readers", "origin_requests_per_s", "reader_requests_per_s", "hit_ratio")


def load_cdn(path):
    """The cdn section's result (--cdn-json): `readers` behind one CDN,
    `origin_requests_per_s` from the CDN to the store (all readers together),
    `reader_requests_per_s` from all readers to the CDN, `hit_ratio`."""
    with open(path) as f:
        cdn = json.load(f)
    missing = [k for k in CDN_FIELDS if not isinstance(cdn.get(k), (int, float))]
    if missing:
        sys.exit(f"{path}: no number for {', '.join(missing)}")
    if cdn["reader_requests_per_s"] and abs(1 - cdn["origin_requests_per_s"] / cdn["reader_requests_per_s"]
                                            - cdn["hit_ratio"]) > 0.02:
        print(f"warning: {path}: hit_ratio {cdn['hit_ratio']} is not 1 - origin / reader requests; the table "
              "takes both request rates as totals over all readers", file=sys.stderr)
    return cdn


def per_hour(w):
    """Requests by kind per hour, per proxy, over window `w`."""
    scale = 3600 / w["seconds"]
    return {name: {k: v * scale for k, v in w["requests"][name][0].items()} for name in w["requests"]}


def phase_costs(w):
    """$ per month, per tool, of the writer side (Distributary: replicator +
    compactor) and of one reader, in window `w`."""
    counts = per_hour(w)
    cost = {name: s3proxy.monthly_cost(c) for name, c in counts.items()}
    return {"writer": {"distributary": cost["distributary"] + cost["compactor"], "litestream": cost["litestream"]},
            "reader": {"distributary": cost["distributary-reader"], "litestream": cost["litestream-reader"]}}


def direct_cost(costs, tool, readers):
    """The writer side plus `readers` readers that each read S3 directly:
    each makes the requests the measured one made, so they add linearly."""
    return costs["writer"][tool] + readers * costs["reader"][tool]


def cdn_cost(costs, cdn):
    """(S3 $, the CDN's request $) per month with cdn["readers"] readers behind
    a CDN: S3 serves the writer side and the CDN's origin requests (GETs);
    the readers' requests are billed by the CDN instead."""
    origin = {"GET": cdn["origin_requests_per_s"] * 3600}
    requests_per_month = cdn["reader_requests_per_s"] * 3600 * s3proxy.HOURS_PER_MONTH
    return (costs["writer"]["distributary"] + s3proxy.monthly_cost(origin),
            requests_per_month * CDN_PRICE_PER_10000 / 10_000)


def cost_table(s3, cdn):
    """Rows (label, {phase: (Distributary $, Litestream $)}) per month."""
    costs = {phase: phase_costs(s3[phase]) for phase in ("active", "idle")}
    rows = [(f"{n:,} reader{'s' if n > 1 else ''}, each on S3",
             {p: (direct_cost(c, "distributary", n), direct_cost(c, "litestream", n)) for p, c in costs.items()})
            for n in READER_COUNTS]
    if cdn is None:
        missing = "not measured (run the cdn section)"
        rows.append(("Distributary, 10,000 readers behind a CDN", {p: (missing, "–") for p in costs}))
        return rows
    n = cdn["readers"]
    split = {p: cdn_cost(c, cdn) for p, c in costs.items()}
    theirs = {p: direct_cost(c, "litestream", n) for p, c in costs.items()}
    rows.append((f"Distributary, {n:,} readers behind a CDN: S3 (writer side + origin GETs) vs Litestream's "
                 f"{n:,} on S3", {p: (split[p][0], theirs[p]) for p in costs}))
    rows.append((f"  + the CDN's request charge ({n:,} readers' requests)", {p: (split[p][1], "–") for p in costs}))
    rows.append(("  = S3 + CDN requests", {p: (sum(split[p]), theirs[p]) for p in costs}))
    return rows


def money(value):
    if not isinstance(value, (int, float)):
        return value
    return f"${value:,.0f}" if value >= 100 else f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def print_cost_table(s3, cfg, litestream_version):
    print()
    print("Request cost per month, 1 database, readers polling every 1 s, S3 list prices (from this run's counts)")
    print(f"| readers | active: Distributary | active: Litestream {litestream_version} | active: D / L "
          f"| idle: Distributary | idle: Litestream | idle: D / L |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, by_phase in s3["cost"]:
        cells = [f"{money(ours)} | {money(theirs)} | {ratio(ours, theirs)}" for ours, theirs in
                 (by_phase["active"], by_phase["idle"])]
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    compactor = "`compact --watch`" if cfg.compaction == "watch" else "its compactor (`--compaction local`)"
    print(f"Distributary = replicator + {compactor} + N x the measured `edge-reader serve --poll 1s`; "
          "Litestream = replicator + N x the measured VFS reader. Readers that each read S3 add linearly.")
    if cfg.cdn:
        c = cfg.cdn
        print(f"CDN (from {cfg.cdn_path}): {c['readers']:,} readers, {c['reader_requests_per_s']:,.1f} requests/s "
              f"to the CDN, {c['origin_requests_per_s']:,.2f}/s to S3 (hit ratio {c['hit_ratio']:.4f}); the CDN's "
              f"requests at CloudFront's ${CDN_PRICE_PER_10000:.4f} per 10,000 HTTPS (US/EU). A CDN moves the "
              "readers' request cost from S3 to the CDN, it does not remove it; transfer is not counted.")
    print()

# ---- cdn: readers behind a CDN (issue #18) ----

def run_cdn(cfg, work, binaries):
    """cdn_bench once per fleet size (1,000 and 10,000 readers, 60 s of writes;
    --quick: 100 and 1,000, 20 s). It is built here, in the bench target dir;
    it prints its table row, and writes its JSON to $BENCH_CDN_OUT (default
    ~/.cache/distributary/bench-cdn/cdn-N.json; a cost table takes
    `origin_requests_per_s` of the 10,000-reader run)."""
    import json
    target = os.environ.get("CARGO_TARGET_DIR", common.BENCH_TARGET)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "distributary-tests", "--bin", "cdn_bench"],
                   cwd=common.ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
    bench = os.path.join(target, "release", "cdn_bench")
    readers, seconds = ((100, 1000), 20) if cfg.quick else ((1000, 10000), 60)
    # Kept after the run (the work folder is not): a cost table reads them.
    out_dir = os.environ.get("BENCH_CDN_OUT", os.path.expanduser("~/.cache/distributary/bench-cdn"))
    os.makedirs(out_dir, exist_ok=True)
    runs = []
    for n in readers:
        out = os.path.join(out_dir, f"cdn-{n}.json")
        subprocess.run([bench, "--readers", str(n), "--seconds", str(seconds), "--json", out,
                        "--distributary", binaries["distributary"], "--work", work], check=True)
        with open(out) as f:
            runs.append(json.load(f))
        print(f"{out}: {json.dumps(runs[-1])}", flush=True)
    return runs


# ---- lazy: the wasm reader's lazy mode (issue #19) ----

def run_lazy(cfg, work, binaries):
    """bench/lazy.py in a child (it builds the wasm package and prints its
    own table); its JSON is the section's result."""
    out = os.path.join(work, "lazy.json")
    sizes = ["--db-mb", "64", "--rounds", "2", "--browser-rounds", "1", "--commits", "100"] if cfg.quick else []
    subprocess.run([sys.executable, os.path.join(common.ROOT, "bench", "lazy.py"), "--work-dir",
                    os.path.join(work, "lazy"), "--json", out, *sizes], check=True,
                   env={**os.environ, "DISTRIBUTARY": binaries["distributary"]})
    with open(out) as f:
        return json.load(f)


# ---- the table ----

def fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio(ours, theirs):
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
        value = ours / theirs
        return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.1e}"  # not "0.00" for 1/3,000
    return "–"


def reader_rows(phase, w, counts, hour):
    """One reader at 1 s: edge-reader serve vs the Litestream VFS."""
    ours, theirs = counts["distributary-reader"], counts["litestream-reader"]
    rows = [(f"{phase}: one reader (1 s poll), {kind} requests per hour", round(ours[kind]), round(theirs[kind]))
            for kind in s3proxy.KINDS if kind in ("GET", "LIST") or ours[kind] or theirs[kind]]
    rows.append((f"{phase}: one reader, all requests per hour", round(sum(ours.values())),
                 round(sum(theirs.values()))))
    rows.append((f"{phase}: one reader, request cost, $ per month", s3proxy.monthly_cost(ours),
                 s3proxy.monthly_cost(theirs)))
    rows.append((f"{phase}: one reader, CPU (s per hour)", w["cpu"]["distributary-reader"] * hour,
                 w["cpu"]["litestream-reader"] * hour))
    return rows


def rows_for(results, cfg):
    """(metric, Distributary, Litestream) rows, in the issue's order."""
    rows = []
    if "lag" in results:
        lag = results["lag"]
        for label, i in (("p50", 0), ("p99", 1)):
            rows.append((f"replication lag to a reader, {label} (s)",
                         lag["distributary"] and lag["distributary"][i], lag["litestream"] and lag["litestream"][i]))
    if "restore" in results:
        r = results["restore"]
        size = f"{r['db_bytes'] / 1e9:.2f} GB database" + ("" if r["db_bytes"] >= 1e9 else " (--quick: NOT >= 1 GB)")
        rows.append((f"restore time, {size}, snapshot + {r['transactions']} commits, median of {r['rounds']} (s)",
                     r["seconds"]["distributary"], r["seconds"]["litestream"]))
        rows.append(("restore peak RSS (MB)", r["peak_rss_mb"]["distributary"], r["peak_rss_mb"]["litestream"]))
    if "many" in results:
        m, n = results["many"], cfg.many_dbs
        for label, key, scale in (("threads", "threads", 1), ("descriptors per database", "fds", 1 / n),
                                  ("RSS per database (KiB)", "rss", 1024 / n),
                                  ("idle CPU (% of a core)", "idle_cpu", 100), ("store writes while idle", "idle_writes", 1),
                                  ("lag of 10 written at once, p99 (s)", "lag_p99", 1)):
            rows.append((f"{n} databases in one process: {label}", m["distributary"][key] * scale,
                         m["litestream"][key] * scale))
    if "s3" in results:
        s3 = results["s3"]
        for phase in ("active", "idle"):
            w = s3[phase]
            hour = 3600 / w["seconds"]
            counts = per_hour(w)
            ours = {k: counts["distributary"][k] + counts["compactor"][k] for k in s3proxy.KINDS}
            theirs = counts["litestream"]
            for kind in ("PUT", "GET", "LIST") + tuple(k for k in s3proxy.KINDS if k not in ("PUT", "GET", "LIST")):
                if kind in ("PUT", "GET", "LIST") or ours[kind] or theirs[kind]:
                    rows.append((f"{phase}: {kind} requests per hour", round(ours[kind]), round(theirs[kind])))
            shown = [k for k in s3proxy.KINDS if counts["compactor"][k]]
            rows.append((f"{phase}: of which Distributary's compactor",
                         ", ".join(f"{k} {counts['compactor'][k]:,.0f}" for k in shown) or "none", "–"))
            rows.append((f"{phase}: request cost, $ per month (S3 list prices)",
                         s3proxy.monthly_cost(ours), s3proxy.monthly_cost(theirs)))
            uploaded = {name: w["requests"][name][1] * hour / 1e6 for name in w["requests"]}
            rows.append((f"{phase}: MB uploaded per hour", uploaded["distributary"] + uploaded["compactor"],
                         uploaded["litestream"]))
            rows.append((f"{phase}: replicator CPU (s per hour)", w["cpu"]["distributary"] * hour,
                         w["cpu"]["litestream"] * hour))
            if "compactor" in w["cpu"]:
                rows.append((f"{phase}: compactor CPU (s per hour; Litestream's is in its replicator)",
                             w["cpu"]["compactor"] * hour, "in replicator"))
            rows.append((f"{phase}: replicator peak RSS (MB)", w["rss"]["distributary"], w["rss"]["litestream"]))
            rows += reader_rows(phase, w, counts, hour)
        rows.append(("replicator peak RSS since start, incl. initial snapshot (MB)",
                     s3["lifetime_peak_rss"]["distributary"], s3["lifetime_peak_rss"]["litestream"]))
    if "throughput" in results:
        t = results["throughput"]
        for workload, label in (("single", "single-row INSERTs"), ("writers4", "4 writers, 2 UPDATEs + 1 INSERT")):
            w = t[workload]
            rows.append((f"app write throughput with replicator / without ({label})", w["distributary"][1],
                         w["litestream"][1]))
            rows.append((f"replicator CPU s per 1,000 transactions ({label})", w["distributary"][2],
                         w["litestream"][2]))
        b = t["busy0"]
        rows.append(("busy-timeout-0 app: statements refused with SQLITE_BUSY", b["distributary"]["busy"],
                     b["litestream"]["busy"]))
        rows.append(("busy-timeout-0 app: replicator write-lock hold p99 (ms, bucket)",
                     b["distributary"]["hold_p99"] * 1000, "–"))
    return rows


def print_table(results, cfg, versions):
    print()
    print("| metric | Distributary | Litestream " + versions["litestream"] + " | Distributary / Litestream |")
    print("|---|---:|---:|---:|")
    for metric, ours, theirs in rows_for(results, cfg):
        print(f"| {metric} | {fmt(ours)} | {fmt(theirs)} | {ratio(ours, theirs)} |")
    print()
    if "s3" in results:
        a = results["s3"]["active"]
        print(f"S3 windows: {a['seconds']:.0f} s active ({a['written']} transactions, {cfg.rate}/s, ~300-byte rows, "
              f"same rows to both) then {results['s3']['idle']['seconds']:.0f} s idle, counted at a proxy in front of "
              "moto, scaled to one hour; month = 730 h.")
        print("Prices (S3 Standard, us-east-1): PUT, COPY, POST, LIST $0.005 per 1,000; GET, HEAD and other "
              "$0.0004 per 1,000; DELETE free. Storage and transfer not included.")
        compactor = ("`distributary compact --watch` in its own process" if cfg.compaction == "watch"
                     else "its compactor in the same process (`--compaction local`)")
        print(f"Distributary = `distributary replicate` + {compactor} (defaults: every 10 s, 1 min L1 windows, "
              "1 h snapshots); Litestream = `litestream replicate` (defaults; it compacts itself).")
        errors, last = results["s3"]["reader_errors"], results["s3"]["reader_last"]
        print("One reader each, through its own proxy, in both windows, asked `SELECT max(id)` once a second: "
              f"`edge-reader serve --poll {READER_POLL}` (default --manifest-interval) on Distributary's bucket, the "
              "Litestream VFS (1 s poll) in the sqlite3 CLI on Litestream's; failed queries to edge-reader: "
              f"{errors['distributary-reader']}, lines the VFS logged: {errors['litestream-reader']}; last max(id) "
              f"seen (rows: {cfg.seed_rows:,} seeded + {results['s3']['active']['written']:,} written): edge-reader "
              f"{fmt(last['distributary-reader'])}, VFS {fmt(last['litestream-reader'])}.")
    if "lag" in results:
        n = results["lag"]["distributary"][2] if results["lag"]["distributary"] else 0
        print(f"Lag: {cfg.lag_writes} writes 0.2-0.6 s apart ({n} seen by our reader), reader polls every 10 ms; "
              "edge-reader serve --poll 1s vs the Litestream VFS (1 s poll); file:// stores.")
    if "throughput" in results:
        t = results["throughput"]
        print(f"Throughput: {cfg.throughput_transactions} transactions per burst, {cfg.throughput_rounds} cycles of "
              "interleaved bursts (bench/bursts.py), the ratio is the median of each cycle's; "
              f"single-row: {t['single']['distributary'][0]:,.0f} txn/s under Distributary, "
              f"{t['single']['litestream'][0]:,.0f} under Litestream. Busy-timeout-0 app: {cfg.busy0_seconds} s "
              "beside each (bench/busy0.py).")
    print(f"Sync interval: {SYNC_INTERVAL} for both (each tool's default).")
    if "s3" in results:
        print_cost_table(results["s3"], cfg, versions["litestream"])


def versions(binaries):
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=litestream_env()).stdout.strip()
        except OSError:
            return "?"
    vfs = subprocess.run([sys.executable, "-m", "pip", "show", "litestream-vfs"], capture_output=True,
                         text=True).stdout
    vfs_version = next((l.split()[1] for l in vfs.splitlines() if l.startswith("Version:")), "?")
    moto = out([sys.executable, "-c", "import moto; print(moto.__version__)"])
    return {"distributary": out([binaries["distributary"], "--version"]),
            "edge-reader": out([binaries["edge-reader"], "--version"]),
            "litestream": out([binaries["litestream"], "version"]),
            "litestream-vfs": vfs_version, "moto": moto,
            "sqlite3 CLI": out(["sqlite3", "--version"]).split(" ")[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1-minute windows (~5 min)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument("--window", type=int, help="seconds of each S3 window (default 300, --quick 60)")
    parser.add_argument("--restore-db-mb", type=int, help="MiB of rows for the restore (default 1000: 1.06 GB)")
    parser.add_argument("--compaction", choices=("local", "watch"), default="local",
                        help="s3 section: Distributary compacts in the replicator's process (local, the default, "
                             "as Litestream does) or in `distributary compact --watch` beside it (watch)")
    parser.add_argument("--cdn-json", metavar="PATH",
                        help="the cdn section's result, for the cost table's row of readers behind a CDN")
    args = parser.parse_args()
    cfg = settings(args.quick)
    cfg.compaction = args.compaction
    cfg.cdn_path = args.cdn_json
    cfg.cdn = load_cdn(args.cdn_json) if args.cdn_json else None
    cfg.quick = args.quick
    if args.window:
        cfg.window = args.window
    if args.restore_db_mb:
        cfg.db_mb = args.restore_db_mb
    sections = [s for s in args.only.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            sys.exit(f"unknown section {s}; choose from {', '.join(SECTIONS)}")
    binaries = {"distributary": common.binary("distributary"), "edge-reader": common.binary("edge-reader"),
                "litestream": common.litestream()}
    for name, path in binaries.items():
        if not (os.path.exists(path) or shutil.which(path)):
            sys.exit(f"not found: {name} ({path}); run scripts/bench, which builds and installs them")
    work = tempfile.mkdtemp(prefix="bench-suite-", dir="/tmp")
    # The restore holds two primaries, two stores and a restored copy at once.
    need = cfg.db_mb * 2**20 * 4.5 if "restore" in sections else 0
    if shutil.disk_usage(work).free < need:
        shutil.rmtree(work, ignore_errors=True)
        sys.exit(f"the restore of {cfg.db_mb} MiB needs about {need / 2**30:.1f} GiB free in /tmp; "
                 f"{shutil.disk_usage('/tmp').free / 2**30:.1f} GiB are (use --restore-db-mb)")
    vers = versions(binaries)
    print(f"machine: {common.machine(work)}")
    print("versions: " + "; ".join(f"{k} {v}" for k, v in vers.items()))
    print(f"mode: {'--quick (smoke sizes, NOT the >= 1 GB restore)' if args.quick else 'full'}; sections: {', '.join(sections)}")
    began = time.time()
    results = {}
    runners = {"restore": run_restore, "lag": run_lag, "throughput": run_throughput, "s3": run_s3, "many": run_many,
               "cdn": run_cdn, "lazy": run_lazy}
    try:
        for section in SECTIONS:
            if section in sections:
                t = time.time()
                print(f"\n== {section} ==", flush=True)
                results[section] = runners[section](cfg, work, binaries)
                print(f"== {section}: {time.time() - t:.0f} s", flush=True)
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine at the end: {common.machine('/tmp')}")
    print(f"total time: {time.time() - began:.0f} s")
    print_table(results, cfg, vers)


if __name__ == "__main__":
    main()
