#!/usr/bin/env bash
# Instructions per request of the ingest and of the bare axum baseline, counted by callgrind:
# repeatable on a shared machine where timings are not. Each server runs under
# `valgrind --tool=callgrind`, takes a warm-up of REQUESTS requests, has its counters zeroed,
# takes REQUESTS more, and is dumped; the count covers every thread of the process (for the
# ingest that includes librdkafka's). The embedded (mock) broker and the load generator run
# natively beside it. Bounded: a few minutes with the defaults.
#
#   scripts/callgrind-ingest.sh              # 2,000 requests each
#   REQUESTS=500 scripts/callgrind-ingest.sh
#
# Settings: REQUESTS (2000), CONCURRENCY (16), ADMIN_DATABASE_URL, KEEP (a directory to
# keep the callgrind files in, for callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS="${REQUESTS:-2000}"
CONCURRENCY="${CONCURRENCY:-16}"
ADMIN_DATABASE_URL="${ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/*.callgrind* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
cargo build --release --locked --bin tributary --bin tributary-ingest >&2

DB_NAME=tributary_callgrind
psql -q "$ADMIN_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
export TRIBUTARY_DATABASE_URL="${ADMIN_DATABASE_URL%/*}/$DB_NAME"
export TRIBUTARY_SECRET_KEY="$(head -c 32 /dev/urandom | base64)"
export TRIBUTARY_APP_BASE_URL=http://127.0.0.1:8180
export TRIBUTARY_INGEST_LISTEN=127.0.0.1:8180
export TRIBUTARY_INSTALL_KEYS_URL=http://127.0.0.1:8199
export TRIBUTARY_METRICS_LISTEN=127.0.0.1:9564
export TRIBUTARY_LOG_FORMAT=json
export RUST_LOG=warn

"$BIN/tributary" embedded-broker --partitions 6 >"$WORK/broker" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$WORK/broker" ] && break; sleep 0.1; done
export TRIBUTARY_KAFKA_BROKERS="$(head -n 1 "$WORK/broker")"
"$BIN/tributary" migrate >/dev/null

# Waits for a health URL to answer 2xx, or (a bare host:port) for the port to accept.
wait_for() {
  for _ in $(seq 1 600); do
    case "$1" in
      http*) "$BIN/tributary" probe "$1" 2>/dev/null && return 0 ;;
      *) (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0 ;;
    esac
    sleep 0.2
  done
  return 1
}
# Run in the background: `exec`, so that `$!` is valgrind's own pid, which callgrind_control
# needs (a backgrounded function is a subshell of its own otherwise).
callgrind() {
  exec valgrind --tool=callgrind --callgrind-out-file="$WORK/$1.callgrind" "${@:2}"
}
# Sum of the Ir totals of the dumps of one run after the zeroing (normally one file).
measured_ir() {
  local total=0 file
  for file in "$WORK/$1".callgrind.*; do
    [ -e "$file" ] || continue
    total=$((total + $(awk '/^(summary|totals):/ {print $2; exit}' "$file")))
  done
  echo "$total"
}

# Runs one server under callgrind, measures REQUESTS requests, prints Ir per request.
measure() {
  local name="$1" url="$2" probe="$3" server
  shift 3
  local args=("$@")
  callgrind "$name" "${SERVER[@]}" 2>"$WORK/$name.log" &
  server=$!
  PIDS+=($server)
  wait_for "$probe" || { echo "$name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1; }
  "$BIN/tributary" loadgen --target "$url" --requests "$REQUESTS" --concurrency "$CONCURRENCY" \
    --after-warmup "callgrind_control -z $server >/dev/null" "${args[@]}" >"$WORK/$name.loadgen"
  callgrind_control -d "$server" >/dev/null
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  local ok
  ok=$(awk '/^target=/ { for (i = 1; i <= NF; i++) if ($i ~ /^ok=/) { sub("ok=", "", $i); print $i } }' "$WORK/$name.loadgen")
  if [ "$ok" != "$REQUESTS" ]; then
    echo "$name answered $ok of $REQUESTS requests with 2xx:" >&2
    cat "$WORK/$name.loadgen" >&2
    exit 1
  fi
  local ir
  ir=$(measured_ir "$name")
  [ "$ir" -gt 0 ] || { echo "$name: no callgrind dump after the warm-up" >&2; exit 1; }
  echo "$ir" >"$WORK/$name.ir"
  awk -v n="$name" -v ir="$ir" -v r="$REQUESTS" 'BEGIN {
    printf "%s: %d instructions for %d requests = %.0f instructions per request\n", n, ir, r, ir / r }'
}

echo "== callgrind, ${REQUESTS} requests after ${REQUESTS} of warm-up, ${CONCURRENCY} in flight"
SERVER=("$BIN/tributary" baseline-server --listen 127.0.0.1:8190)
measure bare http://127.0.0.1:8190 127.0.0.1:8190 --bare --tenants 0

SERVER=("$BIN/tributary-ingest")
measure ingest http://127.0.0.1:8180 http://127.0.0.1:8180/healthz \
  --tenants 20 --key-server-listen 127.0.0.1:8199

awk -v b="$(cat "$WORK/bare.ir")" -v i="$(cat "$WORK/ingest.ir")" 'BEGIN {
  printf "ingest / bare: %.1fx\n", i / b }'
