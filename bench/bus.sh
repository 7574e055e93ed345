#!/usr/bin/env bash
# Bus benchmark: kiln-broker and nats-server side by side, same cases, same run (issue #2).
# Prints one JSON line per case and server. Needs: release build, nats-server, libnats-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release}
[ -x "$BIN/kiln-bench" ] || { echo "no $BIN/kiln-bench: build it with KILN_BENCH=1 swift build -c release (make bench does)" >&2; exit 1; }
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
cc -O2 -o "$out/natsbench" ../shared/bench/natsbench.c -lnats -lpthread

"$BIN/kiln-broker" --host 127.0.0.1 --port 0 --monitor-port=-1 --log-level warning > "$out/broker.log" 2>&1 &
for _ in $(seq 100); do grep -q "listening on" "$out/broker.log" && break; sleep 0.05; done
kport=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$out/broker.log" | cut -d: -f2)
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$nport" > "$out/nats.log" 2>&1 &
sleep 0.5

for case in "128 1000000" "4096 200000" "262144 4000"; do
  set -- $case
  "$BIN/kiln-bench" bus --port "$kport" --size "$1" --msgs "$2" --requests 20000
  "$out/natsbench" "nats://127.0.0.1:$nport" "$2" "$1"
  # Kiln's own NATS client (#15) against the same nats-server: the transport a NATS farm uses.
  "$BIN/kiln-bench" bus --url "nats://127.0.0.1:$nport" --size "$1" --msgs "$2" --requests 20000
done
