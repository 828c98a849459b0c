#!/usr/bin/env bash
# Requests per second of the ingest and of the bare axum baseline on one core: the server
# pinned to CPU 0 (`taskset -c 0`), `wrk` and the embedded (mock) broker on CPU 1, one
# webhook signed in advance (so the client does no signing), the local PostgreSQL.
# Prints wrk's figures for 256 connections (throughput) and 16 (latency-bound by the broker
# round trip), the 16-connection ingest run once more with `linger.ms=0` to show what the
# producer's 2 ms of batching costs there. Bounded: about two minutes with the defaults.
#
#   scripts/wrk-ingest.sh
#   DURATION=20 scripts/wrk-ingest.sh
#
# Settings: DURATION (seconds of each run, 10), ADMIN_DATABASE_URL, BIN_DIR (binaries built
# already: no build), COMPARE_BIN (another build's tributary-ingest: at the end, the two
# ingests at 256 connections taken in turn, PAIRS times (3), so that a machine whose speed
# drifts affects both alike), PERF_DATA (a file: `perf record -e cpu-clock -g` of the
# ingest during its first 256-connection run, for `perf report -i FILE`; needs Debian's
# linux-perf; PERF_CALL_GRAPH=dwarf follows the Rust frames, which the default `fp` cannot),
# BARE_PAIRS (at the end, the bare server and the ingest at 256 connections taken in turn
# this many times, each pair's ratio and the ratio of the means: on a machine whose speed
# drifts from minute to minute, one bare run and one ingest run a minute apart can be 10%
# off either way).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
ADMIN_DATABASE_URL="${ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
BIN="${BIN_DIR:-$CARGO_TARGET_DIR/release}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs" >&2; exit 1; }
[ -n "${BIN_DIR:-}" ] || cargo build --release --locked --bin tributary --bin tributary-ingest >&2

DB_NAME=tributary_wrk
psql -q "$ADMIN_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
export TRIBUTARY_DATABASE_URL="${ADMIN_DATABASE_URL%/*}/$DB_NAME"
export TRIBUTARY_SECRET_KEY="$(head -c 32 /dev/urandom | base64)"
export TRIBUTARY_APP_BASE_URL=http://127.0.0.1:8280
export TRIBUTARY_INGEST_LISTEN=127.0.0.1:8280
export TRIBUTARY_INSTALL_KEYS_URL=http://127.0.0.1:8299
export TRIBUTARY_METRICS_LISTEN=127.0.0.1:9664
export TRIBUTARY_LOG_FORMAT=json
export RUST_LOG=warn

taskset -c 1 "$BIN/tributary" embedded-broker --partitions 6 >"$WORK/broker" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$WORK/broker" ] && break; sleep 0.1; done
export TRIBUTARY_KAFKA_BROKERS="$(head -n 1 "$WORK/broker")"
"$BIN/tributary" migrate >/dev/null

