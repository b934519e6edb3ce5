#!/usr/bin/env bash
# The whole test suite: sets up what the tests need, then runs every test of
# every crate (unit, property, conformance against a real S3 server on
# loopback, end-to-end), and closes with one line totalling all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests only ever talk to servers they start on loopback.
export AWS_EC2_METADATA_DISABLED=true
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one "test result" line per test binary; total them so the
# last line says what ran.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
