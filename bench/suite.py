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
              from /proc. Distributary's column includes `distributary compact
              --watch` (its defaults) on the same proxy, because Litestream
              compacts inside its replicator.
  cdn         tests/src/bin/cdn_bench.rs (run_cdn below): 1,000 then 10,000
              simulated edge readers (serve's protocol, in-memory replicas, one
              process) behind nginx running the CDN block of docs/DEPLOY.md, the
              real replicator shipping 10 commits/s to moto: origin and reader
              requests/s, hit ratio, lag p50/p99, CPU. Its own table, and JSON.
  many        bench/many.py: 1,000 idle databases in one process (a folder,
              `replicate --dir` beside Litestream's `dir:`): threads,
              descriptors, RSS, idle CPU and store writes, then 10 written at
              once and their lag to the store (--quick: 100 databases).

Usage: python3 bench/suite.py [--quick] [--only restore,lag,throughput,s3,many,cdn]
"""
import argparse, http.client, os, random, shutil, sqlite3, statistics, subprocess, sys, tempfile, threading, time
from types import SimpleNamespace

import bursts, busy0, common, many, restore, s3proxy, serve
from common import ProcStats, free_port, litestream_env, quantile, stop, wait_for

SECTIONS = ("restore", "lag", "throughput", "s3", "many", "cdn")
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


def run_s3(cfg, work, binaries):
    folder = os.path.join(work, "s3")
    os.makedirs(folder)
    moto, moto_port = start_moto()
    procs, proxies, keepers = {}, {}, []
    logs = open(os.path.join(folder, "replicators.log"), "wb")
    try:
        for tool in ("distributary", "litestream"):
            create_bucket(moto_port, tool)
        # The compactor gets its own proxy to the same bucket, so the table can
        # say which of Distributary's two processes made the requests.
        proxies = {name: s3proxy.CountingProxy(moto_port) for name in ("distributary", "compactor", "litestream")}
        dbs = {tool: os.path.join(folder, tool + ".db") for tool in ("distributary", "litestream")}
        keepers = [seed_database(db, cfg.seed_rows) for db in dbs.values()]
        env = litestream_env(S3_ENV)
        url = "s3://distributary/db?endpoint=http://127.0.0.1:{}&region=us-east-1".format
        procs["distributary"] = subprocess.Popen(
            [binaries["distributary"], "replicate", "--sync-interval", SYNC_INTERVAL, dbs["distributary"],
             url(proxies["distributary"].port)], stdout=logs, stderr=logs, env=env)
        procs["compactor"] = subprocess.Popen(
            [binaries["distributary"], "compact", "--watch", url(proxies["compactor"].port)],
            stdout=logs, stderr=logs, env=env)
        config = os.path.join(folder, "litestream.yml")
        litestream_config(config, dbs["litestream"], "litestream", proxies["litestream"].port)
        procs["litestream"] = subprocess.Popen([binaries["litestream"], "replicate", "-config", config],
                                               stdout=logs, stderr=logs, env=env)
        # The initial snapshot of each is not part of either window.
        for tool in ("distributary", "litestream"):
            wait_for(lambda: proxies[tool].snapshot()[0]["PUT"] > 0, f"{tool}'s first upload", timeout=120)
        time.sleep(15)
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
        peak = {name: st.peak_rss_mb() for name, st in stats.items()}
        return {"active": active, "idle": idle, "lifetime_peak_rss": peak}
    finally:
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
        return f"{ours / theirs:.2f}"
    return "–"


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
            per_hour = 3600 / w["seconds"]
            counts = {name: {k: v * per_hour for k, v in w["requests"][name][0].items()} for name in w["requests"]}
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
            uploaded = {name: w["requests"][name][1] * per_hour / 1e6 for name in w["requests"]}
            rows.append((f"{phase}: MB uploaded per hour", uploaded["distributary"] + uploaded["compactor"],
                         uploaded["litestream"]))
            rows.append((f"{phase}: replicator CPU (s per hour)", w["cpu"]["distributary"] * per_hour,
                         w["cpu"]["litestream"] * per_hour))
            rows.append((f"{phase}: compactor CPU (s per hour; Litestream's is in its replicator)",
                         w["cpu"]["compactor"] * per_hour, "in replicator"))
            rows.append((f"{phase}: replicator peak RSS (MB)", w["rss"]["distributary"], w["rss"]["litestream"]))
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
        print("Distributary = `distributary replicate` + `distributary compact --watch` (defaults: every 10 s, "
              "1 min L1 windows, 1 h snapshots); Litestream = `litestream replicate` (defaults; it compacts itself).")
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
    args = parser.parse_args()
    cfg = settings(args.quick)
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
               "cdn": run_cdn}
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
