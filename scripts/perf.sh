#!/usr/bin/env bash
# Measures the rows of the performance table of issue 6 (docs/performance.md) against one broker:
#
#   scripts/perf.sh memory|nats|redis|jetstream [ROW...]
#   scripts/perf.sh compare REF ROW [BROKER]    a git ref against the work tree (below)
#   scripts/perf.sh table [ROW...]              the reference table of issue 18 (below)
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
# compare REF ROW [BROKER] (BROKER default memory; ROW one of idle fanout channels pinned, or
#   several separated by commas): builds the gateway at REF (a git worktree under /tmp, removed
#   afterwards) and from the work tree, then runs the row ROUNDS (3) times for both, old and new
#   alternating (old, new, new, old, old, new: neither always goes first), each run with a fresh
#   gateway and a fresh broker server. It prints each figure's median for both builds, and the
#   ratio new/old: the median of the per-round ratios and their range. The same wsbench (the work
#   tree's) loads both builds, so that a change to the load tool does not show as one to the
#   gateway; COMPARE_WSBENCH=ref uses the one built at REF for REF's runs.
#
# table [ROW...] (default idle fanout channels channelsdk pinned): the table of issue 18 in one
#   command; channelsdk is the channels row published by a service through the SDK straight on
#   the broker (PUBLISH=broker), run for the gateway on redis, nats and jetstream only.
#   Every column is run once per round, ROUNDS (3) rounds, columns in a rotating order: Centrifugo
#   with its memory and its Redis engine (needs CENTRIFUGO_BIN, see docs/performance.md for how to
#   build v6.9.1; left out without it), bare melody (cmd/baremelody), and the gateway on memory,
#   redis, nats and jetstream (PERF_COLUMNS overrides the list: PERF_COLUMNS="melody gateway:memory").
#   Two more columns only through PERF_COLUMNS: melody:watermill, bare melody publishing through
#   a Watermill router (baremelody -watermill: the floor the design card imposes), and
#   melody:watermill-mw, the same behind Watermill's Recoverer and Retry (-watermill -middleware);
#   melody:trips-gochannel and melody:trips-redis, the design's floor with a broker: two trips
#   through the router (baremelody -broker gochannel|redis: inbound handler -> broker -> deliver
#   handler), Redis Streams through watermill-redisstream on a redis-server of the run's own.
#   It prints each figure's median (min–max) per column, then each gateway column over
#   Centrifugo's with the same engine (memory for nats and jetstream).
#
# Broker servers: with nats-server and redis-server on PATH (BROKER_SERVER=own, the default
# then), every run starts its own on a free loopback port (JetStream with its storage in a
# temporary directory) and stops it afterwards, so that wsbench can report the broker's own CPU
# (-broker-pid: per 1,000 deliveries and per message) and no other user of a shared server
# weighs on it. BROKER_SERVER=shared uses GATEWAY_NATS_URL / GATEWAY_REDIS_ADDR as before (no
# broker CPU).
#
# Profiles: PROFILE=1 starts the gateway with an admin listener (GATEWAY_ADMIN_ADDR) and, once
# the row's connections are open, records a CPU profile of PROFILE_SECONDS (10) and the
# allocations made meanwhile (allocs, before and after); the top functions go to
# <run>.cpu.top and <run>.alloc.top (flat and cumulative), the profiles to .cpu.pprof and
# .allocs.pprof beside the run's JSON; with TRACE_SECONDS (default 0: none) an execution trace
# of that many seconds follows, into <run>.trace (go tool trace). The idle row records the heap
# in use instead (.heap.top).
#
# Environment:
#   OUT           results directory (default perf-results/<broker>-<date>)
#   RUNS          runs of each row (default 1); the summary shows the median
#   ROUNDS        rounds of compare and table (default 3)
#   CENTRIFUGO_BIN  a Centrifugo binary for table (not built by this script)
#   FIRST_ROUND   table: the first round's number (default 1), to add rounds to an OUT later;
#                 SUMMARY_ONLY=1 prints the summary of the ROUNDS rounds already in OUT
#   DURATION      publishing time of the fan-out rows (default 20s)
#   IDLE_CONNS, FANOUT_CONNS, CHANNELS_CONNS (2000), SCALE_CONNS, DEFLATE_CONNS  rows' sizes
#   PUBLISH       http (default: POST /api/publish, as in the issue) or broker (straight to the
#                 broker through the service SDK; not with memory: table and compare publish
#                 to the memory broker, Centrifugo and bare melody through HTTP whatever it says)
#   GATEWAY_*     passed to the gateway as usual (e.g. GATEWAY_WS_SEND_BUFFER); the script sets
#                 GATEWAY_BROKER, GATEWAY_ADDR, GATEWAY_TOPIC_PREFIX, GATEWAY_JWT_SECRET,
#                 GATEWAY_API_KEY and GATEWAY_LOG_LEVEL=warn itself. NATS and Redis default to
#                 nats://127.0.0.1:4222 and 127.0.0.1:6379 (GATEWAY_NATS_URL, GATEWAY_REDIS_ADDR).
#
# Every wait is bounded: wsbench stops by itself (and has a watchdog), a server that does not
# become ready within 15 s or stop within 15 s of SIGTERM is killed. Needs go, curl and jq
# (and git for compare).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
mode=$1; shift
for tool in go curl jq; do
  command -v $tool >/dev/null || { echo "perf.sh: $tool is required" >&2; exit 1; }
