#!/usr/bin/env bash
# Builds the wasm edge reader (edge-wasm/) into an npm package folder:
#   cargo (wasm32-unknown-unknown, profile wasm-release)
#   -> wasm-bindgen CLI at exactly the wasm-bindgen version in Cargo.lock
#   -> wasm-opt -Oz (binaryen from npm: Debian's wasm-opt is too old)
#   -> package.json, index.js, .d.ts, .wasm
#
# Usage: scripts/build-wasm.sh [OUT_DIR]   (default: edge-wasm/pkg)
# Honours CARGO_TARGET_DIR. Installs nothing system-wide: scripts/setup.sh
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

# SQLite for the wasm reader (sqlite-wasm-rs): queries on a read-only
# in-memory image need none of FTS5, R*Tree, sessions, update hooks or the
# bytecode, dbstat, dbpage and statement virtual tables; leaving them out
# keeps the .wasm inside its 1 MB budget (docs/BENCHMARKS.md). JSON and math
# functions stay. Set SQLITE_WASM_RS_FLAGS to build another selection (for
# example "" for sqlite-wasm-rs's full set, FTS5 included: 1.12 MB, over budget).
export SQLITE_WASM_RS_FLAGS="${SQLITE_WASM_RS_FLAGS--USQLITE_ENABLE_FTS5 -USQLITE_ENABLE_RTREE -USQLITE_ENABLE_SESSION -USQLITE_ENABLE_PREUPDATE_HOOK -USQLITE_ENABLE_BYTECODE_VTAB -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_DBPAGE_VTAB -USQLITE_ENABLE_STMTVTAB -USQLITE_ENABLE_UNLOCK_NOTIFY -USQLITE_ENABLE_COLUMN_METADATA -USQLITE_ENABLE_API_ARMOR -DSQLITE_DQS=0 -DSQLITE_OMIT_PROGRESS_CALLBACK -DSQLITE_OMIT_TRACE -DSQLITE_OMIT_AUTHORIZATION -DSQLITE_OMIT_COMPLETE -DSQLITE_OMIT_GET_TABLE -DSQLITE_OMIT_TCL_VARIABLE -DSQLITE_UNTESTABLE}"

# One build at a time per target folder: test processes build the package
# in parallel, and wasm-opt's temporary file and the package files are shared.
mkdir -p "$target_dir"
exec 9>"$target_dir/build-wasm.lock"
flock 9

log "cargo build (wasm32-unknown-unknown, profile wasm-release)"
cargo build --locked --profile wasm-release --target wasm32-unknown-unknown -p distributary-edge-wasm \
    --manifest-path "$root/Cargo.toml"
wasm="$target_dir/wasm32-unknown-unknown/wasm-release/distributary_edge_wasm.wasm"
[ -f "$wasm" ] || die "cargo did not produce $wasm"

mkdir -p "$out"
wasm-bindgen --target web --out-dir "$out" --out-name distributary_edge_wasm "$wasm"
raw="$out/distributary_edge_wasm_bg.wasm"
"$tools/node_modules/.bin/wasm-opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --strip-debug --strip-producers "$raw" -o "$raw.opt"
mv "$raw.opt" "$raw"

cp "$root/edge-wasm/npm/index.js" "$root/edge-wasm/npm/index.d.ts" "$root/edge-wasm/npm/README.md" "$out/"
crate_version="$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^version/ { print $2; exit }' "$root/Cargo.toml")"
sed "s/\"version\": \"[^\"]*\"/\"version\": \"$crate_version\"/" "$root/edge-wasm/npm/package.json" > "$out/package.json"
rm -f "$out/.gitignore"

size=$(wc -c < "$raw")
gz=$(gzip -9 -c "$raw" | wc -c)
log "built $out ($(basename "$raw"): $size bytes, $gz gzipped)"
