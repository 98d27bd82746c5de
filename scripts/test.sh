#!/usr/bin/env bash
# Runs every Chaperone test on a fresh Debian machine.
#
# Installs what is missing (Debian packages, cargo-nextest, npm packages for the
# browser and identity-provider tests), builds the workspace, and runs all
# tests. The tests start the real services they need (redis-server, ...) on
# free loopback ports and stop them when they finish, also on failure; this
# script additionally kills anything left in its process group on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '\n==> %s\n' "$*"; }

cleanup() {
  local status=$?
  # Stop any server a test or this script left behind (our own children only).
  pkill -P $$ 2>/dev/null || true
  if [ "$status" -eq 0 ]; then log "all tests passed"; else log "FAILED (exit $status)"; fi
  exit "$status"
}
trap cleanup EXIT INT TERM

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- system packages -------------------------------------------------------
# binary -> Debian package
declare -A NEEDED=(
  [redis-server]=redis-server
  [age]=age
  [node]=nodejs
  [npm]=npm
  [chromium]=chromium
  [promtool]=prometheus
  [openssl]=openssl
  [turnserver]=coturn
)
missing=()
for bin in "${!NEEDED[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${NEEDED[$bin]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Rust tools --------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# The S3 server the storage tests run against (it checks signatures). Later
# versions need a newer compiler than the one here.
if ! command -v s3s-fs >/dev/null 2>&1; then
  log "installing s3s-fs"
  cargo install --locked s3s-fs@0.14.1 --features binary
fi

# --- npm packages: the real OIDC provider, the browser driver, axe-core ------
# (playwright-core drives Debian's /usr/bin/chromium; no browser is downloaded)
if [ ! -d tests/idp/node_modules ] || [ tests/idp/package-lock.json -nt tests/idp/node_modules ]; then
  log "installing npm packages for the identity-provider and browser tests"
  npm ci --prefix tests/idp --no-audit --no-fund
  touch tests/idp/node_modules
fi

# --- build and test ----------------------------------------------------------
log "building the workspace (binaries are used by the end-to-end tests)"
# The end-to-end tests run `gateway --dev`: the development build.
cargo build --workspace --all-targets --locked --features chaperone-gateway/dev

log "checking the production gateway (no development mode, as the Dockerfile builds it)"
cargo check --locked -p chaperone-gateway --bin gateway

log "running the Rust tests"
cargo nextest run --workspace --no-fail-fast --locked