wait_for() {
  for _ in $(seq 1 100); do
    case "$1" in
      http*) "$BIN/tributary" probe "$1" 2>/dev/null && return 0 ;;
      *) (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0 ;;
    esac
    sleep 0.1
  done
  return 1
}
# wrk on CPU 1; prints "<label>: N requests/s, p50 ..., p99 ..., non-2xx M".
run_wrk() {
  local label="$1" connections="$2" url="$3"
  taskset -c 1 wrk -t1 -c"$connections" -d"${DURATION}s" --latency -s "$WORK/request.lua" "$url" >"$WORK/wrk.out"
  awk -v l="$label" '
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = $2 }
    /^ +99%/ { p99 = $2 }
    /Non-2xx/ { bad = $NF }
    END { printf "%s: %.0f requests/s, p50 %s, p99 %s, non-2xx %d\n", l, rps, p50, p99, bad }' "$WORK/wrk.out"
}
start_ingest() {
  taskset -c 0 "${1:-$BIN/tributary-ingest}" 2>"$WORK/ingest.log" &
  INGEST=$!
  PIDS+=($INGEST)
  wait_for http://127.0.0.1:8280/healthz || { cat "$WORK/ingest.log" >&2; exit 1; }
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

taskset -c 0 "$BIN/tributary" baseline-server --listen 127.0.0.1:8290 2>/dev/null &
BARE=$!
PIDS+=($BARE)
wait_for 127.0.0.1:8290
start_ingest
"$BIN/tributary" loadgen --target http://127.0.0.1:8280 --tenants 1 --key-server-listen 127.0.0.1:8299 \
  --wrk-script "$WORK/request.lua" 2>/dev/null

echo "== one core for the server (taskset -c 0), wrk on the other, ${DURATION}s each, one pre-signed webhook"
run_wrk "bare, 256 connections" 256 http://127.0.0.1:8290/webhooks/page_created
if [ -n "${PERF_DATA:-}" ]; then
  # Started once wrk is under way and stopped before it ends: the profile is of load only.
  (sleep 1 && exec perf record -q -e cpu-clock -F 999 --call-graph "${PERF_CALL_GRAPH:-fp}" -p "$INGEST" -o "$PERF_DATA" \
    -- sleep "$((DURATION > 3 ? DURATION - 2 : 1))") >/dev/null 2>&1 &
  PERF=$!
fi
run_wrk "ingest, 256 connections" 256 http://127.0.0.1:8280/webhooks/page_created
if [ -n "${PERF_DATA:-}" ]; then wait "$PERF" || echo "perf record failed (is linux-perf installed?)" >&2; fi
run_wrk "bare, 16 connections" 16 http://127.0.0.1:8290/webhooks/page_created
run_wrk "ingest, 16 connections, linger.ms=2" 16 http://127.0.0.1:8280/webhooks/page_created
stop "$INGEST"
export TRIBUTARY_KAFKA_CLIENT_PROPERTIES=linger.ms=0
start_ingest
run_wrk "ingest, 16 connections, linger.ms=0" 16 http://127.0.0.1:8280/webhooks/page_created
run_wrk "ingest, 256 connections, linger.ms=0" 256 http://127.0.0.1:8280/webhooks/page_created
if [ -n "${COMPARE_BIN:-}" ]; then
  unset TRIBUTARY_KAFKA_CLIENT_PROPERTIES
  echo "== BIN_DIR's ingest and COMPARE_BIN's in turn, ${PAIRS:-3} pairs"
  for _ in $(seq 1 "${PAIRS:-3}"); do
    for build in BIN_DIR COMPARE_BIN; do
      stop "$INGEST"
      if [ "$build" = BIN_DIR ]; then start_ingest; else start_ingest "$COMPARE_BIN"; fi
      run_wrk "ingest ($build), 256 connections" 256 http://127.0.0.1:8280/webhooks/page_created
    done
  done
fi
if [ -n "${BARE_PAIRS:-}" ]; then
  unset TRIBUTARY_KAFKA_CLIENT_PROPERTIES
  stop "$INGEST"
  start_ingest
  echo "== the bare server and the ingest in turn, $BARE_PAIRS pairs"
  bare_sum=0
  ingest_sum=0
  for _ in $(seq 1 "$BARE_PAIRS"); do
    bare_line="$(run_wrk "bare, 256 connections" 256 http://127.0.0.1:8290/webhooks/page_created)"
    ingest_line="$(run_wrk "ingest, 256 connections" 256 http://127.0.0.1:8280/webhooks/page_created)"
    bare_rps="$(echo "$bare_line" | awk '{print $4}')"
    ingest_rps="$(echo "$ingest_line" | awk '{print $4}')"
    echo "$bare_line"
    echo "$ingest_line"
    echo "  pair: ingest $((100 * ingest_rps / bare_rps))% of bare"
    bare_sum=$((bare_sum + bare_rps))
    ingest_sum=$((ingest_sum + ingest_rps))
  done
  echo "ingest/bare over $BARE_PAIRS pairs: $((ingest_sum / BARE_PAIRS)) / $((bare_sum / BARE_PAIRS)) requests/s = $((100 * ingest_sum / bare_sum))%"
fi
