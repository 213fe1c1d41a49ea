#!/usr/bin/env bash
# Counts what one published message costs a server in handoffs and system calls, on the
# channels row of docs/performance.md (2,000 clients on 2,000 channels, 500 msg/s through
# POST /api/publish, one delivery each):
#
#   scripts/counts.sh COLUMN...     e.g. scripts/counts.sh melody melody:watermill gateway:memory
#
# Columns: melody (cmd/baremelody), melody:watermill (baremelody -watermill), melody:watermill-mw
# (-watermill -middleware), gateway:memory, gateway:memory@1 (the gateway with GOMAXPROCS=1;
# wsbench keeps every core) and gateway:memory@nobudget (GATEWAY_WS_LATENCY_BUDGET=0: no budget
# clock ticking). For each column, ROUNDS (1) times in turn, it starts a fresh server,
# runs cmd/wsbench on the row for DURATION (25s), and once the clients are connected and
# publishing has run WARMUP (3) seconds, counts over WINDOW (10) seconds with `perf stat -p`
# (all the server's threads): context switches, CPU migrations, system calls (all, and write,
# read, futex, epoll_pwait, nanosleep, getrandom), and the server's CPU time (/proc, utime+stime).
# It prints each divided by the messages published during the window, taken as the row's rate
# times the window (wsbench paces its publishers; the rate it reached over the whole run is
# printed beside, "rate"). RATE (500) sets the row's rate; RATE=0 holds the CONNS (2000) clients
# connected and subscribed without publishing (wsbench -idle) and prints the counts per second of
# the window instead ("msgs" is then the window's seconds); CONNS=0 starts no wsbench at all (the
# bare node's own wake-ups). PRIME=N publishes N messages through the API to a channel of its own
# before the window (with RATE=0: an idle node that keeps some history). Needs perf with the syscalls tracepoints (root or perf_event_paranoid <= 1),
# go and curl. Wrap it in `flock /tmp/perf.lock` like any measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
ROUNDS=${ROUNDS:-1} RATE=${RATE:-500} CONNS=${CONNS:-2000} PRIME=${PRIME:-0} DURATION=${DURATION:-25s} WARMUP=${WARMUP:-3} WINDOW=${WINDOW:-10}
OUT=${OUT:-perf-results/counts-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/bin"
go build -o "$OUT/bin/" ./cmd/gateway ./cmd/wsbench ./cmd/baremelody
ulimit -n "$(ulimit -Hn)"
KEY=counts-api-key-0123456789 SECRET=counts-secret-0123456789abcdef0123456789
EVENTS=context-switches,cpu-migrations,raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_nanosleep,syscalls:sys_enter_getrandom

srv= wb=
stop() { for p in $wb $srv; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; srv= wb=; }
trap stop EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf '%-22s %6s %6s %8s %8s %8s %8s %8s %8s %8s %8s %8s %9s\n' column msgs rate "ctx-sw" migr syscalls write read futex epoll nanosl getrand "CPU µs"
for ((i = 1; i <= ROUNDS; i++)); do
  for c in "$@"; do
    base=$OUT/${c//[:@]/-}-$i
    port=$((20000 + RANDOM % 12000))
    case $c in
      melody) "$OUT/bin/baremelody" -addr "127.0.0.1:$port" -api-key $KEY 2>"$base.srv.log" & ;;
      melody:watermill) "$OUT/bin/baremelody" -addr "127.0.0.1:$port" -api-key $KEY -watermill 2>"$base.srv.log" & ;;
      melody:watermill-mw) "$OUT/bin/baremelody" -addr "127.0.0.1:$port" -api-key $KEY -watermill -middleware 2>"$base.srv.log" & ;;
      gateway:memory | gateway:memory@1 | gateway:memory@nobudget)
        extra=(); [ "$c" = gateway:memory@1 ] && extra=(GOMAXPROCS=1)
        [ "$c" = gateway:memory@nobudget ] && extra=(GATEWAY_WS_LATENCY_BUDGET=0)
        env "${extra[@]}" GATEWAY_BROKER=memory GATEWAY_ADDR="127.0.0.1:$port" GATEWAY_JWT_SECRET=$SECRET \
          GATEWAY_API_KEY=$KEY GATEWAY_LOG_LEVEL=warn "$OUT/bin/gateway" 2>"$base.srv.log" & ;;
      *) echo "counts.sh: unknown column $c" >&2; exit 2 ;;
    esac
    srv=$!
    for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    load=(-rate "$RATE" -publishers 16); [ "$RATE" = 0 ] && load=(-idle)
    if [ "$CONNS" != 0 ]; then
      "$OUT/bin/wsbench" -url "http://127.0.0.1:$port" -secret $SECRET -api-key $KEY -pid "$srv" -json "$base.json" \
        -conns "$CONNS" -channels 0 "${load[@]}" -duration "$DURATION" >"$base.txt" 2>"$base.progress" &
      wb=$!
      for _ in $(seq 600); do grep -q connected "$base.progress" && break; sleep 0.1; done
    fi
    for ((k = 0; k < PRIME; k++)); do
      curl -sf -H "Authorization: Bearer $KEY" -d '{"channel":"counts-prime","data":1}' "http://127.0.0.1:$port/api/publish" >/dev/null || true
    done
    sleep "$WARMUP"
    t0=$(cpu_ticks "$srv")
    perf stat -x, -e "$EVENTS" -p "$srv" -- sleep "$WINDOW" 2>"$base.perf"
    t1=$(cpu_ticks "$srv")
    [ -z "$wb" ] || wait "$wb" || true; wb=
    stop
    n=$((RATE * WINDOW)); [ "$RATE" = 0 ] && n=$WINDOW
    ev() { awk -F, -v e="$1" '$3 == e {print $1}' "$base.perf"; }
    per() { awk -v x="$1" -v n="$n" 'BEGIN {printf "%.2f", x / n}'; }
    printf '%-22s %6d %6s %8s %8s %8s %8s %8s %8s %8s %8s %8s %9s\n' "$c" "$n" "$(jq -r '.publish_rate // "-" | if type == "number" then round else . end' "$base.json" 2>/dev/null || echo -)" \
      "$(per "$(ev context-switches)")" "$(per "$(ev cpu-migrations)")" "$(per "$(ev raw_syscalls:sys_enter)")" \
      "$(per "$(ev syscalls:sys_enter_write)")" "$(per "$(ev syscalls:sys_enter_read)")" "$(per "$(ev syscalls:sys_enter_futex)")" \
      "$(per "$(ev syscalls:sys_enter_epoll_pwait)")" "$(per "$(ev syscalls:sys_enter_nanosleep)")" "$(per "$(ev syscalls:sys_enter_getrandom)")" \
      "$(awk -v t=$((t1 - t0)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}')"
  done
done