done

RUNS=${RUNS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
PUBLISH=${PUBLISH:-http}
IDLE_CONNS=${IDLE_CONNS:-10000}
FANOUT_CONNS=${FANOUT_CONNS:-5000}
SCALE_CONNS=${SCALE_CONNS:-19000}
DEFLATE_CONNS=${DEFLATE_CONNS:-1000}
CHANNELS_CONNS=${CHANNELS_CONNS:-2000}
PROFILE=${PROFILE:-0}
PROFILE_SECONDS=${PROFILE_SECONDS:-10}
if [ -z "${BROKER_SERVER:-}" ]; then
  BROKER_SERVER=shared
  command -v nats-server >/dev/null && command -v redis-server >/dev/null && BROKER_SERVER=own
fi

valid_row() { case $1 in idle | fanout | ssefanout | pinned | channels | channelsdk | scale | deflate) ;; *) echo "perf.sh: unknown row '$1'" >&2; exit 2 ;; esac; }
valid_broker() { case $1 in memory | nats | redis | jetstream) ;; *) echo "perf.sh: unknown broker '$1' (memory, nats, redis, jetstream)" >&2; exit 2 ;; esac; }

# Both processes may hold many sockets: raise the soft file limit to the hard one.
ulimit -n "$(ulimit -Hn)"

