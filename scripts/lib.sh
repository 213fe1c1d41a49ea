# Shared by the test scripts (source it): probing ports, installing Debian packages when root,
# starting the local services and tools the tests need, and (for soak.sh and scale.sh) free ports,
# gateway nodes and stopping what a script started. Messages are prefixed with the script's name.

_me=$(basename "$0")

# listening PORT: something accepts connections on 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT: waits up to 10 s for listening PORT.
wait_port() {
  for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.1; done
  echo "$_me: nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# apt_install PACKAGE...: installs Debian packages, as root with apt-get; fails clearly otherwise.
apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "$_me: installing $*"
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null 2>&1 || true; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "$_me: $* missing and cannot be installed here (need root and apt-get)" >&2
    return 1
  fi
}

# ensure_redis: a Redis server on 127.0.0.1:6379, started (and installed) when none listens.
ensure_redis() {
  listening 6379 && return 0
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_port 6379
}

# ensure_node: node and npm, Node.js 20.10 or later (its WebSocket, --experimental-websocket, is
# what the JS client's tests use; playwright-core needs 20 too).
ensure_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 10) ? 0 : 1)'; then
    echo "$_me: Node.js $(node --version) is too old: 20.10 or later is needed" >&2
    return 1
  fi
}

# pids: every process a script started with start_nodes or added itself, stopped by stop_all.
pids=()

# stop_all: stops the processes of pids in reverse order (SIGTERM), waits up to stop_wait
# seconds [15] for each, then kills it. For `trap stop_all EXIT INT TERM`.
stop_all() {
  local i p
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq $((${stop_wait:-15} * 10))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}

_used_ports=" "
# free_port VAR: sets VAR to a free loopback port not given before, below the kernel's ephemeral
# range (32768 and up), where client sockets take ports.
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    case $_used_ports in *" $p "*) continue ;; esac
    listening "$p" || { _used_ports+="$p "; printf -v "$1" %s "$p"; return; }
  done
  echo "$_me: no free port" >&2; exit 1
}

# start_nodes NAME: starts three gateway nodes ($OUT/bin/gateway, GATEWAY_NODE_ID NAME-1..3, logs
# in $OUT/node1..3.log) on free ports with the GATEWAY_* settings exported, adds them to pids,
# sets node_pids, node_ports and urls (their base URLs, comma-separated), and waits up to 15 s
# for each to be ready.
start_nodes() {
  local k port ready
  node_pids=() node_ports=()
  for k in 1 2 3; do
    free_port port
    GATEWAY_ADDR=127.0.0.1:$port GATEWAY_NODE_ID=$1-$k "$OUT/bin/gateway" 2>"$OUT/node$k.log" &
    pids+=($!); node_pids+=($!); node_ports+=("$port")
  done
  for k in 0 1 2; do
    ready=
    for _ in $(seq 150); do
      if curl -sf "http://127.0.0.1:${node_ports[k]}/readyz" >/dev/null; then ready=1; break; fi
      sleep 0.1
    done
    [ -n "$ready" ] || { echo "$_me: node $((k + 1)) did not become ready; its log:" >&2; tail -5 "$OUT/node$((k + 1)).log" >&2; exit 1; }
  done
  urls=$(printf 'http://127.0.0.1:%s,' "${node_ports[@]}"); urls=${urls%,}
}
