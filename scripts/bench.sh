#!/usr/bin/env bash
# Load benchmarks over real sockets, as in docs/benchmarks.md:
#
#   scripts/bench.sh
#
# Builds release, then for each scenario starts a fresh `axum_chat` pinned to
# core 0 (inbound rate limit off: WS_LIFECYCLE_INBOUND_RATE=0) and runs
# `loadgen` pinned to core 1; prints each scenario's JSON line and a table.
# Scenarios: connect, fanout (2,000 connections), the ceiling (fanout over
# 19,000 connections), idle-mem. `--in-flight` counts deliveries.
# Needs taskset (util-linux). Loopback only; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --example axum_chat --example loadgen --features "axum tungstenite"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
port=${PORT:-3999}
results=$(mktemp)
server_pid=

start_server() {
  local log
  log=$(mktemp)
  WS_LIFECYCLE_INBOUND_RATE=0 taskset -c 0 target/release/examples/axum_chat --addr "127.0.0.1:$port" >"$log" 2>&1 &
  server_pid=$!
  # The example prints its address once it listens.
  timeout 20 bash -c "until grep -q listening '$log'; do sleep 0.1; done"
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT

run() {
  start_server
  taskset -c 1 timeout 300 target/release/examples/loadgen "$@" --url "ws://127.0.0.1:$port/ws" | tee -a "$results"
  stop_server
}

run connect --connections 10000 --users 5000 --concurrency 256
run fanout --connections 2000 --users 1000 --publishers 8 --seconds 10 --in-flight 256
# The ceiling: this machine allows 20,000 fds per process.
run fanout --connections 19000 --users 9500 --publishers 8 --seconds 10 --in-flight 256
start_server
taskset -c 1 timeout 300 target/release/examples/loadgen idle-mem --url "ws://127.0.0.1:$port/ws" \
  --connections 10000 --users 5000 --pid "$server_pid" --hold 3 | tee -a "$results"
stop_server

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("\n| scenario | result |\n|---|---|")
for r in rows:
    if r["scenario"] == "connect":
        print(f"| connect {r['connections']} / {r['users']} users, {r['concurrency']} in flight | {r['ready']} ready, {r['connects_per_sec']:.0f} connects/s, p99 {r['connect_to_ready_p99_ms']} ms |")
    elif r["scenario"] == "fanout":
        print(f"| fanout {r['connections']} / {r['users']} users, {r['publishers']} publishers, {r['seconds']} s | {r['lost']} lost, {r['deliveries_per_sec']:.0f} deliveries/s, p50 {r['latency_p50_ms']} ms, p99 {r['latency_p99_ms']} ms |")
    elif r["scenario"] == "idle-mem":
        print(f"| idle-mem {r['held']} connections | {r['kib_per_connection']} KiB per connection |")
PY
