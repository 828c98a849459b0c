#!/usr/bin/env bash
# Instructions per event, counted by valgrind's callgrind, which is repeatable on a shared
# machine where timings are not. Each service runs in its own process under callgrind; a
# warm-up is sent, the counters are zeroed, a measured run is sent, and the counters are
# dumped. What the Postgres server and the broker do is not counted (they are other
# processes); only the service's own instructions are.
#
#   scripts/callgrind.sh                    # processor, ingest and the bare baseline
#   ONLY=processor scripts/callgrind.sh     # one of: processor, ingest, bare
#
# Settings: EVENTS (measured events or requests, 2000), WARMUP (500), ADMIN_DATABASE_URL,
# BIN_DIR (binaries built already: no build; e.g. to compare two builds), KEEP_DUMPS (a
# folder to copy the callgrind dumps to).
# Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${EVENTS:-2000}"
WARMUP="${WARMUP:-500}"
ONLY="${ONLY:-all}"
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

[ -n "${BIN_DIR:-}" ] || cargo build --release --locked --bin tributary --bin tributary-ingest --bin tributary-processor >&2

DB_NAME=tributary_callgrind
psql -q "$ADMIN_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
export TRIBUTARY_DATABASE_URL="${ADMIN_DATABASE_URL%/*}/$DB_NAME"
export TRIBUTARY_SECRET_KEY="$(head -c 32 /dev/urandom | base64)"
export TRIBUTARY_APP_BASE_URL=http://127.0.0.1:8080
export TRIBUTARY_INGEST_LISTEN=127.0.0.1:8080
export TRIBUTARY_INSTALL_KEYS_URL=http://127.0.0.1:7999
export RUST_LOG=warn

"$BIN/tributary" embedded-broker --partitions 6 >"$WORK/broker" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$WORK/broker" ] && break; sleep 0.1; done
export TRIBUTARY_KAFKA_BROKERS="$(head -n 1 "$WORK/broker")"
"$BIN/tributary" migrate >/dev/null

probe() { "$BIN/tributary" probe "$1" 2>/dev/null; }
wait_for() { for _ in $(seq 1 600); do probe "$1" && return 0; sleep 0.2; done; return 1; }
metric_sum() { curl -s "$1" | awk -v m="$2" 'index($1, m "{") == 1 || $1 == m {s += $NF} END {printf "%d\n", s}'; }
loadgen() { "$BIN/tributary" loadgen --key-server-listen 127.0.0.1:7999 "$@"; }
# `valgrind` wrapping a service, in the background; $SERVICE_PID is the service's pid.
under_callgrind() {
  local name=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.%p.out" "$@" 2>"$WORK/$name.log" &
  SERVICE_PID=$!
  PIDS+=($SERVICE_PID)
}
newest_dump() { ls -t "$WORK/$1".*.out* | head -n 1; }
# With KEEP_DUMPS=DIR, each service's dump is copied there for callgrind_annotate.
keep_dump() { [ -z "${KEEP_DUMPS:-}" ] || { mkdir -p "$KEEP_DUMPS"; cp "$(newest_dump "$1")" "$KEEP_DUMPS/$1.callgrind.out"; }; }
# Total instructions in the newest dump of one service.
instructions() {
  callgrind_annotate "$(newest_dump "$1")" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
}
# The functions that executed the most instructions themselves: where the time goes.
# callgrind_annotate stops at 99% of the total by default, and lists the threads' entry
# points (clone, start_thread, the runtime's loops) as if they cost everything below them:
# every function is listed, and rows over half the total, which only those can reach, are
# left out.
top() {
  callgrind_annotate --inclusive=no --auto=no --threshold=100 "$(newest_dump "$1")" 2>/dev/null |
    awk '/file:function|Function:file summary/ {f = 1; next}
      f && /^ *[0-9]/ {p = $2; gsub(/[(%)]/, "", p); if (p + 0 >= 50) next; print "   " $0; if (++n == 25) exit}'
}
# Waits until `metric` on `url` has not moved for 3 s; prints its value.
settled() {
  local last=-1 now idle=0
  while [ "$idle" -lt 15 ]; do
    sleep 0.2
    now=$(metric_sum "$1" "$2")
    if [ "$now" -ne "$last" ]; then last=$now; idle=0; else idle=$((idle + 1)); fi
  done
  echo "$last"
}
# Fixed-rate load lasting about EVENTS/RATE seconds.
RATE="${RATE:-200}"
SECONDS_OF_LOAD=$(( (EVENTS + RATE - 1) / RATE ))
WARMUP_SECONDS=$(( (WARMUP + RATE - 1) / RATE ))

