#!/usr/bin/env bash
# Measures the rows of the performance table of issue 6 (docs/performance.md) against one broker:
#
#   scripts/perf.sh memory|nats|redis|jetstream [ROW...]
#
# For every run it builds nothing new (the gateway and wsbench are built once, into $OUT/bin),
# starts a fresh gateway on a free port with a topic prefix of its own, runs cmd/wsbench with the
# row's parameters, writes wsbench's JSON report to $OUT/<broker>-<row>-<run>.json (and the table
# to .txt, the gateway's log to .gw.log), stops the gateway, and at the end prints a summary: each
# row's figure (the median over RUNS), its target, and whether it is met.
#
# Rows (all without arguments, in this order):
#   idle      resident memory per idle subscribed connection: IDLE_CONNS (10000), one channel each
#   fanout    FANOUT_CONNS (5000) subscribers of one channel, 50 msg/s: p99 latency and loss, and
#             the server's CPU per 1,000 deliveries (two rows of the table, one run)
#   ssefanout the fanout row over Server-Sent Events (wsbench -transport sse: GET /sse instead of
#             /ws); run it beside fanout (`scripts/perf.sh memory fanout ssefanout`) to compare
#   pinned    the gateway pinned to CPU 0 (taskset), wsbench to CPU 1; FANOUT_CONNS subscribers
#             of one channel offered 200 msg/s: deliveries/s sustained (needs 2 CPUs)
#   channels  2,000 clients on 2,000 channels, 500 msg/s: server CPU per 1,000 deliveries
#   scale     SCALE_CONNS (19000) idle connections on their own channels: does one node hold
#             them (the table's 50,000 need a `nofile` hard limit above 50,000 for both processes;
#             this machine's is 20,000, so the default is what fits)
#   deflate   permessage-deflate off against on, 50 msg/s to the subscribers of one channel:
#             DEFLATE_CONNS (1000) with payloads of 128 B, a quarter of them with 4 KiB (wsbench
#             inflating 50,000 messages of 4 KiB a second needs more than this machine's spare
#             core), padded with words (wsbench -pad words); four runs, each with a fresh
#             gateway: compression off (default) and plain clients, then
#             GATEWAY_WS_COMPRESSION=true and clients offering it (-compression), per size: the
#             server's CPU per 1,000 deliveries and bytes written per delivery
#
# Environment:
#   OUT           results directory (default perf-results/<broker>-<date>)
#   RUNS          runs of each row (default 1); the summary shows the median
#   DURATION      publishing time of the fan-out rows (default 20s)
#   PUBLISH       http (default: POST /api/publish, as in the issue) or broker (straight to the
#                 broker through the service SDK; not with memory)
#   GATEWAY_*     passed to the gateway as usual (e.g. GATEWAY_WS_SEND_BUFFER); the script sets
#                 GATEWAY_BROKER, GATEWAY_ADDR, GATEWAY_TOPIC_PREFIX, GATEWAY_JWT_SECRET,
#                 GATEWAY_API_KEY and GATEWAY_LOG_LEVEL=warn itself. NATS and Redis default to
#                 nats://127.0.0.1:4222 and 127.0.0.1:6379 (GATEWAY_NATS_URL, GATEWAY_REDIS_ADDR).
#
# Every wait is bounded: wsbench stops by itself (and has a watchdog), a gateway that does not
# become ready within 15 s or stop within 15 s of SIGTERM is killed. Needs go, curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
broker=$1; shift
case $broker in
  memory | nats | redis | jetstream) ;;
  *) echo "perf.sh: unknown broker '$broker' (memory, nats, redis, jetstream)" >&2; exit 2 ;;
esac
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(idle fanout pinned channels scale)
for r in "${rows[@]}"; do
  case $r in idle | fanout | ssefanout | pinned | channels | scale | deflate) ;; *) echo "perf.sh: unknown row '$r'" >&2; exit 2 ;; esac
done
for tool in go curl jq; do
  command -v $tool >/dev/null || { echo "perf.sh: $tool is required" >&2; exit 1; }
done

RUNS=${RUNS:-1}
DURATION=${DURATION:-20s}
PUBLISH=${PUBLISH:-http}
IDLE_CONNS=${IDLE_CONNS:-10000}
FANOUT_CONNS=${FANOUT_CONNS:-5000}
SCALE_CONNS=${SCALE_CONNS:-19000}
DEFLATE_CONNS=${DEFLATE_CONNS:-1000}
OUT=${OUT:-perf-results/$broker-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/bin"
if [ "$PUBLISH" = broker ] && [ "$broker" = memory ]; then
  echo "perf.sh: PUBLISH=broker needs a broker outside the gateway (not memory)" >&2; exit 2
fi

echo "perf.sh: building into $OUT/bin"
go build -o "$OUT/bin/gateway" ./cmd/gateway
go build -o "$OUT/bin/wsbench" ./cmd/wsbench

# Both processes may hold many sockets: raise the soft file limit to the hard one.
ulimit -n "$(ulimit -Hn)"

export GATEWAY_BROKER=$broker
export GATEWAY_JWT_SECRET=${PERF_JWT_SECRET:-perf-secret-0123456789abcdef0123456789}
export GATEWAY_API_KEY=${PERF_API_KEY:-perf-api-key-0123456789}
export GATEWAY_LOG_LEVEL=warn
case $broker in
  nats | jetstream) export GATEWAY_NATS_URL=${GATEWAY_NATS_URL:-nats://127.0.0.1:4222} ;;
  redis) export GATEWAY_REDIS_ADDR=${GATEWAY_REDIS_ADDR:-127.0.0.1:6379} ;;
