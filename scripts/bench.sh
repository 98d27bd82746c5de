#!/usr/bin/env bash
# Runs every benchmark scenario of BENCHMARKS.md on this machine, release
# builds, the gateway (and Janus) pinned to one CPU and the load generator
# to another, and writes JSON results and summaries to bench-results/.
#
#   scripts/bench.sh                 # every scenario, Chaperone then Janus
#   scripts/bench.sh lesson31 ...    # one scenario; arguments go to `loadtest`
#
# Installs what is missing: the Debian packages janus (VideoRoom, the
# comparison) and openssl (the gateway's token signing key). Everything
# stays on loopback. REPEAT=n runs the whole set n times (BENCHMARKS.md
# reports medians over the repeats: `target/release/loadtest median
# bench-results/run-*`). BENCH_NICE=-10 runs generator and server at that
# priority, for a machine shared with other work.
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
log() { printf '\n==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v janus >/dev/null 2>&1 || missing+=(janus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

log "building release binaries"
# The gateway in development mode (`--dev`: embedded recorder and identity
# provider), as the scenarios start it. Built on its own: with several `-p`,
# cargo does not apply `--features chaperone-gateway/dev` to the binary.
cargo build --release --locked -p chaperone-gateway --features dev --bin gateway
cargo build --release --locked -p chaperone-recorder -p chaperone-loadtest --bins

bin="${CARGO_TARGET_DIR:-target}/release"
cpus=$(nproc)
if [ "$cpus" -ge 2 ]; then
  server_cpu=0; generator_cpu=1
else
  log "only one CPU: server and generator share it (figures are not comparable)"
  server_cpu=0; generator_cpu=0
fi
out="${OUT:-bench-results}"
mkdir -p "$out"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $cpus"
  grep -m1 'model name' /proc/cpuinfo || true
  echo "kernel: $(uname -sr)"
  echo "janus: $({ janus --version 2>/dev/null || echo none; } | head -1)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/machine.txt"
cat "$out/machine.txt" >&2

args=("$@")
[ "${#args[@]}" -gt 0 ] || args=(all)
for i in $(seq 1 "${REPEAT:-1}"); do
  log "run $i of ${REPEAT:-1}: loadtest ${args[*]} (server on CPU $server_cpu, generator on CPU $generator_cpu)"
  nice -n "${BENCH_NICE:-0}" taskset -c "$generator_cpu" "$bin/loadtest" "${args[@]}" \
    --server-cpu "$server_cpu" --out "$out/run-$i" | tee "$out/run-$i.txt"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/machine.txt"
"$bin/loadtest" median "$out"/run-*/ > "$out/medians.md"
log "results in $out/ (medians in $out/medians.md)"