JWT_SECRET=${PERF_JWT_SECRET:-perf-secret-0123456789abcdef0123456789}
API_KEY=${PERF_API_KEY:-perf-api-key-0123456789}
SHARED_NATS_URL=${GATEWAY_NATS_URL:-nats://127.0.0.1:4222}
SHARED_REDIS_ADDR=${GATEWAY_REDIS_ADDR:-127.0.0.1:6379}
export GATEWAY_JWT_SECRET=$JWT_SECRET GATEWAY_API_KEY=$API_KEY GATEWAY_LOG_LEVEL=warn

srv_pid= broker_pid= broker_dir= prof_pid= ref_tree=
stop_pid() { # stop_pid PID: SIGTERM, 15 s, SIGKILL
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_server() { stop_pid "$prof_pid"; prof_pid=; stop_pid "$srv_pid"; srv_pid=; }
stop_broker() {
  stop_pid "$broker_pid"; broker_pid=
  [ -z "$broker_dir" ] || rm -rf "$broker_dir"; broker_dir=
}
cleanup() {
  stop_server; stop_broker
  if [ -n "$ref_tree" ]; then git worktree remove --force "$ref_tree" 2>/dev/null || rm -rf "$ref_tree"; git worktree prune; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # below the kernel's ephemeral range (32768 and up), where client sockets take ports
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo $p; return; }
  done
  echo "perf.sh: no free port" >&2; exit 1
}

# wait_ready PID CHECK...: runs CHECK every 0.1 s for 15 s while PID lives.
wait_ready() {
  local pid=$1; shift
  for _ in $(seq 150); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# start_broker BROKER LOG: a broker server of the run's own (BROKER_SERVER=own) and the
# environment pointing at it (broker_url), or the shared one.
broker_url=
start_broker() {
  local b=$1 log=$2 port
  broker_url=
  case $b in memory | - | watermill | watermill-mw | trips-gochannel) return 0 ;; trips-redis) b=redis ;; esac
  if [ "$BROKER_SERVER" != own ]; then
    case $b in nats | jetstream) broker_url=$SHARED_NATS_URL ;; redis) broker_url=$SHARED_REDIS_ADDR ;; esac
    return 0
  fi
  port=$(free_port)
  case $b in
    nats | jetstream)
      local js=()
      if [ "$b" = jetstream ]; then broker_dir=$(mktemp -d /tmp/perf-js.XXXXXX); js=(-js -sd "$broker_dir"); fi
      nats-server -a 127.0.0.1 -p "$port" "${js[@]}" >"$log" 2>&1 &
      broker_pid=$!
      broker_url=nats://127.0.0.1:$port
      wait_ready "$broker_pid" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || { echo "perf.sh: nats-server did not start" >&2; tail -3 "$log" >&2; return 1; } ;;
    redis)
      redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize no >"$log" 2>&1 &
      broker_pid=$!
      broker_url=127.0.0.1:$port
      wait_ready "$broker_pid" redis-cli -p "$port" ping || { echo "perf.sh: redis-server did not start" >&2; tail -3 "$log" >&2; return 1; } ;;
  esac
}

