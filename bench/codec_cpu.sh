#!/usr/bin/env bash
# CPU a restore takes from a zstd store and from an LZ4 store of the same
# 1.05 GB database (bench/restore.py's generator), restored in turn with
# /usr/bin/time, 3 rounds, `sync` before each. Prints wall, user and system
# seconds and peak RSS per run. About 2 minutes.
#   DISTRIBUTARY=path/to/distributary (default: the release build in
#   ~/.cache/distributary/target-bench)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${DISTRIBUTARY:-$HOME/.cache/distributary/target-bench/release/distributary}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -c "
import sys; sys.path.insert(0, '$here')
import restore
restore.make_database('$work/src.db', 1000, 42)
"
for codec in zstd lz4; do
  cp "$work/src.db" "$work/$codec.db"
  "$bin" replicate --once --compression "$codec" "$work/$codec.db" "file://$work/store-$codec" > /dev/null 2>&1
  echo "$codec store: $(du -sm "$work/store-$codec" | cut -f1) MB"
done
for round in 1 2 3; do
  for codec in zstd lz4; do
    rm -f "$work/out-$codec.db"*
    sync
    /usr/bin/time -f "$codec round $round: %e s wall, %U s user, %S s sys, %M KB peak RSS" \
      "$bin" restore "file://$work/store-$codec" -o "$work/out-$codec.db" --integrity-check none 2>&1 >/dev/null | tail -1
  done
done