esac

gw_pid=
stop_gateway() {
  [ -n "$gw_pid" ] || return 0
  kill -TERM "$gw_pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$gw_pid" 2>/dev/null || true
  wait "$gw_pid" 2>/dev/null || true
  gw_pid=
}
trap stop_gateway EXIT INT TERM

free_port() { # below the kernel's ephemeral range (32768 and up), where client sockets take ports
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo $p; return; }
  done
  echo "perf.sh: no free port" >&2; exit 1
}

# cleanup_prefix removes what a run left in Redis (streams under its prefix).
cleanup_prefix() {
  if [ "$broker" = redis ] && command -v redis-cli >/dev/null; then
    local host=${GATEWAY_REDIS_ADDR%:*} port=${GATEWAY_REDIS_ADDR##*:}
    redis-cli -h "$host" -p "$port" --scan --pattern "$1*" | xargs -r -n 500 redis-cli -h "$host" -p "$port" del >/dev/null || true
  fi
}

# run NAME PIN WSBENCH-ARGS...: one run of a row with a fresh gateway. PIN is "pinned" or "-".
run() {
  local name=$1 pin=$2; shift 2
  local port prefix base
  prefix="perf$(date +%s)$RANDOM"
  base="$OUT/$broker-$name"
  local gw=("$OUT/bin/gateway") wb=("$OUT/bin/wsbench")
  if [ "$pin" = pinned ]; then
    gw=(taskset -c 0 "${gw[@]}")
    wb=(taskset -c 1 "${wb[@]}")
  fi
  local ready= attempt
  for attempt in 1 2 3; do # a port can be taken between the check and the bind: try another
    port=$(free_port)
    GATEWAY_ADDR=127.0.0.1:$port GATEWAY_TOPIC_PREFIX=$prefix "${gw[@]}" 2>"$base.gw.log" &
    gw_pid=$!
    for _ in $(seq 150); do
      if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then ready=1; break; fi
      kill -0 "$gw_pid" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$ready" ] && break
    stop_gateway
  done
  if [ -z "$ready" ]; then
    echo "perf.sh: $broker $name: the gateway did not become ready; its log:" >&2
    tail -5 "$base.gw.log" >&2
    return 0
  fi
  local pubargs=(-api-key "$GATEWAY_API_KEY")
  [ "$PUBLISH" = broker ] && pubargs=(-publish broker)
  echo "perf.sh: $broker $name: wsbench $*"
  GATEWAY_TOPIC_PREFIX=$prefix "${wb[@]}" -url "http://127.0.0.1:$port" -secret "$GATEWAY_JWT_SECRET" \
    -pid "$gw_pid" -quiet -json "$base.json" "${pubargs[@]}" "$@" >"$base.txt" || true
  cat "$base.txt"
  stop_gateway
  cleanup_prefix "$prefix"
}

for ((i = 1; i <= RUNS; i++)); do
  for r in "${rows[@]}"; do
    case $r in
      idle) run "idle-$i" - -conns "$IDLE_CONNS" -channels 0 -idle -duration 15s -source-ips 4 ;;
      fanout) run "fanout-$i" - -conns "$FANOUT_CONNS" -channels 1 -rate 50 -duration "$DURATION" -publishers 4 ;;
      ssefanout) run "ssefanout-$i" - -conns "$FANOUT_CONNS" -channels 1 -rate 50 -duration "$DURATION" -publishers 4 -transport sse ;;
      pinned) run "pinned-$i" pinned -conns "$FANOUT_CONNS" -channels 1 -rate 200 -duration "$DURATION" -publishers 16 ;;
      channels) run "channels-$i" - -conns 2000 -channels 0 -rate 500 -duration "$DURATION" -publishers 16 ;;
      scale) run "scale-$i" - -conns "$SCALE_CONNS" -channels 0 -idle -duration 20s -inflight 128 -source-ips 4 ;;
      deflate)
        for size in 128 4096; do
          conns=$DEFLATE_CONNS; [ $size = 4096 ] && conns=$((DEFLATE_CONNS / 4))
          GATEWAY_WS_COMPRESSION=false run "deflate-off-$size-$i" - -conns "$conns" -channels 1 -rate 50 -duration "$DURATION" -publishers 4 -payload $size -pad words
          GATEWAY_WS_COMPRESSION=true run "deflate-on-$size-$i" - -conns "$conns" -channels 1 -rate 50 -duration "$DURATION" -publishers 4 -payload $size -pad words -compression
        done ;;
    esac
  done
