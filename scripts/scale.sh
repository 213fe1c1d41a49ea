#!/usr/bin/env bash
# 50,000 connections held by three gateway nodes on this machine, and a fan-out to all of them
# (issue 17, docs/scaling.md), not in CI:
#
#   scripts/scale.sh nats|redis
#
# The per-process open-file limit here is 20,000 and cannot be raised, so: three nodes of
# ~16,700 connections each (GATEWAY_NODE_ID scale-1..3, over this run's own nats-server or
# redis-server on free loopback ports), and SCALE_PROCS wsbench processes holding
# SCALE_CONNS/SCALE_PROCS connections each (-idle), connection i of a process on node i mod 3,
# from the source addresses 127.0.0.2..5 (wsbench -source-ips 4: one source address reaches one
# node port from at most 28,232 ephemeral ports, 32768-60999). Every connection subscribes to
# one channel. Once the nodes' gateway_connections add up to SCALE_CONNS (or SCALE_CONNECT_WAIT
# seconds passed), one more wsbench process (one connection, on the same channel) publishes
# SCALE_RATE messages/s for SCALE_PUBLISH through the nodes' HTTP API; then the holders are
# stopped (SIGTERM: each writes its report) and $OUT/summary.txt says: connections held per
# node, connect time, RSS per connection (nodes' RSS once connected minus before, over the
# connections), goroutines and open files per node, the messages published, the deliveries
# owed (messages × subscribers) and received, the nodes' CPU time from the start of the fan-out
# to its end (/proc utime+stime: with the holders' idle upkeep, but it is small) per 1,000
# deliveries, and the latency percentiles of each process.
#
# Environment (defaults in brackets):
#   SCALE_CONNS    connections in all [50000]         SCALE_PROCS    holding processes [4]
#   SCALE_RATE     messages/s of the fan-out [1]      SCALE_PUBLISH  publishing time [10s]
#   SCALE_RAMP     connections/s per process [150]    SCALE_CONNECT_WAIT  seconds [300]
#   (wsbench stops opening connections after conns/ramp + 30 s: on a busy machine a Redis
#   node subscribes fewer than 200 a second per process, so a faster ramp leaves some unopened)
#   OUT            results [/tmp/scale-<broker>-<date>]
#
# Every wait is bounded; the nodes, the broker and the wsbench processes are stopped on exit.
# Needs go, curl, jq, and nats-server or redis-server. Uses some 3 GiB of memory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() { sed -n '5,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 1 ] || usage
broker=$1
case $broker in
  nats) command -v nats-server >/dev/null || { echo "scale.sh: nats-server is required" >&2; exit 1; } ;;
  redis) command -v redis-server >/dev/null || { echo "scale.sh: redis-server is required" >&2; exit 1; } ;;
  *) usage ;;
esac
for tool in go curl jq; do
  command -v $tool >/dev/null || { echo "scale.sh: $tool is required" >&2; exit 1; }
done

SCALE_CONNS=${SCALE_CONNS:-50000}
SCALE_PROCS=${SCALE_PROCS:-4}
SCALE_RATE=${SCALE_RATE:-1}
SCALE_PUBLISH=${SCALE_PUBLISH:-10s}
SCALE_RAMP=${SCALE_RAMP:-150}
SCALE_CONNECT_WAIT=${SCALE_CONNECT_WAIT:-300}
OUT=${OUT:-/tmp/scale-$broker-$(date +%Y%m%d-%H%M%S)}
per=$((SCALE_CONNS / SCALE_PROCS))
[ "$per" -ge 1 ] && [ "$per" -lt 19000 ] || { echo "scale.sh: SCALE_CONNS/SCALE_PROCS must be 1 to 18999 (a process may hold 20,000 files)" >&2; exit 2; }
[ $((SCALE_CONNS / 3)) -lt 19500 ] || { echo "scale.sh: SCALE_CONNS/3 must stay below 19,500 (a node may hold 20,000 files)" >&2; exit 2; }
mkdir -p "$OUT/bin"
echo "scale.sh: results in $OUT"
go build -o "$OUT/bin/" ./cmd/gateway ./cmd/wsbench
ulimit -n "$(ulimit -Hn)"

stop_wait=30 # seconds for each process to stop
trap stop_all EXIT INT TERM # stops everything this script started (pids, scripts/lib.sh)

free_port bport
case $broker in
  nats)
    nats-server -a 127.0.0.1 -p "$bport" >"$OUT/broker.log" 2>&1 &
    pids+=($!)
    export GATEWAY_NATS_URL=nats://127.0.0.1:$bport ;;
  redis)
    redis-server --bind 127.0.0.1 --port "$bport" --save "" --appendonly no >"$OUT/broker.log" 2>&1 &
    pids+=($!)
    export GATEWAY_REDIS_ADDR=127.0.0.1:$bport ;;
esac
wait_port "$bport"

export GATEWAY_BROKER=$broker
export GATEWAY_JWT_SECRET=${SCALE_JWT_SECRET:-scale-secret-0123456789abcdef0123456789}
export GATEWAY_API_KEY=${SCALE_API_KEY:-scale-api-key-0123456789}
export GATEWAY_LOG_LEVEL=warn GATEWAY_TOPIC_PREFIX=scale$$

start_nodes scale

metric() { # metric PORT NAME: the sum of a Prometheus metric's samples on a node
  curl -sf --max-time 10 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2; n++ } END { printf "%d", s }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime+stime, clock ticks