# cleanup_prefix removes what a run left in a shared Redis (streams under its prefix).
cleanup_prefix() {
  if [ "$BROKER_SERVER" != own ] && [ "$2" = redis ] && command -v redis-cli >/dev/null; then
    local host=${broker_url%:*} port=${broker_url##*:}
    redis-cli -h "$host" -p "$port" --scan --pattern "$1*" | xargs -r -n 500 redis-cli -h "$host" -p "$port" del >/dev/null || true
  fi
}

# profile BASE ADMIN BIN CONNS IDLE: waits until the gateway holds CONNS connections, then
# records the profiles (see the header). Runs in the background, owned by run.
profile() {
  local base=$1 admin=$2 bin=$3 conns=$4 idle=$5 n
  for _ in $(seq 600); do
    n=$(curl -sf "http://$admin/metrics" | awk '$1 == "gateway_connections" {print int($2)}')
    [ -n "$n" ] && [ "$n" -ge "$conns" ] && break
    sleep 0.1
  done
  sleep 1
  if [ "$idle" = 1 ]; then
    curl -sf -o "$base.heap.pprof" "http://$admin/debug/pprof/heap?gc=1" || return 0
    go tool pprof -top -nodecount=25 -sample_index=inuse_space "$bin" "$base.heap.pprof" >"$base.heap.top" 2>/dev/null || true
    return 0
  fi
  curl -sf -o "$base.allocs0.pprof" "http://$admin/debug/pprof/allocs" || return 0
  curl -sf -o "$base.cpu.pprof" "http://$admin/debug/pprof/profile?seconds=$PROFILE_SECONDS" || return 0
  curl -sf -o "$base.allocs.pprof" "http://$admin/debug/pprof/allocs" || return 0
  [ "${TRACE_SECONDS:-0}" = 0 ] || curl -sf -o "$base.trace" "http://$admin/debug/pprof/trace?seconds=$TRACE_SECONDS" || true
  { go tool pprof -top -nodecount=25 "$bin" "$base.cpu.pprof"; echo; echo "cumulative:"
    go tool pprof -top -cum -nodecount=40 "$bin" "$base.cpu.pprof"; } >"$base.cpu.top" 2>/dev/null || true
  { go tool pprof -top -nodecount=25 -sample_index=alloc_space -base "$base.allocs0.pprof" "$bin" "$base.allocs.pprof"; echo; echo "cumulative:"
    go tool pprof -top -cum -nodecount=40 -sample_index=alloc_space -base "$base.allocs0.pprof" "$bin" "$base.allocs.pprof"; } >"$base.alloc.top" 2>/dev/null || true
}

# run_one BASE KIND BROKER BIN WSBENCH PIN WSBENCH-ARGS...: one run with a fresh server (and
# broker server). KIND is gateway, centrifugo or melody; BROKER the gateway's broker or
# Centrifugo's engine (memory, redis); PIN "pinned" or "-". Writes BASE.json, .txt, .srv.log.
run_one() {
  local base=$1 kind=$2 broker=$3 bin=$4 wsbench=$5 pin=$6; shift 6
  local port prefix ready= attempt admin=
  prefix="perf$(date +%s)$RANDOM"
  start_broker "$broker" "$base.broker.log" || return 0
  local srv=("$bin") wb=("$wsbench")
  if [ "$pin" = pinned ]; then srv=(taskset -c 0 "${srv[@]}"); wb=(taskset -c 1 "${wb[@]}"); fi
  local extra=() env=()
  for attempt in 1 2 3; do # a port can be taken between the check and the bind: try another
    port=$(free_port)
    case $kind in
      gateway)
        env=(GATEWAY_BROKER="$broker" GATEWAY_ADDR="127.0.0.1:$port" GATEWAY_TOPIC_PREFIX="$prefix")
        case $broker in nats | jetstream) env+=(GATEWAY_NATS_URL="$broker_url") ;; redis) env+=(GATEWAY_REDIS_ADDR="$broker_url") ;; esac
        if [ "$PROFILE" = 1 ]; then admin=127.0.0.1:$(free_port); env+=(GATEWAY_ADMIN_ADDR="$admin"); fi
        env "${env[@]}" "${srv[@]}" 2>"$base.srv.log" &
        srv_pid=$!
        wait_ready "$srv_pid" curl -sf "http://127.0.0.1:$port/readyz" && ready=1 ;;
      melody)
        case $broker in
          watermill) extra=(-watermill) ;;
          watermill-mw) extra=(-watermill -middleware) ;;
          trips-gochannel) extra=(-broker gochannel) ;;
          trips-redis) extra=(-broker redis -redis-addr "$broker_url") ;;
          *) extra=() ;;
        esac
        "${srv[@]}" -addr "127.0.0.1:$port" -api-key "$API_KEY" "${extra[@]}" 2>"$base.srv.log" &
        srv_pid=$!
        wait_ready "$srv_pid" curl -sf "http://127.0.0.1:$port/readyz" && ready=1 ;;
      centrifugo)
        local engine='{"type":"memory"}'
        [ "$broker" = redis ] && engine="{\"type\":\"redis\",\"redis\":{\"address\":[\"redis://$broker_url\"],\"prefix\":\"$prefix\"}}"
        cat >"$base.centrifugo.json" <<JSON
{"http_server":{"address":"127.0.0.1","port":$port},"log":{"level":"warn"},"health":{"enabled":true},
 "client":{"token":{"hmac_secret_key":"$JWT_SECRET"},"allowed_origins":["*"]},"http_api":{"key":"$API_KEY"},
 "channel":{"without_namespace":{"allow_subscribe_for_client":true}},"engine":$engine}
