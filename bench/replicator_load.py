#!/usr/bin/env python3
"""One replicator under a tight write loop, from the inside (issue #14).

Runs `distributary replicate` (file:// store, 1 s sync interval, metrics on a
free loopback port, any extra arguments passed through) beside the
single-row INSERT loop of bench/replicate.py, then prints the app's rate, the
replicator's CPU time over the loop (/proc/PID/stat), and from /metrics the
write-lock holds (count, total), the checkpoints and the catch-ups. With
--none it first runs the loop alone for the ratio.

Usage: python3 bench/replicator_load.py [--transactions 60000] [--none] [-- EXTRA REPLICATE ARGS]
  DISTRIBUTARY: as in bench/common.py
"""
import argparse, os, shutil, subprocess, tempfile, urllib.request

import common
from replicate import write_workload


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fresh_db(work):
    db = os.path.join(work, "app.db")
    return db, common.events_db(db)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=60000)
    parser.add_argument("--none", action="store_true", help="also run the loop without a replicator")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    binary = common.binary("distributary")

    alone = None
    if args.none:
        work = tempfile.mkdtemp(prefix="bench-load-")
        db, keeper = fresh_db(work)
        alone = write_workload(db, args.transactions)
        keeper.close()
        shutil.rmtree(work, ignore_errors=True)

    work = tempfile.mkdtemp(prefix="bench-load-")
    db, keeper = fresh_db(work)
    store = os.path.join(work, "store")
    port = common.free_port()
    proc = subprocess.Popen([binary, "replicate", "--sync-interval", "1s", "--metrics-addr", "127.0.0.1:%d" % port,
                             *args.extra, db, "file://" + store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    common.wait_for(lambda: os.path.exists(os.path.join(store, "manifest.json")), "the first upload", 60)
    before = cpu_seconds(proc.pid)
    rate = write_workload(db, args.transactions)
    used = cpu_seconds(proc.pid) - before
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    common.stop(proc)
    keeper.close()
    shutil.rmtree(work, ignore_errors=True)

    print("app rate: %d tx/s%s" % (rate, "" if alone is None else " (alone %d: ratio %.2f)" % (alone, rate / alone)))
    print("replicator CPU: %.2f s over the loop (%.3f s per 1,000 transactions)"
          % (used, used * 1000 / args.transactions))
    for line in metrics.splitlines():
        if line.startswith(("distributary_write_lock_hold_seconds_sum", "distributary_write_lock_hold_seconds_count",
                            "distributary_checkpoints_total", "distributary_catch_ups_total")):
            print(line)


if __name__ == "__main__":
    main()
