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
# Settings: EVENTS (measured events or requests, 2000), WARMUP (500), RATE (offered load per
# second, 200), ADMIN_DATABASE_URL, BIN_DIR (binaries built already: no build; e.g. to
# compare two builds), and LINE_TABLES=1 to build the release binaries with line tables
# (`CARGO_PROFILE_RELEASE_DEBUG=line-tables-only`): without them the optimiser's inlining
# leaves callgrind a few functions to charge everything to; with them it names the inlined
# functions too. The counts are of the same code either way. Prints the functions that
# executed the most instructions themselves and, inclusive of what they called, the ones
# under which the most ran (TOP of each, 25); KEEP_DUMPS=DIR copies each service's dump
# there for `callgrind_annotate` or KCachegrind.
# Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${EVENTS:-2000}"
WARMUP="${WARMUP:-500}"
ONLY="${ONLY:-all}"
ADMIN_DATABASE_URL="${ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
if [ "${LINE_TABLES:-0}" = 1 ]; then export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only; fi
TOP="${TOP:-25}"
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
# The functions that executed the most instructions themselves (where the time goes), then
# those under which the most ran, callees included (which path it goes on). The first list
# is summed from the dump itself, per function name: callgrind_annotate charges code inlined
# from another file to that file, and some versions list thread entry points with their
# callees' cost as their own.
top() {
  local dump total
  dump="$(newest_dump "$1")"
  total=$(instructions "$1")
  echo "  self:"
  awk '
    /^c?fn=/ {
      s = $0; sub(/^c?fn=/, "", s); id = s
      if (match(s, /^\([0-9]+\)/)) { id = substr(s, 1, RLENGTH); rest = substr(s, RLENGTH + 2); if (rest != "") name[id] = rest }
      else name[id] = s
      if ($0 ~ /^fn=/) cur = id
      next
    }
    /^calls=/ { skip = 1; next }
    /^[0-9+*-]/ { if (skip) { skip = 0; next }; n = split($0, a, " "); self[cur] += a[n]; next }
    END { for (k in self) printf "%d %s\n", self[k], name[k] }' "$dump" |
    sort -rn |
    awk -v total="$total" -v top="$TOP" 'NR <= top {c = $1; $1 = ""; printf "   %12d (%5.2f%%) %s\n", c, 100 * c / total, $0}'
  echo "  inclusive:"
  # Each reader reads to the end: a writer cut off early fails the pipeline (pipefail).
  callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$dump" 2>/dev/null |
    awk -v top="$TOP" '/file:function|Function:file summary/ {f = 1; next} f && /^ *[0-9]/ && n < top {print "   " $0; n++}'
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
  TRIBUTARY_PROCESSOR_HANDLERS=log TRIBUTARY_METRICS_LISTEN=127.0.0.1:9465 \
    under_callgrind processor "$BIN/tributary-processor"
  processor=$SERVICE_PID
  wait_for http://127.0.0.1:9465/metrics
  # The measured window holds the processor's work on the measured events and none of the
  # harness's: one load run (its tenants installed once, before the warm-up), the counters
  # zeroed once the warm-up is handled, the end found by asking PostgreSQL rather than the
  # processor's metrics page, whose rendering would be counted.
  handled_all="scripts/handled-all.sh http://127.0.0.1:9464/metrics $TRIBUTARY_DATABASE_URL"
  loadgen --tenants 50 --rate "$RATE" --duration "$SECONDS_OF_LOAD" --warmup "$WARMUP_SECONDS" --concurrency 16 \
    --after-warmup "$handled_all >$WORK/before && callgrind_control --zero $processor >/dev/null" >/dev/null
  after=$($handled_all)
  callgrind_control --dump "$processor" >/dev/null
  n=$((after - $(cat "$WORK/before")))
  keep_dump processor
  ir=$(instructions processor)
  echo "processor (built-in log handler): $((ir / n)) instructions per event ($ir for $n events)"
  top processor
fi