JSON
        "${srv[@]}" --config "$base.centrifugo.json" >"$base.srv.log" 2>&1 &
        srv_pid=$!
        wait_ready "$srv_pid" curl -sf "http://127.0.0.1:$port/health" && ready=1 ;;
    esac
    [ -n "$ready" ] && break
    stop_server
  done
  if [ -z "$ready" ]; then
    echo "perf.sh: $base: the $kind server did not become ready; its log:" >&2
    tail -5 "$base.srv.log" >&2
    stop_broker
    return 0
  fi
  local args=(-api-key "$API_KEY")
  [ "$PUBLISH" = broker ] && [ "$kind" = gateway ] && [ "$broker" != memory ] && args=(-publish broker)
  [ "$kind" = centrifugo ] && args+=(-server centrifugo)
  [ -n "$broker_pid" ] && args+=(-broker-pid "$broker_pid")
  local conns=0 idle=0 a
  for a in "$@"; do [ "$a" = -idle ] && idle=1; done
  for ((a = 1; a <= $#; a++)); do [ "${!a}" = -conns ] && { a=$((a + 1)); conns=${!a}; }; done
  if [ -n "$admin" ]; then
    profile "$base" "$admin" "$bin" "$conns" "$idle" &
    prof_pid=$!
  fi
  local how=http; [ "${args[0]}" = -publish ] && how=broker
  echo "perf.sh: $(basename "$base"): wsbench $* (publishing through $how)"
  env "${env[@]}" GATEWAY_TOPIC_PREFIX="$prefix" "${wb[@]}" -url "http://127.0.0.1:$port" -secret "$JWT_SECRET" \
    -pid "$srv_pid" -quiet -json "$base.json" "${args[@]}" "$@" >"$base.txt" || true
  [ "${QUIET_RUNS:-0}" = 1 ] || cat "$base.txt"
  if [ -n "$prof_pid" ]; then wait "$prof_pid" 2>/dev/null || true; prof_pid=; fi
  stop_server
  cleanup_prefix "$prefix" "$broker"
  stop_broker
}

# row_args ROW: wsbench's arguments for a row (one line; "pinned" first for the pinned row).
row_args() {
  case $1 in
    idle) echo "- -conns $IDLE_CONNS -channels 0 -idle -duration 15s -source-ips 4" ;;
    fanout) echo "- -conns $FANOUT_CONNS -channels 1 -rate 50 -duration $DURATION -publishers 4" ;;
    ssefanout) echo "- -conns $FANOUT_CONNS -channels 1 -rate 50 -duration $DURATION -publishers 4 -transport sse" ;;
    pinned) echo "pinned -conns $FANOUT_CONNS -channels 1 -rate 200 -duration $DURATION -publishers 16" ;;
    channels | channelsdk) echo "- -conns $CHANNELS_CONNS -channels 0 -rate 500 -duration $DURATION -publishers 16" ;;
    scale) echo "- -conns $SCALE_CONNS -channels 0 -idle -duration 20s -inflight 128 -source-ips 4" ;;
    *) echo "perf.sh: row $1 is not for compare or table" >&2; exit 2 ;;
  esac
}

# figures ROW: the figures of a row, one per line: label|jq expression|unit.
figures() {
  case $1 in
    idle) echo 'RSS per idle subscribed connection|.server.rss_per_connection_kib|KiB' ;;
    fanout | ssefanout)
      echo 'p99 latency|.latency_ms.p99|ms'
      echo 'deliveries lost|.deliveries_lost|'
      echo 'server CPU per 1,000 deliveries|.server.cpu_ms_per_1000_deliveries|ms'
      echo 'broker CPU per 1,000 deliveries|.broker.cpu_ms_per_1000_deliveries|ms'
      echo 'broker CPU per message published|.broker.cpu_us_per_message|µs' ;;
    pinned)
      echo 'deliveries per second sustained|.deliveries_per_second|/s'
      echo 'p99 latency|.latency_ms.p99|ms'
      echo 'deliveries lost|.deliveries_lost|' ;;
    channels | channelsdk)
      echo 'server CPU per delivery|.server.cpu_ms_per_1000_deliveries|µs'
      echo 'broker CPU per delivery|.broker.cpu_ms_per_1000_deliveries|µs'
      echo 'broker CPU per message published|.broker.cpu_us_per_message|µs'
      echo 'p99 latency|.latency_ms.p99|ms'
      echo 'deliveries lost|.deliveries_lost|' ;;
    scale) echo 'connections held|.subscribed|' ;;
  esac
  echo 'other processes (cores)|.host.other_cores|'
}

