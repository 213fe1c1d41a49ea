#!/usr/bin/env bash
# The soak of issue 17 (docs/scaling.md), not in CI: three gateway nodes over one broker, clients
# that keep resuming on another node, steady publishing, and the nodes and the broker sampled
# until the end:
#
#   scripts/soak.sh jetstream|redis
#
# It builds the gateway, wsbench and scripts/soakplot into $OUT/bin, starts its own broker on free
# loopback ports (nats-server -js with its monitor port, or redis-server: the numbers are this
# run's alone), three nodes (GATEWAY_NODE_ID soak-1..3), then SOAK_PROCS wsbench processes that
# together hold SOAK_CONNS connections spread over the three nodes. Each process publishes to
# its own SOAK_CHANNELS channels through the nodes' HTTP API (round-robin over the nodes) and
# churns: SOAK_CHURN connections a second are closed and resumed on the next node with
# since=<last position> (wsbench -churn), and at the end it checks by sequence number that
# every message published after a connection's first subscribe reached it once (-gaps).
#
# Every SOAK_SAMPLE seconds it writes a row to $OUT/samples.csv: for each node its RSS and the
# cores it used since the previous sample (/proc), goroutines and connections (/metrics), open
# file descriptors (/proc/PID/fd), and the broker's memory (redis INFO used_memory, or
# nats-server /jsz storage, and its JetStream consumers), RSS and cores. At the end:
# PNG charts of the samples (scripts/soakplot) in $OUT/plots, each wsbench report in
# $OUT/wsbench-N.{txt,json}, and $OUT/summary.txt (the sums of the reports and the first and last
# samples). With SOAK_DOCS=DIR the PNGs, the CSV and the summary are copied to DIR.
#
# Environment (defaults in brackets):
#   SOAK_DURATION  publishing time [30m]          SOAK_CONNS     connections in all [10000]
#   SOAK_PROCS     wsbench processes [4]          SOAK_CHANNELS  channels per process [100]
#   SOAK_RATE      messages/s per process [25]    SOAK_CHURN     resumes/s per process [5]
#   SOAK_SAMPLE    seconds between samples [10]   OUT            results [/tmp/soak-<broker>-<date>]
#   SOAK_MAX_LEN   GATEWAY_REDIS_MAX_LEN [2000]   SOAK_MAX_AGE   GATEWAY_JETSTREAM_MAX_AGE [5m]
#   NATS_SERVER    the nats-server binary [nats-server from PATH]
#   NATS_CONF      a nats-server configuration file, passed with -c [none]; nats-server 2.11 and
#                  later allow 1,000 consumers per stream by default, fewer than the soak's
#                  channels × nodes: give it `jetstream { limits { default_max_consumers: -1 } }`
#   (the history is bounded so that the broker's memory reaches its plateau within the run;
#   a resume needs seconds of it)
#
# Every wait is bounded: wsbench stops by itself (and has a watchdog); the nodes and the broker
# are stopped on exit, killed if they do not stop within 15 s. Needs go, curl, jq, and
# nats-server or redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() { sed -n '5,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 1 ] || usage
broker=$1
case $broker in
  jetstream) command -v "${NATS_SERVER:-nats-server}" >/dev/null || { echo "soak.sh: nats-server is required" >&2; exit 1; } ;;
  redis) command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { echo "soak.sh: redis-server and redis-cli are required" >&2; exit 1; } ;;
  *) usage ;;
esac
for tool in go curl jq; do
  command -v $tool >/dev/null || { echo "soak.sh: $tool is required" >&2; exit 1; }
done

SOAK_DURATION=${SOAK_DURATION:-30m}
SOAK_CONNS=${SOAK_CONNS:-10000}
SOAK_PROCS=${SOAK_PROCS:-4}
SOAK_CHANNELS=${SOAK_CHANNELS:-100}
SOAK_RATE=${SOAK_RATE:-25}
SOAK_CHURN=${SOAK_CHURN:-5}
SOAK_SAMPLE=${SOAK_SAMPLE:-10}
SOAK_MAX_LEN=${SOAK_MAX_LEN:-2000}
SOAK_MAX_AGE=${SOAK_MAX_AGE:-5m}
OUT=${OUT:-/tmp/soak-$broker-$(date +%Y%m%d-%H%M%S)}
per=$((SOAK_CONNS / SOAK_PROCS))
[ "$per" -ge 1 ] && [ "$per" -lt 19000 ] || { echo "soak.sh: SOAK_CONNS/SOAK_PROCS must be 1 to 18999 (a process may hold 20,000 files)" >&2; exit 2; }
mkdir -p "$OUT/bin"
echo "soak.sh: results in $OUT"

