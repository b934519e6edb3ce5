#!/usr/bin/env python3
"""What a replicator's read transaction alone costs the app (issue #14).

The app is the single-row INSERT loop of bench/replicate.py. Beside it, in
another process, a "holder" that does no capture work at all:

- none:   no holder (the app alone);
- hold:   one read transaction held for the whole run (it blocks every WAL
          restart, as a replicator's read mark does);
- rotate: two read transactions leapfrogging every 5 ms (the mark follows
          the WAL's end closely, but one is always held, so the WAL still
          never restarts).

Prints the app's rate per mode (median of --rounds, interleaved) and the
ratio to no holder. The finding it records: the cost is the WAL that never
restarts (it grows without bound and every commit's autocheckpoint and page
lookup walks it), not the replicator's work; a replicator keeps the app's
throughput only if the WAL restarts about as often as it would alone.

Usage: python3 bench/read_holder.py [--transactions 60000] [--rounds 3]
"""
import argparse, mmap, multiprocessing, struct, os, shutil, sqlite3, statistics, tempfile, time

from common import events_db
from replicate import write_workload


def begin(connection):
    connection.execute("BEGIN")
    connection.execute("SELECT count(*) FROM sqlite_schema").fetchall()


def shm_header(shm):
    """(mxFrame, salt-1, nBackfill) from the WAL index's first header copy."""
    mx_frame, = struct.unpack_from("=I", shm, 16)
    salt1, = struct.unpack_from("=I", shm, 32)
    backfill, = struct.unpack_from("=I", shm, 96)
    return mx_frame, salt1, backfill


def window_holder(db, started, stop, threshold=1000):
    """Holds a read transaction, and lets go of it whenever the WAL holds
    `threshold` frames, until the app has restarted the WAL."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    begin(conn)
    fd = os.open(db + "-shm", os.O_RDONLY)
    shm = mmap.mmap(fd, 32768, prot=mmap.PROT_READ)
    started.set()
    windows = 0
    tick = float(os.environ.get("WINDOW_TICK", "0.001"))
    while not stop.is_set():
        time.sleep(tick)
        mx_frame, salt1, _ = shm_header(shm)
        if mx_frame < threshold:
            continue
        conn.execute("COMMIT")
        windows += 1
        deadline = time.time() + 0.05
        while time.time() < deadline:
            now_frame, now_salt, _ = shm_header(shm)
            if now_salt != salt1 or now_frame < mx_frame:
                break
            time.sleep(0.0002)
        begin(conn)
    print("windows", windows)


def holder(db, mode, started, stop):
    if mode == "window":
        return window_holder(db, started, stop)
    first = sqlite3.connect(db, isolation_level=None, timeout=10)
    second = sqlite3.connect(db, isolation_level=None, timeout=10)
    begin(first)
    current, other = first, second
    started.set()
    while not stop.is_set():
        time.sleep(0.005)
        if mode == "rotate":
            begin(other)
            current.execute("COMMIT")
            current, other = other, current


def run(mode, transactions):
    work = tempfile.mkdtemp(prefix="bench-holder-")
    db = os.path.join(work, "app.db")
    conn = events_db(db)
    started, stop = multiprocessing.Event(), multiprocessing.Event()
    process = None
    if mode != "none":
        process = multiprocessing.Process(target=holder, args=(db, mode, started, stop))
        process.start()
        started.wait(30)
    rate = write_workload(db, transactions)
    wal_bytes = os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0
    stop.set()
    if process:
        process.join()
    conn.close()
    shutil.rmtree(work, ignore_errors=True)
    return rate, wal_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=60000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    modes = ["none", "hold", "rotate", "window"]
    rates = {mode: [] for mode in modes}
    wal = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            rate, wal_bytes = run(mode, args.transactions)
            rates[mode].append(rate)
            wal[mode].append(wal_bytes)
    base = statistics.median(rates["none"])
    print("| holder | app rate (tx/s) | ratio | WAL at the end |")
    print("|---|---|---|---|")
    for mode in modes:
        rate = statistics.median(rates[mode])
        print("| %s | %d | %.2f | %.1f MiB |" % (mode, rate, rate / base, statistics.median(wal[mode]) / 2**20))


if __name__ == "__main__":
    main()
