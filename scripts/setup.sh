#!/usr/bin/env bash
# Installs what Distributary's tests and quick start need on a fresh machine.
# Idempotent: every step checks first and skips what is already there.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

# Python tools: moto's S3 server for the S3 tests.
if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c 'import flask, flask_cors' >/dev/null 2>&1; then
    log "installing moto[server] (S3-compatible server for tests)"
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5'
    hash -r
fi
command -v moto_server >/dev/null 2>&1 || { log "moto_server is not on PATH after install"; exit 1; }

# cargo-lambda (and zig, its cross-linker): the compactor test runs the real
# Lambda runtime API locally with `cargo lambda watch`, and
# `cargo lambda build --release --arm64` packages the function.
if ! command -v cargo-lambda >/dev/null 2>&1 || ! python3 -c 'import ziglang' >/dev/null 2>&1; then
    log "installing cargo-lambda and ziglang (Lambda runtime emulator and arm64 builds)"
    python3 -m pip install --quiet --disable-pip-version-check cargo-lambda ziglang
    hash -r
fi
command -v cargo-lambda >/dev/null 2>&1 || { log "cargo-lambda is not on PATH after install"; exit 1; }

# The small static edge reader for devices (scripts/build-edge.sh,
# tests/tests/edge_build.rs): cargo-zigbuild links it against musl with zig
# (ziglang, installed above) for x86-64 and aarch64.
if ! command -v cargo-zigbuild >/dev/null 2>&1; then
    log "installing cargo-zigbuild (static musl builds of edge-reader)"
    python3 -m pip install --quiet --disable-pip-version-check cargo-zigbuild
    hash -r
fi
command -v cargo-zigbuild >/dev/null 2>&1 || { log "cargo-zigbuild is not on PATH after install"; exit 1; }

# Infrastructure checks (tests/tests/infra.rs): cfn-lint lints
# infra/template.yaml (its SAM transform too); checkov scans it. checkov pins
# old boto3/botocore releases, so it lives in its own virtualenv rather than
# downgrading the packages moto and the AWS CLI use.
if ! command -v cfn-lint >/dev/null 2>&1; then
    log "installing cfn-lint (CloudFormation linter)"
    python3 -m pip install --quiet --disable-pip-version-check cfn-lint
    hash -r
fi
command -v cfn-lint >/dev/null 2>&1 || { log "cfn-lint is not on PATH after install"; exit 1; }
checkov_venv="$HOME/.local/share/distributary/checkov-venv"
if ! command -v checkov >/dev/null 2>&1 && [ ! -x "$checkov_venv/bin/checkov" ]; then
    log "installing checkov into $checkov_venv (IaC scanner)"
    python3 -m venv "$checkov_venv"
    "$checkov_venv/bin/python" -m pip install --quiet --disable-pip-version-check checkov
fi
# systemd-analyze verifies the units in infra/systemd/ (Debian: package systemd).
command -v systemd-analyze >/dev/null 2>&1 || { log "systemd-analyze not found: apt-get install systemd"; exit 1; }

# SQLite CLI is not needed: rusqlite bundles SQLite. Rust comes from rustup.
command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }

# The wasm edge reader (edge-wasm/, tests/tests/wasm.rs): clang compiles
# SQLite and zstd to wasm; Node runs the replica, drives Debian's Chromium
# (playwright-core) and workerd; the npm tools (binaryen's wasm-opt,
# playwright-core, workerd) are pinned in edge-wasm/js/package-lock.json.
# scripts/build-wasm.sh installs the wasm-bindgen CLI matching Cargo.lock.
apt_missing=()
command -v clang >/dev/null 2>&1 || apt_missing+=(clang llvm)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
# nginx publishes a store folder over HTTP in tests/tests/origins.rs.
[ -x /usr/sbin/nginx ] || apt_missing+=(nginx-light)
# sshd serves SFTP to the sftp:// store's tests (tests/src/sshd.rs starts its
# own on a free port; the package's postinst starts none without systemd).
[ -x /usr/sbin/sshd ] || apt_missing+=(openssh-server)
if [ "${#apt_missing[@]}" -gt 0 ]; then
    log "installing ${apt_missing[*]} (wasm edge reader: build, Node, headless browser; nginx; sshd for SFTP)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
# Rust targets: wasm32 for the wasm edge reader, the two musl targets for
# the small static edge reader.
installed_targets="$(rustup target list --installed 2>/dev/null || true)"
for target in wasm32-unknown-unknown x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! grep -qx "$target" <<<"$installed_targets"; then
        log "adding the $target Rust target"
        rustup target add "$target"
    fi
done
edge_js="$(cd "$(dirname "$0")/.." && pwd)/edge-wasm/js"
if [ ! -x "$edge_js/node_modules/.bin/wasm-opt" ] || [ ! -x "$edge_js/node_modules/.bin/workerd" ] \
    || [ ! -d "$edge_js/node_modules/playwright-core" ]; then
    log "installing edge-wasm/js npm tools (npm install: binaryen, playwright-core, workerd)"
    # `npm install` (not `npm ci`): it follows the lock file too, and unlike
    # `npm ci` it accepts the lock without entries for workerd's optional
    # packages of other platforms, which this registry does not resolve.
    (cd "$edge_js" && npm install --no-audit --no-fund --loglevel=error)
fi

# The account the SFTP password-login tests log in as (tests/src/sshd.rs):
# no shell, so it is reachable only through the tests' own sshd and its
# internal-sftp; its password is the tests' constant.
if ! id distributary-sftp >/dev/null 2>&1; then
    log "creating the local account distributary-sftp (SFTP password-login tests)"
    useradd --system --create-home --home-dir /var/lib/distributary-sftp --shell /usr/sbin/nologin distributary-sftp
fi
# Setting the password again each run keeps it what the tests expect.
echo 'distributary-sftp:distributary-sftp-test-only' | chpasswd

# Azurite (Microsoft's Azure Storage emulator) for the abs:// store's tests
# (tests/src/azurite.rs looks here, or in $DISTRIBUTARY_AZURITE): pinned,
# in a project-independent folder shared by every checkout.
azurite_dir="${DISTRIBUTARY_AZURITE:-$HOME/.cache/distributary/azurite}"
if [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ]; then
    log "installing azurite@3.37.0 into $azurite_dir (Azure Blob Storage emulator)"
    mkdir -p "$azurite_dir"
    npm install --prefix "$azurite_dir" --no-audit --no-fund --loglevel=error azurite@3.37.0
fi

log "ok"
