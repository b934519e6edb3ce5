#!/usr/bin/env bash
# Runs the main job end to end on a local folder as the object store.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet -p distributary-tests --bin quickstart -- "${1:-demo}"
