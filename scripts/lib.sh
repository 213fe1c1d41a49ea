# Shared by the test scripts (source it): probing ports, installing Debian packages when root, and
# starting the local services and tools the tests need. Messages are prefixed with the script's name.

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
