#!/usr/bin/env bash
# Runs the real pusher-js client, pusher server library and Laravel Echo (tests/pusher, from the
# npm registry, pinned by its lockfile) unmodified against two gateway nodes on Redis, and a
# third node it SIGKILLs (docs/pusher.md; the browser test, tests/pusher/browser.test.mjs, is
# scripts/test-browser.sh's):
# installs Node.js and npm when they are missing (Debian, as root), builds the gateway once, then
# `npm ci` and `npm test`. Expects Redis on 127.0.0.1:6379 (or $GATEWAY_REDIS_ADDR), which
# scripts/test.sh starts. Takes a few seconds once Go's build cache is warm.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_node

redis="${GATEWAY_REDIS_ADDR:-127.0.0.1:6379}"
if ! (exec 3<>"/dev/tcp/${redis%:*}/${redis##*:}") 2>/dev/null; then
  echo "test-pusher.sh: nothing listens on $redis: start Redis first (scripts/test.sh does)" >&2
  exit 1
fi

bin_dir=$(mktemp -d)
trap 'rm -rf "$bin_dir"' EXIT
go build -o "$bin_dir/gateway" ./cmd/gateway
export WSGATEWAY_TEST_BIN="$bin_dir/gateway"

cd tests/pusher
npm ci --no-audit --no-fund
timeout 60 npm test
