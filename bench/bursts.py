#!/usr/bin/env python3
"""App write throughput beside each replicator, measured in interleaved
bursts (issue #14): one database per mode (none, distributary, litestream),
each replicator started once and left running for the whole invocation, and
the same app processes writing a burst into each database in turn.

Why bursts: on a shared 2-core machine the app's rate alone swings by a
third from one minute to the next (10,200 to 15,500 single-row txn/s in one
hour), far more than the 3% the goal is about. bench/replicate.py starts a
fresh replicator per run, so its runs are ~10 s apart and few; here a cycle
of three bursts takes ~10 s and each burst is paired with the burst without
a replicator in the same cycle. The orders form a Williams square: over
every n cycles (2n for an odd number of modes) each mode follows each other
mode equally often. A burst pays for what the one before it left behind (a
slow Litestream burst leaves the disk less writeback to do than a fast one),
so with a plain rotation the first mode mostly followed Litestream and read
~4% faster than an identical second database with no replicator
(`--control`, single-row, 40 cycles). After each burst the app pauses (--pause, longer
than the 1 s sync interval) so a replicator's last upload of its burst lands
in its own pause, not in the next mode's burst.

Workloads (bench/replicate.py's):
- single: single-row INSERT transactions from one connection, --transactions per burst;
- writers4: 4 writer processes, each committing --transactions/4 transactions of two
  UPDATEs and one INSERT (BEGIN IMMEDIATE, busy timeout 10 s); the burst lasts until
  the last writer is done;
- writers4-timed: the same four writers committing for --seconds each, counted.

Prints per mode: median app txn/s, its ratio to the median without a
replicator, the median of the per-cycle ratios, replicator CPU per 1,000
transactions (its CPU from the start of its bursts to the end of their
pauses), peak RSS, stored bytes per transaction and write-lock holds.

Usage: python3 bench/bursts.py [--workload single|writers4|writers4-timed|all] [--bursts 12]
         [--transactions 30000] [--seconds 4] [--pause 1.5] [--control] [--no-litestream]
         [--variant NAME='ARGS']...
  --control: a second database with no replicator ("none-again"), paired with the first
    like the replicators are: the spread its ratio shows is the machine's, not a replicator's.
  --variant: one more distributary mode, "distributary-NAME", started with ARGS added to
    `replicate` (e.g. --variant ck400='--checkpoint-frames 400'); two tokens are the
    script's own: nice=N starts it at that niceness, store=DIR puts its store under DIR.
  DISTRIBUTARY, LITESTREAM: as for bench/replicate.py
"""
import argparse, multiprocessing, os, random, shlex, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

import busy0, common, replicate
from common import ProcStats, dir_bytes, litestream_env

SYNC_INTERVAL = "1s"


def app_process(commands, results, index):
    """One app process: keeps a connection per database, as apps do, and
    runs each burst it is sent: ("single"|"count"|"timed", db, amount, offset)."""
    import sqlite3
    conns = {}
    for kind, db, amount, offset in iter(commands.get, None):
        conn = conns.get(db)
        if conn is None:
            conn = conns[db] = sqlite3.connect(db, isolation_level=None, timeout=10)
        start, done = time.perf_counter(), 0
        if kind == "single":
            for i in range(offset, offset + amount):
                conn.execute("INSERT INTO events (body) VALUES (?)", ("event %d %s" % (i, "x" * (i % 400)),))
            done = amount
        elif kind == "count":
            for i in range(offset, offset + amount):
                replicate.move(conn, index, i)
            done = amount
        else:
            deadline = start + amount
            while time.perf_counter() < deadline:
                replicate.move(conn, index, offset + done)
                done += 1
        results.put((index, done, time.perf_counter() - start))
    for conn in conns.values():
        conn.close()


class App:
    """The app's processes: one for single, four for the writers."""

    def __init__(self, writers):
        self.results = multiprocessing.Queue()
        self.queues = [multiprocessing.Queue() for _ in range(writers)]
        self.procs = [multiprocessing.Process(target=app_process, args=(q, self.results, i), daemon=True)
                      for i, q in enumerate(self.queues)]
        for p in self.procs:
            p.start()

    def burst(self, kind, db, amount, offset):
        """Runs one burst on every process; returns (transactions, seconds)."""
        start = time.perf_counter()
        for q in self.queues:
            q.put((kind, db, amount, offset))
        done = [self.results.get() for _ in self.queues]
        transactions = sum(d[1] for d in done)
        # A timed burst lasts its window; a counted one until its last writer is done.
        seconds = amount if kind == "timed" else time.perf_counter() - start
        return transactions, seconds

    def close(self):
        for q in self.queues:
            q.put(None)
        for p in self.procs:
            p.join()


