#!/usr/bin/env bash
# Runs every test of the project on this machine: starts (or installs, on Debian) the NATS and
# Redis servers the broker tests talk to when they are not already listening, then runs vet,
# gofmt and the whole suite under the race detector. Kafka tests need nothing: they start an
# in-process Kafka-protocol broker (kfake). Then the JavaScript client's tests and the chat demo's
# headless-Chromium test (each script installs Node.js or Chromium when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing $*"
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null 2>&1 || true; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "test.sh: $* missing and cannot be installed here (need root and apt-get)" >&2
    return 1
  fi
}

wait_port() {
  for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.1; done
  echo "test.sh: nothing listens on 127.0.0.1:$1" >&2
  return 1
}

if ! listening 6379; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_port 6379
fi

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
go test -race -count=1 -timeout 25m "$@" ./...
# The one test that cannot run under -race (a data race inside the embedded nats-server).
go test -count=1 -run 'TestRecreatedStreamGroup' ./transports/jetstream/
# The cluster tests once more without -race: at full speed brokers deliver in bursts the race
# detector's slowness hides.
go test -count=1 -run 'TestCluster' .
# The JavaScript client against real nodes, then the chat demo in headless Chromium.
./scripts/test-js.sh
./scripts/test-browser.sh
