#!/usr/bin/env bash
# The main job end to end, on a local folder as the object store (no cloud
# account, no server): an app database in WAL mode is replicated, compacted,
# followed by an edge replica that answers a query, and restored.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p distributary -p edge-reader
bin="${CARGO_TARGET_DIR:-target}/debug"
demo="${1:-demo}"
rm -rf "$demo" && mkdir -p "$demo" && demo="$(cd "$demo" && pwd)"
store="file://$demo/store"
step() { printf '\n== %s\n' "$*"; }

step "an app writes to $demo/app.db (WAL mode)"
python3 - "$demo/app.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT, balance INTEGER)")
for i in range(1000):
    db.execute("INSERT INTO accounts (owner, balance) VALUES (?, 100)", (f"owner {i}",))
print("1000 accounts, total balance", db.execute("SELECT sum(balance) FROM accounts").fetchone()[0])
PY

step "distributary replicate --once (first run starts a generation with a snapshot)"
"$bin/distributary" replicate --once "$demo/app.db" "$store"

step "distributary replicate runs beside the app while it moves money in 200 transactions"
"$bin/distributary" replicate --sync-interval 200ms "$demo/app.db" "$store" 2>"$demo/replicate.log" &
replicator=$!
sleep 1
python3 - "$demo/app.db" <<'PY'
import random, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
for _ in range(200):
    a, b = random.sample(range(1, 1001), 2)
    db.execute("BEGIN")
    db.execute("UPDATE accounts SET balance = balance - 7 WHERE id = ?", (a,))
    db.execute("UPDATE accounts SET balance = balance + 7 WHERE id = ?", (b,))
    db.execute("COMMIT")
PY
sleep 1
kill -TERM "$replicator" && wait "$replicator"   # flushes the last commits, exits 0
"$bin/distributary" replicate --once "$demo/app.db" "$store"   # nothing new: prints where the store is

step "distributary compact (what the Lambda does on S3 events)"
"$bin/distributary" compact "$store"

step "edge-reader sync + query on $demo/replica.db"
"$bin/edge-reader" sync --source "$store" --db "$demo/replica.db"
"$bin/edge-reader" query --db "$demo/replica.db" "SELECT count(*) AS accounts, sum(balance) AS total FROM accounts"

step "distributary restore to $demo/restored.db"
"$bin/distributary" restore "$store" -o "$demo/restored.db"
python3 - "$demo/app.db" "$demo/restored.db" <<'PY'
import sqlite3, sys
rows = lambda p: sqlite3.connect(p).execute("SELECT * FROM accounts ORDER BY id").fetchall()
assert rows(sys.argv[1]) == rows(sys.argv[2]), "restored rows differ from the primary's"
print("restored database has exactly the primary's rows")
PY
step "done: store objects under $demo/store"
find "$demo/store" -type f -not -name ".*" | sort
