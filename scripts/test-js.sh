#!/usr/bin/env bash
# Runs the tests of the JavaScript client (clients/js) against real gateway nodes: installs Node.js
# and npm when they are missing (Debian, as root), builds the gateway once, then `npm ci` and
# `npm test` (tsc, then node's test runner). Expects Redis on 127.0.0.1:6379 (or
# $GATEWAY_REDIS_ADDR), which scripts/test.sh starts. Takes well under a minute once Go's build
# cache is warm.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "test-js.sh: installing nodejs and npm"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "test-js.sh: node and npm are needed (and cannot be installed here: need root and apt-get)" >&2
    exit 1
  fi
fi

# The tests use Node's WebSocket (node --experimental-websocket: Node 20.10 or later).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 10) ? 0 : 1)'; then
  echo "test-js.sh: Node.js $(node --version) is too old: the client's tests need 20.10 or later" >&2
  exit 1
fi

redis="${GATEWAY_REDIS_ADDR:-127.0.0.1:6379}"
if ! (exec 3<>"/dev/tcp/${redis%:*}/${redis##*:}") 2>/dev/null; then
  echo "test-js.sh: nothing listens on $redis: start Redis first (scripts/test.sh does)" >&2
  exit 1
fi

bin_dir=$(mktemp -d)
trap 'rm -rf "$bin_dir"' EXIT
go build -o "$bin_dir/gateway" ./cmd/gateway
export GATEWAY_BIN="$bin_dir/gateway"

cd clients/js
npm ci --no-audit --no-fund
timeout 170 npm test