go build -o "$OUT/bin/" ./cmd/gateway ./cmd/wsbench
(cd scripts/soakplot && go build -o "$OUT/bin/soakplot" .)
ulimit -n "$(ulimit -Hn)"

trap stop_all EXIT INT TERM # stops everything this script started (pids, scripts/lib.sh)

# The broker, this run's own.
free_port bport
case $broker in
  jetstream)
    free_port mport
    conf=(); [ -n "${NATS_CONF:-}" ] && conf=(-c "$NATS_CONF")
    "${NATS_SERVER:-nats-server}" "${conf[@]}" -js -a 127.0.0.1 -p "$bport" -m "$mport" -sd "$OUT/js" >"$OUT/broker.log" 2>&1 &
    pids+=($!); broker_pid=$!
    export GATEWAY_NATS_URL=nats://127.0.0.1:$bport GATEWAY_JETSTREAM_MAX_AGE=$SOAK_MAX_AGE ;;
  redis)
    redis-server --bind 127.0.0.1 --port "$bport" --save "" --appendonly no --maxclients 10000 >"$OUT/broker.log" 2>&1 &
    pids+=($!); broker_pid=$!
    export GATEWAY_REDIS_ADDR=127.0.0.1:$bport GATEWAY_REDIS_MAX_LEN=$SOAK_MAX_LEN ;;
esac
wait_port "$bport"

export GATEWAY_BROKER=$broker
export GATEWAY_JWT_SECRET=${SOAK_JWT_SECRET:-soak-secret-0123456789abcdef0123456789}
export GATEWAY_API_KEY=${SOAK_API_KEY:-soak-api-key-0123456789}
export GATEWAY_LOG_LEVEL=warn GATEWAY_TOPIC_PREFIX=soak$$

# Three nodes.
start_nodes soak
echo "soak.sh: $broker on 127.0.0.1:$bport, nodes $urls"

# The samples.
metric() { # metric PORT NAME: the sum of a Prometheus metric's samples on a node
  curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2; n++ } END { if (n) printf "%d", s }'
}
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; } # utime+stime, clock ticks
hz=$(getconf CLK_TCK)
declare -A last_ticks=()
cores() { # cores PID: cores used by PID since the previous call for it (empty the first time)
  local now t
  now=$(date +%s.%N); t=$(ticks "$1")
  if [ -n "${last_ticks[$1]:-}" ]; then
    awk -v t="$t" -v p="${last_ticks[$1]% *}" -v n="$now" -v q="${last_ticks[$1]#* }" -v hz="$hz" 'BEGIN { if (n > q) printf "%.3f", (t - p) / hz / (n - q) }'
  fi
  last_ticks[$1]="$t $now"
}
header="t_min"
for k in 1 2 3; do header+=",node$k:rss_mib"; done
for k in 1 2 3; do header+=",node$k:goroutines"; done
for k in 1 2 3; do header+=",node$k:open_fds"; done
for k in 1 2 3; do header+=",node$k:connections"; done
for k in 1 2 3; do header+=",node$k:cpu_cores"; done
case $broker in
  jetstream) header+=",broker:rss_mib,broker:stored_mib,broker:cpu_cores,broker:consumers" ;;
  redis) header+=",broker:rss_mib,broker:used_memory_mib,broker:cpu_cores" ;;
esac
echo "$header" >"$OUT/samples.csv"
t0=$(date +%s)
sample() {
  local row k
  row=$(awk -v a="$(date +%s)" -v b="$t0" 'BEGIN { printf "%.2f", (a - b) / 60 }')
  for k in 0 1 2; do row+=",$(rss_mib "${node_pids[k]}")"; done
  for k in 0 1 2; do row+=",$(metric "${node_ports[k]}" go_goroutines)"; done
  for k in 0 1 2; do row+=",$(fds "${node_pids[k]}")"; done
  for k in 0 1 2; do row+=",$(metric "${node_ports[k]}" gateway_connections)"; done
  for k in 0 1 2; do cores "${node_pids[k]}" >"$OUT/.c"; row+=",$(cat "$OUT/.c")"; done
  row+=",$(rss_mib "$broker_pid")"
  case $broker in
    jetstream) row+=",$(curl -sf --max-time 5 "http://127.0.0.1:$mport/jsz" | jq -r '(.storage + .memory) / 1048576 * 10 | round / 10' 2>/dev/null)" ;;
    redis) row+=",$(redis-cli -p "$bport" info memory | awk -F: '/^used_memory:/ { printf "%.1f", $2 / 1048576 }')" ;;
  esac
  cores "$broker_pid" >"$OUT/.c"; row+=",$(cat "$OUT/.c")"
  [ "$broker" = jetstream ] && row+=",$(curl -sf --max-time 5 "http://127.0.0.1:$mport/jsz" | jq -r '.consumers' 2>/dev/null)"
  echo "$row" >>"$OUT/samples.csv"
}
sample