# values PATTERN EXPR: EXPR of each JSON file matching PATTERN, in round order ("null" if none).
values() {
  local f
  for f in $1; do if [ -e "$f" ]; then jq -c "$2 // null" "$f"; fi; done # no file (a row a column does not run): nothing, not a failure
}
# stats: "median (min–max)" of the numbers on stdin.
stats() { jq -rs 'map(select(. != null)) | sort | if length == 0 then "-" else
  (def r: if . >= 100 then round elif . >= 10 then (. * 10 | round) / 10 else (. * 100 | round) / 100 end;
   (.[(length - 1) / 2 | floor] | r | tostring) + (if length > 1 then " (" + (.[0] | r | tostring) + "–" + (.[-1] | r | tostring) + ")" else "" end)) end'; }

build_here() { # build_here DIR: the gateway, wsbench and baremelody of the work tree into DIR
  mkdir -p "$1"
  go build -o "$1/gateway" ./cmd/gateway
  go build -o "$1/wsbench" ./cmd/wsbench
  go build -o "$1/baremelody" ./cmd/baremelody
}

case $mode in
compare)
  [ $# -ge 2 ] && [ $# -le 3 ] || { echo "perf.sh: compare REF ROW[,ROW...] [BROKER]" >&2; exit 2; }
  ref=$1 broker=${3:-memory}
  IFS=, read -r -a rows <<<"$2"
  valid_broker "$broker"
  for r in "${rows[@]}"; do
    valid_row "$r"; row_args "$r" >/dev/null
    if [ "$r" = channelsdk ] && [ "$broker" = memory ]; then echo "perf.sh: channelsdk publishes on the broker: not memory" >&2; exit 2; fi
  done
  command -v git >/dev/null || { echo "perf.sh: git is required" >&2; exit 1; }
  sha=$(git rev-parse --verify "$ref^{commit}") || { echo "perf.sh: unknown git ref '$ref'" >&2; exit 2; }
  OUT=${OUT:-perf-results/compare-$broker-$(date +%Y%m%d-%H%M%S)}
  mkdir -p "$OUT/new" "$OUT/old"
  echo "perf.sh: building the work tree into $OUT/new and $ref (${sha:0:12}) into $OUT/old"
  build_here "$OUT/new"
  ref_tree=$(mktemp -d /tmp/perf-ref.XXXXXX)
  git worktree add --detach "$ref_tree" "$sha" >/dev/null
  outabs=$(cd "$OUT" && pwd)
  (cd "$ref_tree" && go build -o "$outabs/old/gateway" ./cmd/gateway && go build -o "$outabs/old/wsbench" ./cmd/wsbench)
  git worktree remove --force "$ref_tree"; ref_tree=
  old_wb=$OUT/new/wsbench
  [ "${COMPARE_WSBENCH:-new}" = ref ] && old_wb=$OUT/old/wsbench
  for ((i = 1; i <= ROUNDS; i++)); do
    order="old new"; ((i % 2 == 0)) && order="new old"
    for r in "${rows[@]}"; do
      read -r pin args <<<"$(row_args "$r")"
      for build in $order; do
        wb=$OUT/new/wsbench; [ $build = old ] && wb=$old_wb
        pub=$PUBLISH; [ "$r" = channelsdk ] && pub=broker
        # shellcheck disable=SC2086 # args are words
        PUBLISH=$pub run_one "$OUT/$build-$broker-$r-$i" gateway "$broker" "$OUT/$build/gateway" "$wb" "$pin" $args
      done
    done
  done
  echo
  echo "perf.sh: $ref (${sha:0:12}, old) against the work tree (new) on $broker, $ROUNDS rounds, interleaved, publishing through $PUBLISH; results in $OUT"
  printf '%-9s %-36s %-22s %-22s %s\n' row figure old new "new/old: median of rounds (range)"
  for r in "${rows[@]}"; do
    while IFS='|' read -r label expr unit; do
      o=$(values "$OUT/old-$broker-$r-*.json" "$expr" | stats)
      n=$(values "$OUT/new-$broker-$r-*.json" "$expr" | stats)
      ratio=$(paste <(values "$OUT/old-$broker-$r-*.json" "$expr") <(values "$OUT/new-$broker-$r-*.json" "$expr") |
        jq -Rrs 'split("\n") | map(select(length > 0) | split("\t") | map(fromjson)) |
          map(select(.[0] != null and .[1] != null and .[0] != 0) | .[1] / .[0]) | sort |
          if length == 0 then "-" else (map(. * 100 | round / 100)) as $v |
            ($v[(length - 1) / 2 | floor] | tostring) + " (" + ($v[0] | tostring) + "–" + ($v[-1] | tostring) + ")" end')
      printf '%-9s %-36s %-22s %-22s %s\n' "$r" "$label${unit:+ ($unit)}" "$o" "$n" "$ratio"
    done < <(figures "$r")
  done
  exit 0 ;;

table)
  rows=("$@")
  [ ${#rows[@]} -gt 0 ] || rows=(idle fanout channels channelsdk pinned)
  for r in "${rows[@]}"; do valid_row "$r"; row_args "$r" >/dev/null; done
  OUT=${OUT:-perf-results/table-$(date +%Y%m%d-%H%M%S)}
  [ "${SUMMARY_ONLY:-0}" = 1 ] || { echo "perf.sh: building into $OUT/bin"; build_here "$OUT/bin"; }
  if [ -z "${PERF_COLUMNS:-}" ]; then
    cols=()
    if [ -n "${CENTRIFUGO_BIN:-}" ]; then
      [ -x "$CENTRIFUGO_BIN" ] || { echo "perf.sh: CENTRIFUGO_BIN=$CENTRIFUGO_BIN is not an executable" >&2; exit 2; }
      cols+=(centrifugo:memory centrifugo:redis)
    else
      echo "perf.sh: CENTRIFUGO_BIN not set: no Centrifugo columns (docs/performance.md says how to build one)" >&2
    fi
    cols+=(melody gateway:memory gateway:redis gateway:nats gateway:jetstream)
  else
    read -r -a cols <<<"$PERF_COLUMNS"
  fi
  first=${FIRST_ROUND:-1}
  [ "${SUMMARY_ONLY:-0}" = 1 ] && first=$((ROUNDS + 1))
  for ((i = first; i <= ROUNDS; i++)); do
    for r in "${rows[@]}"; do
      read -r pin args <<<"$(row_args "$r")"
      n=${#cols[@]}
      for ((k = 0; k < n; k++)); do # rotate the order: no column is always first or last
        c=${cols[$(((k + i - 1) % n))]}
        kind=${c%%:*} broker=${c#*:}; [ "$c" = melody ] && broker=-
        case $kind in gateway) bin=$OUT/bin/gateway ;; melody) bin=$OUT/bin/baremelody ;; centrifugo) bin=$CENTRIFUGO_BIN ;; esac
        pub=$PUBLISH
        if [ "$r" = channelsdk ]; then # the service SDK on the broker: gateway columns outside the process only
          case $c in gateway:redis | gateway:nats | gateway:jetstream) pub=broker ;; *) continue ;; esac
        fi
        # shellcheck disable=SC2086 # args are words
        PUBLISH=$pub QUIET_RUNS=1 run_one "$OUT/${c/:/-}-$r-$i" "$kind" "$broker" "$bin" "$OUT/bin/wsbench" "$pin" $args
      done
    done
  done
  echo
  echo "perf.sh: table, $ROUNDS rounds, median (min–max), publishing through $PUBLISH; results in $OUT"
  hdr="%-9s %-36s"; for c in "${cols[@]}"; do hdr+=" %-20s"; done
  # shellcheck disable=SC2059 # the format is built above
  printf "$hdr\n" row figure "${cols[@]}"
  for r in "${rows[@]}"; do
    while IFS='|' read -r label expr unit; do
      cells=()
      for c in "${cols[@]}"; do cells+=("$(values "$OUT/${c/:/-}-$r-*.json" "$expr" | stats)"); done
      # shellcheck disable=SC2059
      printf "$hdr\n" "$r" "$label${unit:+ ($unit)}" "${cells[@]}"
    done < <(figures "$r")
  done
  if [ -n "${CENTRIFUGO_BIN:-}" ] && [[ " ${cols[*]}" == *" gateway:"* ]]; then
    echo
    echo "perf.sh: each gateway column over Centrifugo with the same engine (memory for nats, jetstream): ratio of medians"
    for r in "${rows[@]}"; do
      while IFS='|' read -r label expr unit; do
        case $label in "other processes (cores)" | "deliveries lost") continue ;; esac
        line=$(printf '%-9s %-36s' "$r" "$label")
        for c in "${cols[@]}"; do
          case $c in gateway:*) ;; *) continue ;; esac
          eng=memory; [ "$c" = gateway:redis ] && eng=redis
          med() { values "$1" "$expr" | jq -s 'map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end'; }
          x=$(med "$OUT/${c/:/-}-$r-*.json") y=$(med "$OUT/centrifugo-$eng-$r-*.json")
          line+=$(printf ' %-20s' "${c#gateway:} $(jq -nr --argjson x "$x" --argjson y "$y" 'if $x == null or $y == null or $y == 0 then "-" else ($x / $y * 100 | round / 100 | tostring) end')")
        done
        echo "$line"
      done < <(figures "$r")
    done
  fi
  exit 0 ;;