done

# Summary: the median of each figure over the runs, against the target of issue 6.
median() { jq -s 'map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] | (. * 100 | round) / 100 end'; }
fig() { # fig ROW JQ-EXPR: the median over the row's runs
  local files=("$OUT/$broker-$1"-*.json)
  [ -e "${files[0]}" ] || { echo null; return; }
  for f in "${files[@]}"; do jq "$2" "$f"; done | median
}
line() { # line ROW LABEL VALUE UNIT TARGET OK OTHER-CORES
  printf '%-9s %-46s %12s %-10s %-14s %-8s %s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7"
}
verdict() { if [ "$1" = null ]; then echo "-"; elif [ "$1" = true ]; then echo met; else echo "not met"; fi; }
echo
echo "perf.sh: summary for $broker ($RUNS run(s) per row, median; results in $OUT)"
line row figure value unit target verdict "other processes (cores)"
for r in "${rows[@]}"; do
  other=$(fig "$r" '.host.other_cores // null')
  case $r in
    idle)
      v=$(fig idle '.server.rss_per_connection_kib // null')
      line idle "RSS per idle subscribed connection ($IDLE_CONNS)" "$v" KiB "<= 24" "$(verdict "$(jq -n "$v != null and $v <= 24")")" "$other" ;;
    fanout | ssefanout)
      p99=$(fig "$r" '.latency_ms.p99 // null')
      lost=$(fig "$r" '.deliveries_lost // null')
      cpu=$(fig "$r" '.server.cpu_ms_per_1000_deliveries // null')
      wr=$(fig "$r" '.server.write_syscalls_per_1000_deliveries // null')
      what="$FANOUT_CONNS subs"; [ "$r" = ssefanout ] && what="$FANOUT_CONNS SSE subs"
      line "$r" "$what, 50 msg/s: p99 latency (lost)" "$p99 ($lost)" ms "<= 120, 0 lost" "$(verdict "$(jq -n "$p99 != null and $p99 <= 120 and $lost == 0")")" "$other"
      line "$r" "  same: server CPU per 1,000 deliveries" "$cpu" ms "<= 3.0" "$(verdict "$(jq -n "$cpu != null and $cpu <= 3.0")")" "$other"
      line "$r" "  same: server write syscalls per 1,000" "$wr" "" "" "" "" ;;
    pinned)
      d=$(fig pinned '.deliveries_per_second // null')
      lost=$(fig pinned '.deliveries_lost // null')
      pub=$(fig pinned '.publish_rate // null')
      line pinned "1 core, $FANOUT_CONNS subs offered 200 msg/s: deliv/s (lost)" "$d ($lost)" "/s" ">= 900k, 0 lost" "$(verdict "$(jq -n "$d != null and $d >= 900000 and $lost == 0")")" "$other"
      line pinned "  same: messages published per second" "$pub" "/s" "200" "" "" ;;
    channels)
      cpu=$(fig channels '.server.cpu_ms_per_1000_deliveries // null')
      line channels "2,000 channels, 500 msg/s: CPU per 1,000 deliveries" "$cpu" ms "<= 150" "$(verdict "$(jq -n "$cpu != null and $cpu <= 150")")" "$other" ;;
    scale)
      sub=$(fig scale '.subscribed // null')
      closed=$(fig scale '.connections_closed_during_run // null')
      rss=$(fig scale '.server.rss_per_connection_kib // null')
      line scale "idle connections held ($SCALE_CONNS asked; $rss KiB each)" "$sub" conns "50,000" "$(verdict "$(jq -n "$sub != null and $sub >= 50000 and $closed == 0")")" "$other" ;;
    deflate)
      for size in 128 4096; do
        for mode in off on; do
          n="deflate-$mode-$size"
          other=$(fig "$n" '.host.other_cores // null')
          cpu=$(fig "$n" '.server.cpu_ms_per_1000_deliveries // null')
          by=$(fig "$n" '.server.write_bytes_per_delivery // null')
          p99=$(fig "$n" '.latency_ms.p99 // null')
          lost=$(fig "$n" '.deliveries_lost // null')
          z=$(fig "$n" '.connections_compressed // 0')
          line deflate "$size B, compression $mode ($z compressing): CPU/1,000" "$cpu" ms "" "" "$other"
          line deflate "  same: bytes written per delivery" "$by" B "" "" ""
          line deflate "  same: p99 latency (lost)" "$p99 ($lost)" ms "" "" ""
        done
      done ;;
  esac
done
