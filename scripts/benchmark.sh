#!/usr/bin/env bash
# Reproduces the figures of BENCHMARKS.md on this machine: release binaries, the embedded
# (mock) broker unless KAFKA_BROKERS names a real one, the local PostgreSQL, everything on
# loopback. Prints each measurement as it goes. Bounded: about 5 minutes with the defaults.
#
#   scripts/benchmark.sh                    # mock broker
#   KAFKA_BROKERS=127.0.0.1:9092 scripts/benchmark.sh   # a real Kafka (topics must exist)
#
# Settings: RATE (webhooks/s for the fixed-rate runs, 2000), DURATION (seconds of each
# throughput run, 20), SOAK_SECONDS (the memory run, 120), ADMIN_DATABASE_URL, BIN_DIR
# (binaries built already: no build; e.g. another commit's, to compare on one machine).
set -euo pipefail
cd "$(dirname "$0")/.."

RATE="${RATE:-2000}"
DURATION="${DURATION:-20}"
SOAK_SECONDS="${SOAK_SECONDS:-120}"
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

DB_NAME=tributary_bench
psql -q "$ADMIN_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
export TRIBUTARY_DATABASE_URL="${ADMIN_DATABASE_URL%/*}/$DB_NAME"
export TRIBUTARY_SECRET_KEY="$(head -c 32 /dev/urandom | base64)"
export TRIBUTARY_APP_BASE_URL=http://127.0.0.1:8080
export TRIBUTARY_INGEST_LISTEN=127.0.0.1:8080
export TRIBUTARY_INSTALL_KEYS_URL=http://127.0.0.1:7999
export TRIBUTARY_LOG_FORMAT=json
export RUST_LOG=warn

if [ -n "${KAFKA_BROKERS:-}" ]; then
  export TRIBUTARY_KAFKA_BROKERS="$KAFKA_BROKERS"
  BROKER_LABEL="Kafka at $KAFKA_BROKERS"
else
  "$BIN/tributary" embedded-broker --partitions 6 >"$WORK/broker" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 1 50); do [ -s "$WORK/broker" ] && break; sleep 0.1; done
  export TRIBUTARY_KAFKA_BROKERS="$(head -n 1 "$WORK/broker")"
  BROKER_LABEL="embedded mock broker (librdkafka), not a real Kafka"
  # The mock broker answers a fetch only when the consumer's wait runs out, never when
  # data arrives as a real broker does: the processor waits at most 5 ms here instead of
  # its default 50, so the end-to-end figure measures the pipeline rather than the mock.
  PROCESSOR_KAFKA_PROPERTIES="fetch.wait.max.ms=5"
  BROKER_LABEL="$BROKER_LABEL; processor fetch.wait.max.ms=5"
fi
"$BIN/tributary" migrate >/dev/null

