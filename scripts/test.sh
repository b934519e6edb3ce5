#!/usr/bin/env bash
# The whole test suite: sets up what the tests need, then runs every test of
# every crate (unit, property, conformance against a real S3 server on
# loopback, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests only ever talk to servers they start on loopback.
export AWS_EC2_METADATA_DISABLED=true
exec cargo test --workspace --locked "$@"
