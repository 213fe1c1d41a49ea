#!/usr/bin/env bash
# Runs the browser end-to-end test of the chat demo (examples/chat/e2e): two gateway nodes on the
# Redis broker, the chat server, and two pages in headless Chromium; one node is killed and the
# page on it must resume on the other with no message missing. See examples/chat/README.md.
#
# Needs go, node >= 20 with npm, Chromium and a Redis server on 127.0.0.1:6379 (or REDIS_ADDR).
# As root on Debian it installs what is missing (nodejs npm, chromium, redis-server), and starts
# redis-server when nothing listens on 6379. The npm packages come from the lock files
# (playwright-core, which drives the installed Chromium and downloads no browser).
# Environment: CHROMIUM (default /usr/bin/chromium), REDIS_ADDR (default 127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "test-browser.sh: installing $*"
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null 2>&1 || true; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "test-browser.sh: $* missing and cannot be installed here (need root and apt-get)" >&2
    return 1
  fi
}

command -v go >/dev/null 2>&1 || { echo "test-browser.sh: go is required" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "test-browser.sh: node $(node --version) is too old: the client and playwright-core need node >= 20" >&2
  exit 1
fi

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  apt_install chromium
fi

export REDIS_ADDR="${REDIS_ADDR:-127.0.0.1:6379}"
if [ "$REDIS_ADDR" = 127.0.0.1:6379 ] && ! listening 6379; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 100); do listening 6379 && break; sleep 0.1; done
  listening 6379 || { echo "test-browser.sh: redis-server did not start on 6379" >&2; exit 1; }
fi

# The JS client: the test builds it when clients/js/dist is missing; build it here when its sources
# are newer than the build, so the browser never runs a stale client.
if [ -d clients/js ] && { [ ! -f clients/js/dist/index.js ] ||
  [ -n "$(find clients/js/src clients/js/package.json clients/js/tsconfig.json -newer clients/js/dist/index.js 2>/dev/null | head -1)" ]; }; then
  (cd clients/js && { [ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund; } && npm run build)
fi

cd examples/chat/e2e
npm ci --no-audit --no-fund
npm test
