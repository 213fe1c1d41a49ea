#!/usr/bin/env bash
# Runs the tests of the JavaScript client (clients/js) against real gateway nodes: installs Node.js
# and npm when they are missing (Debian, as root), builds the gateway once, then `npm ci` and
# `npm test` (tsc, then node's test runner). Then the Server-Sent Events tests
# (test/sse.test.mjs: the npm eventsource package across a SIGKILL) again on every other broker:
# jetstream and nats (NATS on 127.0.0.1:4222, or $GATEWAY_NATS_URL) and kafka (an in-memory
# Kafka-protocol broker, internal/kfakeserver, started here). Expects Redis on 127.0.0.1:6379 (or
# $GATEWAY_REDIS_ADDR) and NATS with JetStream, which scripts/test.sh starts. Takes about a minute
# once Go's build cache is warm.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_node

redis="${GATEWAY_REDIS_ADDR:-127.0.0.1:6379}"
if ! (exec 3<>"/dev/tcp/${redis%:*}/${redis##*:}") 2>/dev/null; then
  echo "test-js.sh: nothing listens on $redis: start Redis first (scripts/test.sh does)" >&2
  exit 1
fi

nats_url="${GATEWAY_NATS_URL:-nats://127.0.0.1:4222}"
nats="${nats_url#nats://}"
if ! (exec 3<>"/dev/tcp/${nats%:*}/${nats##*:}") 2>/dev/null; then
  echo "test-js.sh: nothing listens on $nats: start NATS with JetStream first (scripts/test.sh does)" >&2
  exit 1
fi

bin_dir=$(mktemp -d)
kfake_pid=
cleanup() {
  if [ -n "$kfake_pid" ]; then kill "$kfake_pid" 2>/dev/null || true; fi
  rm -rf "$bin_dir"
}
trap cleanup EXIT
go build -o "$bin_dir/gateway" ./cmd/gateway
go build -o "$bin_dir/kfakeserver" ./internal/kfakeserver # a test tool, not in the gateway binary
export WSGATEWAY_TEST_BIN="$bin_dir/gateway"

"$bin_dir/kfakeserver" -addr 127.0.0.1:0 >"$bin_dir/kfake.addr" 2>"$bin_dir/kfake.log" &
kfake_pid=$!
for _ in $(seq 100); do [ -s "$bin_dir/kfake.addr" ] && break; sleep 0.1; done
kafka=$(head -1 "$bin_dir/kfake.addr")
[ -n "$kafka" ] || { echo "test-js.sh: kfakeserver did not start: $(cat "$bin_dir/kfake.log")" >&2; exit 1; }

cd clients/js
npm ci --no-audit --no-fund
timeout 170 npm test # every test, SSE on redis
for broker in jetstream kafka nats; do
  echo "--- test/sse.test.mjs on $broker"
  SSE_TEST_BROKER=$broker GATEWAY_NATS_URL="$nats_url" GATEWAY_KAFKA_BROKERS="$kafka" \
    timeout 90 node --experimental-websocket --test --test-concurrency=1 --test-timeout=60000 test/sse.test.mjs
done
