#!/usr/bin/env bash
# Runs the browser end-to-end tests: pusher-js and Laravel Echo in a page against a node
# (tests/pusher/browser.test.mjs, docs/pusher.md), then the chat demo (examples/chat/e2e): two gateway nodes on the
# Redis broker, the chat server, and two pages in headless Chromium; one node is killed and the
# page on it must resume on the other with no message missing; each page's list of who is online
# must follow (both users, one gone with her node and back on the other, one gone with his page).
# Then Chromium's EventSource on GET /sse of two nodes behind a balancer, one SIGKILLed: the
# browser's own reconnect with Last-Event-ID resumes on the other with every message once, on
# redis, jetstream and kafka (SSE_BROKERS; kafka is internal/kfakeserver, started by the test).
# See examples/chat/README.md.
#
# Needs go, node >= 20 with npm, Chromium, a Redis server on 127.0.0.1:6379 (or REDIS_ADDR) and
# NATS with JetStream on 127.0.0.1:4222 (or NATS_URL; scripts/test.sh starts it) unless
# SSE_BROKERS leaves jetstream out.
# As root on Debian it installs what is missing (nodejs npm, chromium, redis-server), and starts
# redis-server when nothing listens on 6379. The npm packages come from the lock files
# (playwright-core, which drives the installed Chromium and downloads no browser).
# Environment: CHROMIUM (default /usr/bin/chromium), REDIS_ADDR (default 127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

command -v go >/dev/null 2>&1 || { echo "test-browser.sh: go is required" >&2; exit 1; }

ensure_node

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  apt_install chromium
fi

export REDIS_ADDR="${REDIS_ADDR:-127.0.0.1:6379}"
if [ "$REDIS_ADDR" = 127.0.0.1:6379 ]; then
  ensure_redis
fi

export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}" SSE_BROKERS="${SSE_BROKERS:-redis,jetstream,kafka}"
nats="${NATS_URL#nats://}"
if [[ ",$SSE_BROKERS," == *,jetstream,* ]] && ! (exec 3<>"/dev/tcp/${nats%:*}/${nats##*:}") 2>/dev/null; then
  echo "test-browser.sh: nothing listens on $nats: start NATS with JetStream (scripts/test.sh does) or set SSE_BROKERS=redis,kafka" >&2
  exit 1
fi

# The JS client: the test builds it when clients/js/dist is missing; build it here when its sources
# are newer than the build, so the browser never runs a stale client.
if [ -d clients/js ] && { [ ! -f clients/js/dist/index.js ] ||
  [ -n "$(find clients/js/src clients/js/package.json clients/js/tsconfig.json -newer clients/js/dist/index.js 2>/dev/null | head -1)" ]; }; then
  (cd clients/js && { [ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund; } && npm run build)
fi

(cd tests/pusher && npm ci --no-audit --no-fund && GATEWAY_REDIS_ADDR="$REDIS_ADDR" npm run test:browser)

cd examples/chat/e2e
npm ci --no-audit --no-fund
npm test
