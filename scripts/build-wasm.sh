#!/usr/bin/env bash
# Builds the wasm edge reader (edge-wasm/) into an npm package folder:
#   cargo (wasm32-unknown-unknown, profile wasm-release)
#   -> wasm-bindgen CLI at exactly the wasm-bindgen version in Cargo.lock
#   -> wasm-opt -Oz (binaryen from npm: Debian's wasm-opt is too old)
#   -> package.json, index.js, .d.ts, .wasm
#   -> checks: no undefined imports, within the size budget
#
# Usage: scripts/build-wasm.sh [OUT_DIR]   (default: edge-wasm/pkg)
# Honours CARGO_TARGET_DIR and EDGE_WASM_FEATURES (below). Installs nothing system-wide: scripts/setup.sh
# does that (clang, the wasm32 target); this script only checks, and
# installs the exact wasm-bindgen CLI and the npm tools it needs.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/edge-wasm/pkg}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
log() { printf 'build-wasm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v clang >/dev/null 2>&1 || die "clang not found: SQLite and zstd are C compiled to wasm by clang (run scripts/setup.sh, or apt-get install clang llvm)"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
    || die "the wasm32-unknown-unknown target is missing (run scripts/setup.sh, or rustup target add wasm32-unknown-unknown)"
command -v npm >/dev/null 2>&1 || die "npm not found: wasm-opt comes from the npm binaryen package (apt-get install nodejs npm)"

# The CLI must match the wasm-bindgen crate exactly, or the generated glue
# does not fit the .wasm.
version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")"
[ -n "$version" ] || die "wasm-bindgen is not in Cargo.lock (build the workspace once to update it)"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
    log "installing wasm-bindgen-cli $version (must match the crate in Cargo.lock)"
    cargo install wasm-bindgen-cli --version "$version"
fi

tools="$root/edge-wasm/js"
if [ ! -x "$tools/node_modules/.bin/wasm-opt" ]; then
    log "installing the npm tools of edge-wasm/js (binaryen's wasm-opt)"
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
fi

# SQLite for the wasm reader (sqlite-wasm-rs): a read-only query engine over
# the replica's pages (one VFS in both modes, edge-wasm/src/lazy.rs). FTS5
# stays (full-text search at the edge, issue #19), as do JSON and date
# functions, window functions, CTEs, views and triggers in the schema. Left
# out, to keep the .wasm inside its budget (docs/BENCHMARKS.md, "wasm edge
# reader: size"):
#  - the math functions (sqrt, pow, sin...; about 9 KB gzipped): the native
#    readers' SQLite (rusqlite's bundled build) has none either, so a query
#    runs the same on both;
#  - sqlite3_deserialize and its memdb VFS: no mode reads an image in place;
#  - extensions a reader never uses: R*Tree, sessions, update hooks, the
#    bytecode, dbstat, dbpage and statement virtual tables, unlock notify,
#    column metadata, API armour, sqlite_offset(), the compile-option list
#    and the function/module/pragma list pragmas;
#  - write-side code that can go without touching the grammar: UPSERT,
#    foreign-key actions (and PRAGMA foreign_key_list), CHECK evaluation,
#    AUTOINCREMENT bookkeeping, auto-vacuum, the INSERT-SELECT transfer
#    and DELETE truncate optimisations, quick balance;
#  - WAL: the database is opened in rollback-journal mode (the VFS serves
#    page 1 with header bytes 18-19 set to 1). Any other way of opening a
#    replica must do the same: without WAL, SQLite refuses a header that
#    says WAL ("file is not a database"), and with it, a VFS without shared
#    memory cannot open a WAL image either outside exclusive locking mode;
#  - PRAGMA integrity_check (every applied page is verified by the checksum
#    chain instead, and without auto-vacuum it would misreport auto-vacuum
#    databases; the unknown pragma now returns no rows), the progress
#    callback, tracing, the authorizer, sqlite3_complete, sqlite3_get_table,
#    TCL variables, decltype, memory statistics;
#  - extension loading, shared cache and the deprecated API (no caller);
#  - automatic indexes: a join on a column without an index scans the inner
#    table per outer row instead of building a transient index first. The
#    results are the same; such a join is slower on a large table (index the
#    join's columns). This paid for the one HTTP store protocol shared with
#    the native readers (issue 20), about 1.2 KB gzipped.
# Kept on purpose: UTF-16 (SQLITE_OMIT_UTF16 would read a UTF-16 database's
# text as UTF-8), the expression depth limit (a deep expression must be an
# error, not a stack overflow that kills the instance), incremental blob I/O
# (FTS5 reads its index through it), EXPLAIN (the amalgamation's parser
# still accepts it, so SQLITE_OMIT_EXPLAIN runs `EXPLAIN QUERY PLAN SELECT`
# as the SELECT itself under the plan's column names).
# Only flags that keep the amalgamation's generated parser whole work here:
# one that removes a function the parser calls (ALTER, ANALYZE, ATTACH,
# VACUUM, REINDEX, TRIGGER) leaves an undefined symbol, which wasm-ld turns
# into an `env` import; the import check below refuses such a build.
# Set SQLITE_WASM_RS_FLAGS to build another selection ("" is sqlite-wasm-rs's
# full set: over budget, so also set WASM_SIZE_BUDGET=off).
export SQLITE_WASM_RS_FLAGS="${SQLITE_WASM_RS_FLAGS--USQLITE_ENABLE_RTREE -USQLITE_ENABLE_SESSION -USQLITE_ENABLE_PREUPDATE_HOOK -USQLITE_ENABLE_BYTECODE_VTAB -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_DBPAGE_VTAB -USQLITE_ENABLE_STMTVTAB -USQLITE_ENABLE_UNLOCK_NOTIFY -USQLITE_ENABLE_COLUMN_METADATA -USQLITE_ENABLE_API_ARMOR -USQLITE_ENABLE_OFFSET_SQL_FUNC -USQLITE_ENABLE_UNKNOWN_SQL_FUNCTION -DSQLITE_DQS=0 -DSQLITE_OMIT_PROGRESS_CALLBACK -DSQLITE_OMIT_TRACE -DSQLITE_OMIT_AUTHORIZATION -DSQLITE_OMIT_COMPLETE -DSQLITE_OMIT_GET_TABLE -DSQLITE_OMIT_TCL_VARIABLE -DSQLITE_OMIT_COMPILEOPTION_DIAGS -DSQLITE_OMIT_INTROSPECTION_PRAGMAS -DSQLITE_OMIT_DECLTYPE -DSQLITE_OMIT_UPSERT -DSQLITE_OMIT_FOREIGN_KEY -DSQLITE_OMIT_CHECK -DSQLITE_OMIT_AUTOINCREMENT -DSQLITE_OMIT_AUTOVACUUM -DSQLITE_OMIT_XFER_OPT -DSQLITE_OMIT_TRUNCATE_OPTIMIZATION -DSQLITE_OMIT_QUICKBALANCE -DSQLITE_OMIT_WAL -DSQLITE_OMIT_INTEGRITY_CHECK -DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_UNTESTABLE -DSQLITE_OMIT_DESERIALIZE -USQLITE_ENABLE_MATH_FUNCTIONS -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_SHARED_CACHE -DSQLITE_OMIT_DEPRECATED -DSQLITE_OMIT_AUTOMATIC_INDEX}"

# zstd (zstd-sys, C) for the wasm target only: its documented size options.
# One Huffman decoder (single-symbol) and one sequence decoder (short
# offsets) instead of two of each (about 18 KB less code), and no forced
# inlining (about 12 KB), for slower decompression (docs/BENCHMARKS.md). Error
# strings stay (ZSTD_STRIP_ERROR_STRINGS would make every zstd error read
# "Error strings stripped"). cc reads CFLAGS_<target>; native builds are
# unaffected.
export CFLAGS_wasm32_unknown_unknown="${CFLAGS_wasm32_unknown_unknown--DHUF_FORCE_DECOMPRESS_X1=1 -DZSTD_FORCE_DECOMPRESS_SEQUENCES_SHORT=1 -DZSTD_NO_INLINE=1}"

# One build at a time per target folder: test processes build the package
# in parallel, and wasm-opt's temporary file and the package files are shared.
mkdir -p "$target_dir"
exec 9>"$target_dir/build-wasm.lock"
flock 9

# EDGE_WASM_FEATURES: cargo features of edge-wasm for a test-only package
# (`conformance`: tests/tests/wasm.rs); the shipped package has none.
features="${EDGE_WASM_FEATURES:-}"
log "cargo build (wasm32-unknown-unknown, profile wasm-release${features:+, features $features})"
cargo build --locked --profile wasm-release --target wasm32-unknown-unknown -p distributary-edge-wasm \
    --features "$features" --manifest-path "$root/Cargo.toml"
wasm="$target_dir/wasm32-unknown-unknown/wasm-release/distributary_edge_wasm.wasm"
[ -f "$wasm" ] || die "cargo did not produce $wasm"

mkdir -p "$out"
wasm-bindgen --target web --out-dir "$out" --out-name distributary_edge_wasm "$wasm"
raw="$out/distributary_edge_wasm_bg.wasm"
node "$root/scripts/wasm-drop-exports.cjs" "$raw" "$out/distributary_edge_wasm.js"
# --low-memory-unused lets wasm-opt fold constant address offsets into
# loads and stores (about 11 KB), assuming nothing valid lives below address
# 1024. rustc puts the 1 MiB stack first in memory, so only the last 1 KiB of
# a nearly overflowed stack is there: such a deep stack may trap 1 KiB sooner.
# --converge runs the passes again until the module stops shrinking (about
# 1.4 KB gzipped over one run).
"$tools/node_modules/.bin/wasm-opt" -Oz --converge --low-memory-unused --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --strip-debug --strip-producers "$raw" -o "$raw.opt"
mv "$raw.opt" "$raw"

cp "$root/edge-wasm/npm/index.js" "$root/edge-wasm/npm/opfs.js" "$root/edge-wasm/npm/index.d.ts" "$root/edge-wasm/npm/README.md" "$out/"
crate_version="$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^version/ { print $2; exit }' "$root/Cargo.toml")"
sed "s/\"version\": \"[^\"]*\"/\"version\": \"$crate_version\"/" "$root/edge-wasm/npm/package.json" > "$out/package.json"
rm -f "$out/.gitignore"

# Every import must come from wasm-bindgen's glue: a C symbol no object
# defines (an SQLITE_OMIT_* flag that removes a function something still
# calls) links as an `env` import, and instantiating the module then fails.
strays="$(node -e '
const m = new WebAssembly.Module(require("fs").readFileSync(process.argv[1]));
const strays = WebAssembly.Module.imports(m).filter((i) => !i.module.endsWith("_bg.js"));
console.log(strays.map((i) => `${i.module}.${i.name}`).join(" "));' "$raw")"
[ -z "$strays" ] || die "$(basename "$raw") imports undefined symbols: $strays (an SQLITE_WASM_RS_FLAGS or CFLAGS option removed code that is still called)"

size=$(wc -c < "$raw")
gz=$(gzip -9 -c "$raw" | wc -c)
log "built $out ($(basename "$raw"): $size bytes, $gz gzipped)"
# The size guard (docs/BENCHMARKS.md, "wasm edge reader: size"), in bytes of
# 1000: issue 19's goal with FTS5 and lazy mode, 1.1 MB raw and 480 KB
# gzip -9. WASM_SIZE_BUDGET=off builds anyway (to measure another selection).
raw_budget=1100000
gz_budget=480000
if [ "${WASM_SIZE_BUDGET:-on}" != off ] && { [ "$size" -gt "$raw_budget" ] || [ "$gz" -gt "$gz_budget" ]; }; then
    die "$(basename "$raw") is over budget: $size bytes (budget $raw_budget), $gz gzipped (budget $gz_budget)"
fi