# The load: SOAK_PROCS wsbench processes, each on its own channels.
bench_pids=()
for ((p = 1; p <= SOAK_PROCS; p++)); do
  "$OUT/bin/wsbench" -url "$urls" -conns "$per" -channels "$SOAK_CHANNELS" -channel-prefix "soak.p$p" \
    -secret "$GATEWAY_JWT_SECRET" -api-key "$GATEWAY_API_KEY" -rate "$SOAK_RATE" -publishers 4 \
    -duration "$SOAK_DURATION" -churn "$SOAK_CHURN" -grace 15s -inflight 32 -ramp 500 \
    -json "$OUT/wsbench-$p.json" >"$OUT/wsbench-$p.txt" 2>"$OUT/wsbench-$p.log" &
  pids+=($!); bench_pids+=($!)
done
running() { local p; for p in "${bench_pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
while running; do
  sleep "$SOAK_SAMPLE"
  sample
  tail -qn1 "$OUT"/wsbench-1.log | cut -c1-200
done
for p in "${bench_pids[@]}"; do wait "$p" || true; done
sleep 5 # the nodes notice the closes
sample

# Summary and charts.
{
  echo "soak.sh $broker: $SOAK_CONNS connections ($SOAK_PROCS processes), 3 nodes, $SOAK_DURATION, $((SOAK_RATE * SOAK_PROCS)) msg/s, $((SOAK_CHURN * SOAK_PROCS)) resumes/s asked; $(date -u)"
  jq -s '{
      subscribed: (map(.subscribed) | add), connect_failed: (map(.connections_failed + .subscribe_failed) | add),
      published: (map(.published) | add), publish_errors: (map(.publish_errors) | add), publish_skipped: (map(.publish_skipped) | add),
      deliveries_expected: (map(.deliveries_expected) | add), deliveries_received: (map(.deliveries_received) | add),
      deliveries_lost: (map(.deliveries_lost) | add), closed_during_run: (map(.connections_closed_during_run) | add),
      resumes: (map(.churn.resumes) | add), recovered: (map(.churn.recovered) | add), not_recovered: (map(.churn.not_recovered) | add),
      resume_failed: (map(.churn.failed) | add), resumes_unfinished_at_end: (map(.churn.unfinished) | add),
      gap_owed: (map(.gaps.checked) | add), gap_missing: (map(.gaps.missing) | add), duplicates: (map(.gaps.duplicates) | add),
      conns_with_gaps: (map(.gaps.conns_with_gaps) | add),
      latency_p50_ms_max_of_processes: (map(.latency_ms.p50) | max), latency_p99_ms_max_of_processes: (map(.latency_ms.p99) | max),
      connect_errors: (map(.connect_errors // {} | to_entries) | add | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)}) | from_entries),
      disconnects: (map(.disconnects_by_code // {} | to_entries) | add | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)}) | from_entries),
      publish_errors_by_kind: (map(.publish_errors_by_kind // {} | to_entries) | add | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)}) | from_entries)
    }' "$OUT"/wsbench-*.json
  echo "samples (first, after connecting, last under load, after closing):"
  head -1 "$OUT/samples.csv"
  sed -n '2p;3p' "$OUT/samples.csv"
  tail -2 "$OUT/samples.csv"
} | tee "$OUT/summary.txt"
"$OUT/bin/soakplot" -csv "$OUT/samples.csv" -out "$OUT/plots" -title "soak $broker" >/dev/null
if [ -n "${SOAK_DOCS:-}" ]; then
  mkdir -p "$SOAK_DOCS"
  for f in "$OUT"/plots/*.png; do cp "$f" "$SOAK_DOCS/$broker-$(basename "$f")"; done
  cp "$OUT/samples.csv" "$SOAK_DOCS/$broker-samples.csv"
  cp "$OUT/summary.txt" "$SOAK_DOCS/$broker-summary.txt"
fi
echo "soak.sh: done; charts in $OUT/plots"
