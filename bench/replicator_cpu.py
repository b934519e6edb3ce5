#!/usr/bin/env python3
"""Replicator CPU at a steady write rate: a 20,000-row WAL database, `BINARY
replicate --sync-interval 1s` to a file:// store, 10 single-row commits a
second for SECONDS; prints the replicator's utime+stime over that window,
scaled to an hour. Used to compare two builds interleaved (docs/BENCHMARKS.md).

Usage: python3 bench/replicator_cpu.py BINARY SECONDS
"""
import os, sqlite3, subprocess, sys, tempfile, time
binary = sys.argv[1]; secs = int(sys.argv[2])
d = tempfile.mkdtemp()
db = os.path.join(d, "app.db")
c = sqlite3.connect(db, isolation_level=None); c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
c.execute("BEGIN")
for i in range(20000): c.execute("INSERT INTO t (body) VALUES (?)", ("x" * 300,))
c.execute("COMMIT")
p = subprocess.Popen([binary, "replicate", "--sync-interval", "1s", db, "file://" + os.path.join(d, "store")], stderr=subprocess.DEVNULL)
time.sleep(5)
def cpu():
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
c0 = cpu(); t0 = time.time(); n = 0
while time.time() - t0 < secs:
    c.execute("INSERT INTO t (body) VALUES (?)", ("y" * 300,)); n += 1
    time.sleep(max(0, t0 + n / 10 - time.time()))
c1 = cpu()
p.terminate(); p.wait()
print(f"{os.path.basename(binary)}: {n} txn in {secs} s, replicator CPU {c1 - c0:.2f} s = {(c1 - c0) * 3600 / secs:.1f} s/h")