esac

# perf.sh BROKER [ROW...]: the rows of issue 6 on one broker, with their targets.
broker=$mode
valid_broker "$broker"
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(idle fanout pinned channels scale)
for r in "${rows[@]}"; do valid_row "$r"; done
OUT=${OUT:-perf-results/$broker-$(date +%Y%m%d-%H%M%S)}
if [ "$PUBLISH" = broker ] && [ "$broker" = memory ]; then
  echo "perf.sh: PUBLISH=broker needs a broker outside the gateway (not memory)" >&2; exit 2
fi
echo "perf.sh: building into $OUT/bin"
build_here "$OUT/bin"

# run NAME PIN WSBENCH-ARGS...: one run of a row with a fresh gateway.
run() { local name=$1; shift; run_one "$OUT/$broker-$name" gateway "$broker" "$OUT/bin/gateway" "$OUT/bin/wsbench" "$@"; }

for ((i = 1; i <= RUNS; i++)); do
  for r in "${rows[@]}"; do
    case $r in
      deflate)
        for size in 128 4096; do
          conns=$DEFLATE_CONNS; [ $size = 4096 ] && conns=$((DEFLATE_CONNS / 4))
          GATEWAY_WS_COMPRESSION=false run "deflate-off-$size-$i" - -conns "$conns" -channels 1 -rate 50 -duration "$DURATION" -publishers 4 -payload $size -pad words
          GATEWAY_WS_COMPRESSION=true run "deflate-on-$size-$i" - -conns "$conns" -channels 1 -rate 50 -duration "$DURATION" -publishers 4 -payload $size -pad words -compression
        done ;;
      *)
        read -r pin args <<<"$(row_args "$r")"
        pub=$PUBLISH; [ "$r" = channelsdk ] && pub=broker
        # shellcheck disable=SC2086 # args are words
        PUBLISH=$pub run "$r-$i" "$pin" $args ;;
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
    channels | channelsdk)
      cpu=$(fig "$r" '.server.cpu_ms_per_1000_deliveries // null')
      bcpu=$(fig "$r" '.broker.cpu_ms_per_1000_deliveries // null')
      how=HTTP; [ "$r" = channelsdk ] && how=SDK
      line "$r" "2,000 channels, 500 msg/s ($how): CPU per 1,000 deliv." "$cpu" ms "<= 150" "$(verdict "$(jq -n "$cpu != null and $cpu <= 150")")" "$other"
      line "$r" "  same: broker server CPU per 1,000 deliveries" "$bcpu" ms "" "" "" ;;
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