TRIBUTARY_METRICS_LISTEN=127.0.0.1:9464 "$BIN/tributary-ingest" 2>"$WORK/ingest.log" &
INGEST=$!; PIDS+=($INGEST)
"$BIN/tributary" baseline-server --listen 127.0.0.1:8090 2>/dev/null &
PIDS+=($!)
wait_for() { for _ in $(seq 1 100); do "$BIN/tributary" probe "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_for http://127.0.0.1:8080/healthz

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Every PostgreSQL server process's CPU time (the server is shared; nothing else uses it
# during the soak).
postgres_ticks() { for p in $(pgrep -x postgres); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'; }
loadgen() { "$BIN/tributary" loadgen --key-server-listen 127.0.0.1:7999 "$@"; }
# The sum of every sample of one metric on a /metrics page.
metric_sum() { curl -s "$1" | awk -v m="$2" 'index($1, m "{") == 1 || $1 == m {s += $NF} END {printf "%d\n", s}'; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'); broker: $BROKER_LABEL"

echo "== bare baseline (axum answering 204), as fast as it answers, ${DURATION}s"
loadgen --bare --target http://127.0.0.1:8090 --duration "$DURATION" --concurrency 64

echo "== ingest alone (verify JWT + qsh, publish, broker acknowledgement), as fast as it answers, ${DURATION}s"
loadgen --tenants 50 --duration "$DURATION" --concurrency 64

echo "== ingest alone at a fixed ${RATE}/s for ${DURATION}s"
loadgen --tenants 50 --rate "$RATE" --duration "$DURATION"

# The processor starts on the backlog the ingest just wrote: how fast it drains it is its
# throughput. Its only webhook handler is the built-in `log` (a no-op at RUST_LOG=warn that
# still records each handled event in PostgreSQL, as every handler does).
published=$(metric_sum http://127.0.0.1:9464/metrics tributary_ingest_events_published_total)
env ${PROCESSOR_KAFKA_PROPERTIES:+TRIBUTARY_KAFKA_CLIENT_PROPERTIES=$PROCESSOR_KAFKA_PROPERTIES} \
  TRIBUTARY_PROCESSOR_HANDLERS=log TRIBUTARY_METRICS_LISTEN=127.0.0.1:9465 "$BIN/tributary-processor" 2>"$WORK/processor.log" &
PROCESSOR=$!; PIDS+=($PROCESSOR)
wait_for http://127.0.0.1:9465/metrics
consumed() { metric_sum http://127.0.0.1:9465/metrics tributary_processor_events_consumed_total; }
while [ "$(consumed)" -eq 0 ]; do sleep 0.05; done
drain_start=$(date +%s.%N); drained_from=$(consumed)
# Drained when the count stops moving for 3 s. (The mock broker keeps only about 5 MiB per
# partition, like a short retention, so it may hold fewer events than were published.)
last=$drained_from; last_change=$drain_start; idle=0
while [ "$idle" -lt 15 ]; do
  sleep 0.2
  now=$(consumed)
  if [ "$now" -ne "$last" ]; then last=$now; last_change=$(date +%s.%N); idle=0; else idle=$((idle + 1)); fi
done
awk -v n="$last" -v f="$drained_from" -v a="$drain_start" -v b="$last_change" -v p="$published" 'BEGIN {
  printf "processor (built-in log handler, default settings) drained %d events in %.1fs = %.0f events/s (%d published, the rest past the broker'"'"'s retention)\n", n - f, b - a, (n - f) / (b - a), p }'

echo "== ingest at a fixed ${RATE}/s for ${DURATION}s, processor caught up, end-to-end latency from the processor"
loadgen --tenants 50 --rate "$RATE" --duration "$DURATION" --processor-metrics http://127.0.0.1:9465/metrics

echo "== soak: ${RATE}/s for ${SOAK_SECONDS}s, memory sampled every 10s"
ingest_cpu0=$(cpu_ticks "$INGEST"); processor_cpu0=$(cpu_ticks "$PROCESSOR"); postgres_cpu0=$(postgres_ticks)
batches0=$(metric_sum http://127.0.0.1:9465/metrics tributary_processor_batch_size_events_count)
batched0=$(metric_sum http://127.0.0.1:9465/metrics tributary_processor_batch_size_events_sum)
loadgen --tenants 50 --rate "$RATE" --duration "$SOAK_SECONDS" --warmup 0 --processor-metrics http://127.0.0.1:9465/metrics >"$WORK/soak" &
LOADGEN=$!
samples=""
while kill -0 "$LOADGEN" 2>/dev/null; do
  samples="$samples $(( $(rss_kib "$INGEST") / 1024 ))/$(( $(rss_kib "$PROCESSOR") / 1024 ))"
  sleep 10
done
wait "$LOADGEN"
cat "$WORK/soak"
sent=$(awk '/^target=/ { for (i = 1; i <= NF; i++) if ($i ~ /^ok=/) { sub("ok=", "", $i); print $i } }' "$WORK/soak")
tick=$(getconf CLK_TCK)
ingest_cpu=$(( $(cpu_ticks "$INGEST") - ingest_cpu0 ))
processor_cpu=$(( $(cpu_ticks "$PROCESSOR") - processor_cpu0 ))
postgres_cpu=$(( $(postgres_ticks) - postgres_cpu0 ))
batches=$(( $(metric_sum http://127.0.0.1:9465/metrics tributary_processor_batch_size_events_count) - batches0 ))
batched=$(( $(metric_sum http://127.0.0.1:9465/metrics tributary_processor_batch_size_events_sum) - batched0 ))
echo "rss MiB ingest/processor every 10s:$samples"
echo "peak rss: ingest $(( $(hwm_kib "$INGEST") / 1024 )) MiB, processor $(( $(hwm_kib "$PROCESSOR") / 1024 )) MiB"
awk -v s="$sent" -v i="$ingest_cpu" -v p="$processor_cpu" -v t="$tick" 'BEGIN {
  printf "cpu per 1000 events: ingest %.0f ms, processor %.0f ms (%d events)\n", i / t * 1000 / s * 1000, p / t * 1000 / s * 1000, s }'
awk -v s="$sent" -v g="$postgres_cpu" -v t="$tick" -v b="$batches" -v n="$batched" 'BEGIN {
  printf "postgresql cpu per 1000 events: %.0f ms; processor batches: %d, %.1f records each\n", g / t * 1000 / s * 1000, b, (b > 0 ? n / b : 0) }'