class Replicator:
    """One mode's database and the replicator beside it for the whole invocation."""

    def __init__(self, mode, work, create, binaries, variants):
        self.mode = mode
        self.db = os.path.join(work, mode + ".db")
        extra, nice, store_root = parse_variant(variants.get(mode, ""), work)
        self.store = os.path.join(store_root, mode + "-store")
        self.keeper = create(self.db)  # the app keeps a connection open, as apps do
        self.proc, self.stats, self.cpu, self.peak_rss = None, None, 0.0, 0.0
        self.metrics_url = None
        if mode.startswith("distributary"):
            port = common.free_port()
            self.metrics_url = f"http://127.0.0.1:{port}/metrics"
            argv = [binaries["distributary"], "replicate", "--sync-interval", SYNC_INTERVAL,
                    "--metrics-addr", f"127.0.0.1:{port}", *extra, self.db, "file://" + self.store]
        elif mode == "litestream":
            argv = [binaries["litestream"], "replicate", self.db, "file://" + self.store]
        else:
            return
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=litestream_env(),
                                     preexec_fn=(lambda: os.nice(nice)) if nice else None)
        self.stats = ProcStats(self.proc.pid)

    def cpu_seconds(self):
        return self.stats.cpu_seconds() if self.stats else 0.0

    def holds(self):
        """(p99 bucket, count) of the write-lock hold histogram, distributary only."""
        if not self.metrics_url:
            return 0.0, 0
        return busy0.hold_p99(urllib.request.urlopen(self.metrics_url, timeout=5).read().decode())

    def close(self):
        if self.proc:
            self.peak_rss = self.stats.peak_rss_mb()
            common.stop(self.proc)
        self.keeper.close()


