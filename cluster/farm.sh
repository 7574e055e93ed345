#!/usr/bin/env bash
# Starts broker, kiln-fetch, gateway and a pool of one-shot workers with all state under $KILN_STATE.
# The bus is secured as in production: the production permissions file with random passwords and
# per-worker credentials (keys under $KILN_STATE/keys). Process workers hold the farm key (the
# development mode; `make run-vm` keeps it in the pool only).
# Ctrl-C / SIGTERM stops everything (the pool stops its workers); no process is left behind.
#
# Environment (all optional): BIN (default .build/release), KILN_STATE (.state), KILN_BROKER_PORT (4222),
# KILN_BROKER_MONITOR_PORT (8222), KILN_GATEWAY_PORT (8080), KILN_POOL_IDLE (2), KILN_POOL_MAX (8),
# KILN_POOL_MONITOR_PORT (8223), KILN_FETCH_MONITOR_PORT (8224), KILN_WORKER_ARGS (extra kiln-worker flags),
# KILN_FETCH_ARGS (extra kiln-fetch flags: a registry mirror, hosts to allow).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release}
STATE=${KILN_STATE:-.state}
BROKER_PORT=${KILN_BROKER_PORT:-4222}
BROKER_MONITOR_PORT=${KILN_BROKER_MONITOR_PORT:-8222}
GATEWAY_PORT=${KILN_GATEWAY_PORT:-8080}
POOL_IDLE=${KILN_POOL_IDLE:-2}
POOL_MAX=${KILN_POOL_MAX:-8}
POOL_MONITOR_PORT=${KILN_POOL_MONITOR_PORT:-8223}
FETCH_MONITOR_PORT=${KILN_FETCH_MONITOR_PORT:-8224}
mkdir -p "$STATE/keys" "$STATE/logs"
STATE=$(cd "$STATE" && pwd)

source cluster/common.sh
secure_bus

# Secure by default (#29): the production permissions, per-worker credentials, random passwords.
"$BIN/kiln-broker" --host 127.0.0.1 --port "$BROKER_PORT" --monitor-port "$BROKER_MONITOR_PORT" "${broker_security[@]}" \
  > "$STATE/logs/broker.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/broker.log" "kiln-broker listening on"

# The fetch service: the only process that reaches a registry or a repository; workers get their inputs from it.
# shellcheck disable=SC2086  # KILN_FETCH_ARGS is a list of flags
"$BIN/kiln-fetch" --broker "$(bus fetch)" --state "$STATE/fetch" --monitor-port "$FETCH_MONITOR_PORT" \
  ${KILN_FETCH_ARGS:-} > "$STATE/logs/fetch.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/fetch.log" "kiln-fetch ready"

"$BIN/kiln-gateway" --host 127.0.0.1 --port "$GATEWAY_PORT" --data "$STATE/gateway" --broker "$(bus gateway)" \
  --public-key "$STATE/keys/farm.pub.pem" > "$STATE/logs/gateway.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/gateway.log" "kiln-gateway listening on"

"$BIN/kiln-pool" --broker "$(bus pool)" --idle "$POOL_IDLE" --max "$POOL_MAX" --state "$STATE/pool" \
  --credential-signing-key "$STATE/keys/credential.pem" --key "$STATE/keys/farm.pem" --monitor-port "$POOL_MONITOR_PORT" ${KILN_WORKER_ARGS:+"--worker-args=$KILN_WORKER_ARGS"} > "$STATE/logs/pool.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/pool.log" "started worker"

cat <<INFO
Kiln is running.
  gateway     http://127.0.0.1:$GATEWAY_PORT
  dashboard   http://127.0.0.1:$GATEWAY_PORT/ui/
  public key  $STATE/keys/farm.pub.pem
  logs        $STATE/logs/ (workers: $STATE/pool/workers/)
  metrics     broker http://127.0.0.1:$BROKER_MONITOR_PORT/metrics  gateway http://127.0.0.1:$GATEWAY_PORT/metrics  pool http://127.0.0.1:$POOL_MONITOR_PORT/metrics
              fetch http://127.0.0.1:$FETCH_MONITOR_PORT/metrics

Try it (a zero-dependency crate, sent as base64 source_data):
  mkdir -p /tmp/hello/src && printf '[package]\\nname = "hello"\\nversion = "0.1.0"\\nedition = "2021"\\n' > /tmp/hello/Cargo.toml \\
    && echo 'fn main() { println!("hello"); }' > /tmp/hello/src/main.rs && tar czf /tmp/hello.tar.gz -C /tmp hello
  curl -s http://127.0.0.1:$GATEWAY_PORT/build -H 'Content-Type: application/json' \\
    -d "{\\"nonce\\": \\"00112233445566778899aabbccddeeff\\", \\"source_data\\": \\"\$(base64 -w0 /tmp/hello.tar.gz)\\", \\"source_name\\": \\"hello.tar.gz\\"}"
  curl -N http://127.0.0.1:$GATEWAY_PORT/build/<job_id>/events
  curl -o result.tar.gz http://127.0.0.1:$GATEWAY_PORT/build/<job_id>/result
  $BIN/kiln verify result.tar.gz --nonce 00112233445566778899aabbccddeeff --key $STATE/keys/farm.pub.pem --allow-tee-none
Or: $BIN/kiln submit /tmp/hello --follow -o result.tar.gz   (KILN_GATEWAY=http://127.0.0.1:$GATEWAY_PORT)
Ctrl-C stops everything.
INFO

# Stop everything as soon as any component dies.
wait -n "${pids[@]}"
echo "a component exited; stopping the farm" >&2