if [ "$ONLY" = all ] || [ "$ONLY" = bare ]; then
  under_callgrind bare "$BIN/tributary" baseline-server --listen 127.0.0.1:8090
  pid=$SERVICE_PID
  sleep 3
  loadgen --bare --target http://127.0.0.1:8090 --rate "$RATE" --duration "$WARMUP_SECONDS" --warmup 0 --concurrency 16 >/dev/null
  callgrind_control --zero "$pid" >/dev/null
  out=$(loadgen --bare --target http://127.0.0.1:8090 --rate "$RATE" --duration "$SECONDS_OF_LOAD" --warmup 0 --concurrency 16)
  callgrind_control --dump "$pid" >/dev/null
  n=$(echo "$out" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^ok=/) {sub("ok=", "", $i); print $i; exit}}')
  keep_dump bare
  ir=$(instructions bare)
  echo "bare axum server: $((ir / n)) instructions per request ($ir for $n)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
fi

if [ "$ONLY" = all ] || [ "$ONLY" = ingest ] || [ "$ONLY" = processor ]; then
  if [ "$ONLY" = processor ]; then
    TRIBUTARY_METRICS_LISTEN=127.0.0.1:9464 "$BIN/tributary-ingest" 2>"$WORK/ingest.log" &
    ingest=$!; PIDS+=($ingest)
  else
    TRIBUTARY_METRICS_LISTEN=127.0.0.1:9464 under_callgrind ingest "$BIN/tributary-ingest"
    ingest=$SERVICE_PID
  fi
  wait_for http://127.0.0.1:8080/healthz
fi

published() { metric_sum http://127.0.0.1:9464/metrics tributary_ingest_events_published_total; }

if [ "$ONLY" = all ] || [ "$ONLY" = ingest ]; then
  # One load run: installs and warm-up first, counters zeroed once they are done.
  loadgen --tenants 50 --rate "$RATE" --duration "$SECONDS_OF_LOAD" --warmup "$WARMUP_SECONDS" --concurrency 16 >/dev/null &
  load=$!
  until [ "$(published)" -gt 0 ]; do sleep 0.2; done
  sleep "$WARMUP_SECONDS"
  before=$(published)
  callgrind_control --zero "$ingest" >/dev/null
  wait "$load"
  callgrind_control --dump "$ingest" >/dev/null
  n=$(( $(published) - before ))
  keep_dump ingest
  ir=$(instructions ingest)
  echo "ingest: $((ir / n)) instructions per webhook ($ir for $n)"
  top ingest
fi

if [ "$ONLY" = all ] || [ "$ONLY" = processor ]; then
  # The built-in `log` handler: a no-op at RUST_LOG=warn that still records each handled
  # event in PostgreSQL, as every handler does.
  metrics=http://127.0.0.1:9465/metrics
  consumed=tributary_processor_events_consumed_total
  TRIBUTARY_PROCESSOR_HANDLERS=log TRIBUTARY_METRICS_LISTEN=127.0.0.1:9465 \
    under_callgrind processor "$BIN/tributary-processor"
  processor=$SERVICE_PID
  wait_for "$metrics"
  # Warm-up: join the group, drain what earlier runs left, handle WARMUP new events.
  loadgen --tenants 50 --rate "$RATE" --duration "$WARMUP_SECONDS" --warmup 0 --concurrency 16 >/dev/null
  settled "$metrics" "$consumed" >/dev/null
  before=$(metric_sum "$metrics" "$consumed")
  callgrind_control --zero "$processor" >/dev/null
  loadgen --tenants 50 --rate "$RATE" --duration "$SECONDS_OF_LOAD" --warmup 0 --concurrency 16 >/dev/null
  after=$(settled "$metrics" "$consumed")
  sleep 2
  callgrind_control --dump "$processor" >/dev/null
  n=$((after - before))
  keep_dump processor
  ir=$(instructions processor)
  echo "processor (built-in log handler): $((ir / n)) instructions per event ($ir for $n events)"
  top processor
fi