def balanced_orders(modes):
    """Orders of `modes`, one per cycle, in which every mode directly follows
    every other mode equally often (a Williams design): for n modes the rows
    of one square (n even) or of a square and its mirror (n odd)."""
    n = len(modes)
    first = [0] + [(k + 1) // 2 if k % 2 else n - k // 2 for k in range(1, n)]
    rows = [[(x + shift) % n for x in first] for shift in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [[modes[i] for i in row] for row in rows]


def parse_variant(spec, work):
    """(replicate arguments, niceness, store root) of a --variant's ARGS."""
    extra, nice, store_root = [], 0, work
    for token in shlex.split(spec):
        if token.startswith("nice="):
            nice = int(token[5:])
        elif token.startswith("store="):
            store_root = tempfile.mkdtemp(prefix="bench-bursts-store-", dir=token[6:])
        else:
            extra.append(token)
    return extra, nice, store_root


WORKLOADS = {"single": (common.events_db, 1, "single"),
             "writers4": (replicate.accounts_db, replicate.WRITERS, "count"),
             "writers4-timed": (replicate.accounts_db, replicate.WRITERS, "timed")}


def measure(workload, modes, binaries, bursts, transactions, seconds, pause, variants=None):
    """Runs `bursts` cycles; returns {mode: {"rates": [...], "transactions": n,
    "cpu": s, "rss": MiB, "stored": bytes, "holds": (p99, count)}}."""
    create, writers, kind = WORKLOADS[workload]
    work = tempfile.mkdtemp(prefix="bench-bursts-")
    replicators = {mode: Replicator(mode, work, create, binaries, variants or {}) for mode in modes}
    app = App(writers)
    results = {mode: {"rates": [], "transactions": 0, "cpu": 0.0} for mode in modes}
    try:
        time.sleep(3)  # every replicator has started and made its first upload
        amount = seconds if kind == "timed" else transactions // writers
        orders = balanced_orders(modes)
        for cycle in range(bursts):
            for mode in orders[cycle % len(orders)]:
                r, result = replicators[mode], results[mode]
                cpu_before = r.cpu_seconds()
                done, elapsed = app.burst(kind, r.db, amount, cycle * 1_000_000)
                time.sleep(pause)  # its last upload lands here, not in the next burst
                result["cpu"] += r.cpu_seconds() - cpu_before
                result["rates"].append(done / elapsed)
                result["transactions"] += done
        for mode, r in replicators.items():
            results[mode]["holds"] = r.holds()
    finally:
        app.close()
        for r in replicators.values():
            r.close()
    for mode, r in replicators.items():
        results[mode]["rss"] = r.peak_rss
        results[mode]["stored"] = dir_bytes(r.store) if os.path.exists(r.store) else 0
        if not r.store.startswith(work):
            shutil.rmtree(os.path.dirname(r.store), ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return results


def ratios(results, mode):
    """(ratio of median rates, median of the per-cycle ratios) to no replicator."""
    rates, alone = results[mode]["rates"], results["none"]["rates"]
    return (statistics.median(rates) / statistics.median(alone),
            statistics.median(r / n for r, n in zip(rates, alone)))


def paired_interval(results, mode, resamples=2000):
    """A 95% bootstrap interval of the median per-cycle ratio: cycles drawn
    again with replacement, so a run says how far its median can be trusted
    on a machine whose rate drifts between cycles."""
    per_cycle = [r / n for r, n in zip(results[mode]["rates"], results["none"]["rates"])]
    draw = random.Random(14)
    medians = sorted(statistics.median(draw.choices(per_cycle, k=len(per_cycle))) for _ in range(resamples))
    return medians[int(resamples * 0.025)], medians[int(resamples * 0.975) - 1]


def print_table(workload, results, args):
    size = f"{args.seconds} s" if workload.endswith("-timed") else f"{args.transactions} transactions"
    print(f"\n{workload}: {args.bursts} cycles of one burst per mode ({size} each, orders balanced for carry-over, "
          f"{args.pause} s pause), medians; local-folder store, {SYNC_INTERVAL} sync interval")
    print("| replicator | app txn/s | vs none | vs none, per cycle (95% interval) | replicator CPU s per 1,000 txn "
          "| peak RSS MiB | stored bytes per txn | write-lock holds, p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    cpu = {}
    for mode, result in results.items():
        rate = statistics.median(result["rates"])
        if mode == "none":
            print(f"| none | {rate:,.0f} | 1.00 | 1.00 | – | – | – | – |")
            continue
        of_medians, per_cycle = ratios(results, mode)
        low, high = paired_interval(results, mode)
        paired = f"{per_cycle:.3f} ({low:.3f}–{high:.3f})"
        if mode == "none-again":
            print(f"| none, a second database | {rate:,.0f} | {of_medians:.3f} | {paired} | – | – | – | – |")
            continue
        cpu[mode] = result["cpu"] / result["transactions"] * 1000
        p99, count = result["holds"]
        holds = f"{count}, p99 bucket {p99 * 1000:.2f} ms" if count else ("none" if mode.startswith("distributary") else "–")
        print(f"| {mode} | {rate:,.0f} | {of_medians:.3f} | {paired} | {cpu[mode]:.4f} | {result['rss']:.1f} "
              f"| {result['stored'] / result['transactions']:.0f} | {holds} |")
    if cpu.get("litestream"):
        print(f"replicator CPU, distributary / litestream: {cpu['distributary'] / cpu['litestream']:.2f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--bursts", type=int, default=12, help="cycles of one burst per mode")
    parser.add_argument("--transactions", type=int, default=30000, help="per burst (single, writers4)")
    parser.add_argument("--seconds", type=float, default=4, help="per burst (writers4-timed)")
    parser.add_argument("--pause", type=float, default=1.5, help="after each burst")
    parser.add_argument("--control", action="store_true", help="a second database with no replicator")
    parser.add_argument("--no-litestream", action="store_true", help="leave Litestream out")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="one more distributary mode, started with ARGS")
    args = parser.parse_args()
    binaries, modes = common.replicators()
    if args.no_litestream and "litestream" in modes:
        modes.remove("litestream")
    if args.control:
        modes.insert(1, "none-again")
    variants = {}
    for spec in args.variant:
        name, _, extra = spec.partition("=")
        variants["distributary-" + name] = extra
        modes.append("distributary-" + name)
    print(common.machine())
    for workload in (list(WORKLOADS) if args.workload == "all" else [args.workload]):
        print_table(workload, measure(workload, modes, binaries, args.bursts, args.transactions, args.seconds,
                                      args.pause, variants), args)


if __name__ == "__main__":
    sys.exit(main())
