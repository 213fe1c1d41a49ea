#!/usr/bin/env bash
# Runs the tests of the JavaScript client (clients/js) against real gateway nodes: installs Node.js
# and npm when they are missing (Debian, as root), builds the gateway once, then `npm ci` and
# `npm test` (tsc, then node's test runner). Expects Redis on 127.0.0.1:6379 (or
# $GATEWAY_REDIS_ADDR), which scripts/test.sh starts. Takes well under a minute once Go's build
# cache is warm.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_node

redis="${GATEWAY_REDIS_ADDR:-127.0.0.1:6379}"
if ! (exec 3<>"/dev/tcp/${redis%:*}/${redis##*:}") 2>/dev/null; then
  echo "test-js.sh: nothing listens on $redis: start Redis first (scripts/test.sh does)" >&2
  exit 1
fi

bin_dir=$(mktemp -d)
trap 'rm -rf "$bin_dir"' EXIT
go build -o "$bin_dir/gateway" ./cmd/gateway
export WSGATEWAY_TEST_BIN="$bin_dir/gateway"

cd clients/js
npm ci --no-audit --no-fund
timeout 170 npm test
