#!/usr/bin/env bash
# Runs every test of the project on this machine: starts (or installs, on Debian) the NATS and
# Redis servers the broker tests talk to when they are not already listening, then runs vet,
# gofmt and the whole suite under the race detector. Kafka tests need nothing: they start an
# in-process Kafka-protocol broker (kfake). Then the JavaScript client's tests, the Pusher
# protocol's tests with the real pusher-js, pusher and laravel-echo packages, and the
# headless-Chromium tests of pusher-js, Laravel Echo and the chat demo (each script installs
# Node.js or Chromium when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

ensure_redis

if ! listening 4222; then
  command -v nats-server >/dev/null 2>&1 || apt_install nats-server
  store=$(mktemp -d)
  nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$store" >/tmp/nats-server-test.log 2>&1 &
  wait_port 4222
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
go vet ./...
# Tests delete what they make on the shared servers (nodetest.Cluster.Prefix, dropPrefix in the
# JavaScript tests): the Redis keys there before the tests, to compare with those after.
redis_keys() { redis-cli -h 127.0.0.1 -p 6379 --scan 2>/dev/null | LC_ALL=C sort; }
have_cli=$(command -v redis-cli || true)
keys_before=$(mktemp)
trap 'rm -f "$keys_before"' EXIT
[ -z "$have_cli" ] || redis_keys >"$keys_before"
go test -race -count=1 -timeout 25m "$@" ./...
# The one test that cannot run under -race (a data race inside the embedded nats-server).
go test -count=1 -run 'TestRecreatedStreamGroup' ./transports/jetstream/
# The cluster tests once more without -race: at full speed brokers deliver in bursts the race
# detector's slowness hides.
go test -count=1 -run 'TestCluster' .
# Per-channel state freed, 4 rounds of 20,000 channel names on every broker (it skips itself
# under -race: it asserts heap sizes, at full size).
go test -count=1 -run 'TestChannelStateIsFreed' .
# A dead node's presence members reaped within 2 heartbeats, on every broker that has the test:
# it asserts a time, which the race detector's slowness would stretch.
go test -count=1 -run 'TestPresenceReapBound' ./transports/...
# The JavaScript client against real nodes, the real pusher-js, pusher and laravel-echo packages
# against two nodes, then pusher-js, Laravel Echo and the chat demo in headless Chromium.
./scripts/test-js.sh
./scripts/test-pusher.sh
./scripts/test-browser.sh
# No Redis key made by the tests is left (CI's server starts empty; elsewhere another user of the
# shared server may write meanwhile, so there it is a warning).
if [ -n "$have_cli" ]; then
  left=$(redis_keys | LC_ALL=C comm -13 "$keys_before" -)
  if [ -n "$left" ]; then
    echo "test.sh: the tests left $(echo "$left" | wc -l) Redis keys, by prefix:" >&2
    echo "$left" | sed -E 's/^\{?([^:}]*).*/\1/' | sort | uniq -c | sort -rn | head -20 >&2
    [ "${CI:-}" != true ] || exit 1
  fi
fi
