#!/usr/bin/env bash
# Builds the small edge reader for devices: `edge-reader` without the AWS SDK
# (`--no-default-features`: file:// and http(s):// stores, rustls on ring),
# statically linked against musl for x86-64 and aarch64 Linux, in the
# `edge-release` profile (size-optimised, whole-program LTO). cargo-zigbuild
# links it and zig compiles the C (SQLite, zstd, ring) for both targets, so
# no musl or aarch64 toolchain is needed.
#
# Usage: scripts/build-edge.sh
# Honours CARGO_TARGET_DIR. Installs what it needs if it is missing
# (cargo-zigbuild and ziglang with pip, the two rustup targets), prints each
# binary's path and size, and fails if one is over the 8 MB budget
# (8,000,000 bytes): docs/BENCHMARKS.md, "A small reader for devices".
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
log() { printf 'build-edge: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Run from a test (`cargo test` sets the test crate's CARGO_MANIFEST_DIR,
# CARGO_PKG_NAME, ...), those variables would reach ring's build script,
# which reruns when any of them changes: ring, rustls and everything above
# them would rebuild on every switch between a test and a shell. They
# describe the caller's crate, not this build.
while IFS= read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^(CARGO_(PKG|MANIFEST|CRATE|BIN|CFG|PRIMARY_PACKAGE|TARGET_TMPDIR)|OUT_DIR$)' || true)

targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
limit_bytes=8000000

if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -c 'import ziglang' >/dev/null 2>&1; then
    log "installing cargo-zigbuild and ziglang (pip): zig links for musl and compiles the C for both targets"
    python3 -m pip install --quiet --disable-pip-version-check cargo-zigbuild ziglang
    hash -r
fi
command -v cargo-zigbuild >/dev/null 2>&1 || die "cargo-zigbuild is not on PATH after pip install (is pip's bin folder on PATH?)"
installed="$(rustup target list --installed)"
for target in "${targets[@]}"; do
    if ! grep -qx "$target" <<<"$installed"; then
        log "adding the $target Rust target"
        rustup target add "$target"
    fi
done

# Where cargo puts its output: CARGO_TARGET_DIR, a config's build.target-dir,
# or the workspace's target/.
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

status=0
for target in "${targets[@]}"; do
    log "cargo zigbuild ($target, profile edge-release, no default features)"
    (cd "$root" && cargo zigbuild --locked --profile edge-release --target "$target" \
        -p edge-reader --no-default-features)
    binary="$target_dir/$target/edge-release/edge-reader"
    [ -f "$binary" ] || die "cargo zigbuild did not produce $binary"
    size="$(stat -c %s "$binary")"
    printf '%s\t%s bytes\n' "$binary" "$size"
    if [ "$size" -gt "$limit_bytes" ]; then
        log "$binary is $size bytes, over the budget of $limit_bytes bytes (8 MB): find what grew with cargo bloat, or cargo tree -p edge-reader --no-default-features -e normal"
        status=1
    fi
done
exit "$status"