node_ticks() { local k t=0; for k in 0 1 2; do t=$((t + $(ticks "${node_pids[k]}"))); done; echo $t; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
nodes_line() { # one line per node: connections, subscriptions, RSS, goroutines, open files
  local k
  for k in 0 1 2; do
    printf 'node%d: connections %s, subscriptions %s, rss %.1f MiB, goroutines %s, open files %s\n' $((k + 1)) \
      "$(metric "${node_ports[k]}" gateway_connections)" "$(metric "${node_ports[k]}" gateway_subscriptions)" \
      "$(awk -v r="$(rss_kib "${node_pids[k]}")" 'BEGIN { print r / 1024 }')" \
      "$(metric "${node_ports[k]}" go_goroutines)" "$(fds "${node_pids[k]}")"
  done
}
rss0=0
for k in 0 1 2; do rss0=$((rss0 + $(rss_kib "${node_pids[k]}"))); done

# The holders.
holders=()
t0=$(date +%s)
for ((p = 1; p <= SCALE_PROCS; p++)); do
  "$OUT/bin/wsbench" -url "$urls" -conns "$per" -channels 1 -channel-prefix scale -secret "$GATEWAY_JWT_SECRET" \
    -idle -duration 30m -ramp "$SCALE_RAMP" -inflight 64 -source-ips 4 \
    -json "$OUT/holder-$p.json" >"$OUT/holder-$p.txt" 2>"$OUT/holder-$p.log" &
  pids+=($!); holders+=($!)
done
want=$((per * SCALE_PROCS))
held=0
while :; do
  sleep 2
  held=0
  for k in 0 1 2; do held=$((held + $(metric "${node_ports[k]}" gateway_subscriptions))); done
  el=$(($(date +%s) - t0))
  echo "scale.sh: ${el}s: $held of $want subscribed"
  [ "$held" -ge "$want" ] && break
  [ "$el" -ge "$SCALE_CONNECT_WAIT" ] && { echo "scale.sh: stopped waiting after ${SCALE_CONNECT_WAIT}s"; break; }
  alive=0; for h in "${holders[@]}"; do kill -0 "$h" 2>/dev/null && alive=1; done
  [ $alive = 1 ] || { echo "scale.sh: every holder exited"; break; }
done
connect_s=$(($(date +%s) - t0))
sleep 5 # settle
rss1=0
for k in 0 1 2; do rss1=$((rss1 + $(rss_kib "${node_pids[k]}"))); done
connected=$(nodes_line)
echo "$connected"

# The fan-out: one more process, one connection on the channel, publishing.
ticks0=$(node_ticks); tf0=$(date +%s.%N)
"$OUT/bin/wsbench" -url "$urls" -conns 1 -channels 1 -channel-prefix scale -secret "$GATEWAY_JWT_SECRET" \
  -api-key "$GATEWAY_API_KEY" -rate "$SCALE_RATE" -duration "$SCALE_PUBLISH" -publishers 1 -grace 30s \
  -json "$OUT/publisher.json" >"$OUT/publisher.txt" 2>"$OUT/publisher.log" || true
sleep 10 # the holders' last deliveries (the publisher waited for its own)
ticks1=$(node_ticks); tf1=$(date +%s.%N)
during=$(nodes_line)
for h in "${holders[@]}"; do kill -TERM "$h" 2>/dev/null || true; done
for h in "${holders[@]}"; do
  for _ in $(seq 300); do kill -0 "$h" 2>/dev/null || break; sleep 0.1; done
  wait "$h" 2>/dev/null || true
done

{
  echo "scale.sh $broker: $want connections asked ($SCALE_PROCS processes of $per), 3 nodes, one channel; $(date -u)"
  echo "subscribed (the nodes' gateway_subscriptions): $held after ${connect_s}s"
  echo "once connected:"
  echo "$connected"
  awk -v a="$rss0" -v b="$rss1" -v n="$held" 'BEGIN { printf "nodes RSS: %.1f MiB before, %.1f MiB connected: %.1f KiB per connection\n", a / 1024, b / 1024, (b - a) / n }'
  echo "after the fan-out:"
  echo "$during"
  jq -s --slurpfile pr "$OUT/publisher.json" '($pr[0]) as $p | {
      holders_subscribed: (map(.subscribed) | add), holders_failed: (map(.connections_failed + .subscribe_failed) | add),
      connect_errors: (map(.connect_errors // {} | to_entries) | add | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)}) | from_entries),
      holders_closed_during_run: (map(.connections_closed_during_run) | add),
      published: $p.published, publish_errors: $p.publish_errors,
      deliveries_owed: ($p.published * ((map(.subscribed) | add) + $p.subscribed)),
      deliveries_received: ((map(.deliveries_received) | add) + $p.deliveries_received),
      latency_ms_per_holder: map(.latency_ms | {p50, p99, max})
    }' "$OUT"/holder-*.json
  recv=$(jq -s 'map(.deliveries_received) | add' "$OUT"/holder-*.json)
  awk -v a="$ticks0" -v b="$ticks1" -v hz="$(getconf CLK_TCK)" -v r="$recv" -v t0="$tf0" -v t1="$tf1" 'BEGIN {
    ms = (b - a) * 1000 / hz
    printf "nodes CPU during the fan-out (%.0f s): %.0f ms, %.2f ms per 1,000 deliveries to the holders (%d)\n", t1 - t0, ms, ms / (r / 1000), r }'
  echo "publisher (one connection):"
  grep -E 'published|deliveries|latency' "$OUT/publisher.txt" || true
} | tee "$OUT/summary.txt"
