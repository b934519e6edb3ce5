#!/usr/bin/env python3
"""An app with SQLite's default busy timeout of 0 beside each replicator
(issue #14): it commits continuously for --seconds, with schema changes
(ALTER TABLE, CREATE/DROP INDEX, DROP TABLE, VACUUM) between batches of
writes, and counts every `database is locked` (SQLITE_BUSY) it receives.
Modes run interleaved, --rounds times: no replicator, `distributary
replicate` (file:// store, 1 s sync interval, --metrics-addr scraped for the
write-lock hold histogram) and `litestream replicate` (0.5.x). After each
distributary round the store is restored and compared with the primary row
for row.

Prints, per mode, medians of: transactions committed, BUSY errors, and
(distributary) the p99 write-lock hold time from
distributary_write_lock_hold_seconds.

Usage: python3 bench/busy0.py [--seconds 60] [--rounds 3]
  DISTRIBUTARY, LITESTREAM: as in bench/common.py
"""
import argparse, hashlib, os, shutil, sqlite3, statistics, subprocess, sys, tempfile, time, urllib.request

import common


def app(db, seconds):
    """The app: busy timeout 0 (SQLite's default), writes in batches with a
    schema change after each. Returns (transactions committed, statements
    refused with SQLITE_BUSY, episodes: runs of refusals between successes —
    one hold of the lock refuses every statement the app tries meanwhile)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    committed = busy = episodes = 0
    failing = False
    deadline = time.time() + seconds
    step = 0

    def attempt(sql, params=()):
        nonlocal committed, busy, episodes, failing
        try:
            conn.execute(sql, params)
            committed += 1
            failing = False
            return True
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            busy += 1
            episodes += 0 if failing else 1
            failing = True
            return False

    while time.time() < deadline:
        for i in range(50):
            attempt("INSERT INTO events (body, n) VALUES (?, ?)", ("event %d %s" % (i, "x" * (i * 7 % 300)), i))
            if i % 10 == 0:
                attempt("UPDATE events SET n = n + 1 WHERE id % 13 = ?", (i % 13,))
        schema = [
            "ALTER TABLE events ADD COLUMN extra%d TEXT" % step,
            "CREATE INDEX IF NOT EXISTS events_n ON events (n)",
            "CREATE TABLE IF NOT EXISTS scratch%d (id INTEGER PRIMARY KEY, v TEXT)" % step,
            "DROP INDEX IF EXISTS events_n",
            "DROP TABLE IF EXISTS scratch%d" % step,
        ]
        for sql in schema:
            attempt(sql)
        if step % 10 == 9:
            attempt("DELETE FROM events WHERE id % 3 = 0")
            attempt("VACUUM")
        step += 1
    conn.close()
    return committed, busy, episodes


def content_digest(db):
    """A digest of every row of every table, in order (equal databases have
    equal digests whatever their page layout)."""
    conn = sqlite3.connect(db)
    digest = hashlib.sha256()
    for (name,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"):
        digest.update(name.encode())
        for row in conn.execute('SELECT * FROM "%s" ORDER BY rowid' % name.replace('"', '""')):
            digest.update(repr(row).encode())
    conn.close()
    return digest.hexdigest()


def hold_p99(metrics_text):
    """The p99 of the hold-time histogram, as the upper bound of its bucket."""
    buckets, count = [], 0
    for line in metrics_text.splitlines():
        if line.startswith("distributary_write_lock_hold_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), int(line.rsplit(" ", 1)[1])))
        elif line.startswith("distributary_write_lock_hold_seconds_count"):
            count = int(line.rsplit(" ", 1)[1])
    if count == 0:
        return 0.0, 0
    for bound, cumulative in buckets:
        if cumulative >= 0.99 * count:
            return bound, count
    return float("inf"), count


def run(mode, seconds, binaries):
    work = tempfile.mkdtemp(prefix="bench-busy0-")
    db = os.path.join(work, "app.db")
    store = os.path.join(work, "store")
    common.events_db(db, "body TEXT, n INTEGER").close()
    proc, port = None, common.free_port()
    if mode == "distributary":
        proc = subprocess.Popen([binaries["distributary"], "replicate", "--sync-interval", "1s", "--metrics-addr",
                                 "127.0.0.1:%d" % port, db, "file://" + store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        common.wait_for(lambda: os.path.exists(os.path.join(store, "manifest.json")), "the first upload", 60)
    elif mode == "litestream":
        proc = subprocess.Popen([binaries["litestream"], "replicate", db, "file://" + store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=common.litestream_env())
        time.sleep(2)
    committed, busy, episodes = app(db, seconds)
    result = {"committed": committed, "busy": busy, "busy_episodes": episodes}
    if mode == "distributary":
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
        result["hold_p99"], result["holds"] = hold_p99(text)
    common.stop(proc)
    if mode == "distributary":
        restored = os.path.join(work, "restored.db")
        subprocess.run([binaries["distributary"], "restore", "file://" + store, "-o", restored,
                        "--integrity-check", "full"], check=True, stdout=subprocess.DEVNULL)
        result["restored_equal"] = content_digest(restored) == content_digest(db)
    shutil.rmtree(work, ignore_errors=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binaries = {"distributary": common.binary("distributary"), "litestream": common.litestream()}
    modes = ["none", "distributary"]
    if shutil.which(binaries["litestream"]) or os.path.exists(binaries["litestream"]):
        modes.append("litestream")
    print("machine:", common.machine())
    results = {mode: [] for mode in modes}
    for round_ in range(args.rounds):
        for mode in modes:
            result = run(mode, args.seconds, binaries)
            results[mode].append(result)
            print("round %d %-12s %s" % (round_ + 1, mode, result), flush=True)
    print("\n%d s per run, %d rounds, medians:" % (args.seconds, args.rounds))
    print("| replicator | statements committed | refused with SQLITE_BUSY (episodes) | write-lock hold p99 | restore equal |")
    print("|---|---|---|---|---|")
    for mode in modes:
        rows = results[mode]
        committed = statistics.median(r["committed"] for r in rows)
        busy = statistics.median(r["busy"] for r in rows)
        episodes = statistics.median(r["busy_episodes"] for r in rows)
        p99 = ("%.2f ms (%d holds)" % (statistics.median(r["hold_p99"] for r in rows) * 1000,
                                        statistics.median(r["holds"] for r in rows))) if mode == "distributary" else "-"
        equal = ("%d/%d" % (sum(r["restored_equal"] for r in rows), len(rows))) if mode == "distributary" else "-"
        print("| %s | %d | %d (%d) | %s | %s |" % (mode, committed, busy, episodes, p99, equal))
    if any(not r["restored_equal"] for r in results["distributary"]):
        sys.exit("a restored database differs from the primary")


if __name__ == "__main__":
    main()
