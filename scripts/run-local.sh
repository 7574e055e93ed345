#!/usr/bin/env bash
# Starts a local Kiln farm from the release build, state under $KILN_STATE (default .state/).
# Ctrl-C / SIGTERM stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release}
STATE=${KILN_STATE:-.state}
BROKER_PORT=${KILN_BROKER_PORT:-4222}
MONITOR_PORT=${KILN_BROKER_MONITOR_PORT:-8222}
mkdir -p "$STATE"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$BIN/kiln-broker" --host 127.0.0.1 --port "$BROKER_PORT" --monitor-port "$MONITOR_PORT" &
pids+=($!)
echo "broker: kiln://127.0.0.1:$BROKER_PORT  (metrics: http://127.0.0.1:$MONITOR_PORT/metrics)"
wait -n
