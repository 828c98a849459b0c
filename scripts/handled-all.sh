#!/usr/bin/env bash
# Waits until the processor has handled every event the ingest published: the ingest's
# published counter against the built-in log handler's records in PostgreSQL. Asking the
# database rather than the processor's metrics page keeps the wait out of a profile of
# the processor. Prints how many events the log handler has handled.
#
#   scripts/handled-all.sh INGEST_METRICS_URL DATABASE_URL
set -euo pipefail
ingest_metrics=$1
database_url=$2
metric=tributary_ingest_events_published_total
handled() {
  psql -Atq "$database_url" -c "SELECT count(*) FROM handled_events WHERE handler = 'tributary.log'"
}
want=$(curl -s "$ingest_metrics" | awk -v m="$metric" 'index($1, m "{") == 1 || $1 == m {s += $NF} END {printf "%d\n", s}')
have=0
for _ in $(seq 1 6000); do
  have=$(handled)
  if [ "$have" -ge "$want" ]; then
    echo "$have"
    exit 0
  fi
  sleep 0.1
done
echo "the processor did not catch up: $have of $want events handled" >&2
exit 1
