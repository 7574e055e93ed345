#!/usr/bin/env bash
# A whole scaled-out farm on one machine, for trying and testing #15's deployment: three clustered
# nats-servers, a PostgreSQL of its own (Debian's packages, in $KILN_STATE/postgres, on a Unix socket
# only), two gateways sharing that database and one data directory, and a worker pool — all on loopback.
# Ctrl-C / SIGTERM stops everything; nothing is left running.
#
# Environment (all optional): BIN (default .build/release), KILN_STATE (.state-scale), KILN_NATS_PORTS
# ("4222 4223 4224"), KILN_NATS_ROUTE_PORTS (each client port + 2000), KILN_GATEWAY_PORTS ("8080 8081"), KILN_POOL_IDLE (2), KILN_POOL_MAX (8),
# KILN_POOL_MONITOR_PORT (8223), KILN_WORKER_ARGS (extra kiln-worker flags).
# For a deployment across machines see cluster/README.md ("Scaling out").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release}
STATE=${KILN_STATE:-.state-scale}
read -r -a NATS_PORTS <<< "${KILN_NATS_PORTS:-4222 4223 4224}"
read -r -a ROUTE_PORTS <<< "${KILN_NATS_ROUTE_PORTS:-$(for p in "${NATS_PORTS[@]}"; do printf '%d ' $((p + 2000)); done)}"
read -r -a GATEWAY_PORTS <<< "${KILN_GATEWAY_PORTS:-8080 8081}"
POOL_IDLE=${KILN_POOL_IDLE:-2}
POOL_MAX=${KILN_POOL_MAX:-8}
POOL_MONITOR_PORT=${KILN_POOL_MONITOR_PORT:-8223}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/postgres" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
command -v nats-server > /dev/null || [ -x /usr/sbin/nats-server ] || { echo "nats-server is not installed (apt-get install nats-server)" >&2; exit 1; }
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
mkdir -p "$STATE/keys" "$STATE/logs" "$STATE/shared"
STATE=$(cd "$STATE" && pwd)

source cluster/common.sh
stop_extra() {  # runuser does not pass signals on: stop the postmaster itself.
  if [ -f "$STATE/postgres/data/postmaster.pid" ]; then kill -TERM "$(head -1 "$STATE/postgres/data/postmaster.pid")" 2>/dev/null || true; fi
}

# 1. Three nats-servers in one cluster, each told of the others' route ports, trusting Kiln's NATS
#    accounts (`kiln keys nats`): the operator's credential key is the account's key, each role has its
#    user (.creds, root-only), and the pool mints every worker a user of its own — nats-server then holds
#    each worker to its own id's subjects, which is how the gateway knows who sent what (NATS stamps nothing).
if [ ! -f "$STATE/keys/credential.pem" ]; then "$BIN/kiln" keys generate "$STATE/keys/credential.pem" > /dev/null; fi
"$BIN/kiln" keys nats --credential-key "$STATE/keys/credential.pem" --out "$STATE/keys/nats" > /dev/null
CREDS="$STATE/keys/nats"
routes=$(for r in "${ROUTE_PORTS[@]}"; do printf 'nats://127.0.0.1:%d,' "$r"; done)
for i in "${!NATS_PORTS[@]}"; do
  p=${NATS_PORTS[$i]}
  "$NATS_SERVER" -a 127.0.0.1 -p "$p" --cluster_name kiln --cluster "nats://127.0.0.1:${ROUTE_PORTS[$i]}" --routes "${routes%,}" \
    --no_advertise -c "$CREDS/nats-server.conf" > "$STATE/logs/nats-$p.log" 2>&1 &
  pids+=($!)
done
for p in "${NATS_PORTS[@]}"; do wait_for "$STATE/logs/nats-$p.log" "Server is ready"; done
bus() {  # the member list, starting at member $1 (each process prefers another member)
  local n=${#NATS_PORTS[@]} out=""
  for (( i=0; i<n; i++ )); do out+="nats://127.0.0.1:${NATS_PORTS[$(( ($1 + i) % n ))]},"; done
  echo "${out%,}"
}

# 2. PostgreSQL of our own: initdb once, then the postmaster on a socket in the state directory.
PG="$STATE/postgres"
if [ ! -f "$PG/data/PG_VERSION" ]; then
  mkdir -p "$PG/data" "$PG/socket"
  chown postgres:postgres "$PG/data" "$PG/socket" 2>/dev/null || true
  chmod 755 "$STATE" "$PG"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG/data" -A trust -U kiln > "$STATE/logs/initdb.log" 2>&1
fi
runuser -u postgres -- "$PG_BIN/postgres" -D "$PG/data" -k "$PG/socket" -c listen_addresses= > "$STATE/logs/postgres.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/postgres.log" "ready to accept connections"
DATABASE="postgres://kiln@localhost/postgres?host=$PG/socket"

# 3. Two gateways: one database, one data directory (uploads and results), each preferring another bus member.
for i in "${!GATEWAY_PORTS[@]}"; do
  KILN_BROKER_CREDS="$CREDS/gateway.creds" "$BIN/kiln-gateway" --host 127.0.0.1 --port "${GATEWAY_PORTS[$i]}" --data "$STATE/shared" --database "$DATABASE" \
    --broker "$(bus "$i")" --instance-id "gateway-$i" --public-key "$STATE/keys/farm.pub.pem" > "$STATE/logs/gateway-$i.log" 2>&1 &
  pids+=($!)
done
for i in "${!GATEWAY_PORTS[@]}"; do wait_for "$STATE/logs/gateway-$i.log" "kiln-gateway listening on"; done

# 4. The fetch service (on the first member) and a pool on the third.
# NATS stamps no sender: kiln-fetch takes the worker id from the subject, which only that worker may publish on.
# shellcheck disable=SC2086  # KILN_FETCH_ARGS is a list of flags
KILN_BROKER_CREDS="$CREDS/fetch.creds" "$BIN/kiln-fetch" --broker "$(bus 0)" --state "$STATE/fetch" --allow-unstamped ${KILN_FETCH_ARGS:-} > "$STATE/logs/fetch.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/fetch.log" "kiln-fetch ready"

KILN_BROKER_CREDS="$CREDS/pool.creds" "$BIN/kiln-pool" --broker "$(bus 2)" --idle "$POOL_IDLE" --max "$POOL_MAX" --state "$STATE/pool" \
  --key "$STATE/keys/farm.pem" --credential-signing-key "$STATE/keys/credential.pem" --monitor-port "$POOL_MONITOR_PORT" ${KILN_WORKER_ARGS:+"--worker-args=$KILN_WORKER_ARGS"} > "$STATE/logs/pool.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/pool.log" "started worker" 1200

cat <<INFO
A scaled-out Kiln farm is running.
  gateways    $(for p in "${GATEWAY_PORTS[@]}"; do printf 'http://127.0.0.1:%s  ' "$p"; done)(any of them answers for any job)
  bus         $(bus 0)
  database    $DATABASE
  logs        $STATE/logs/
Submit through one gateway, follow and download through the other:
  kiln submit --gateway http://127.0.0.1:${GATEWAY_PORTS[0]} …   then   curl -N http://127.0.0.1:${GATEWAY_PORTS[1]}/build/<id>/events
INFO
echo "scale-out farm ready"
# Surviving a member's death is what a scaled-out farm is for: say which process ended and keep running
# while any does. Ctrl-C (or SIGTERM) stops everything.
declare -A what
for p in "${pids[@]}"; do what[$p]=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-80 || true); done
alive=("${pids[@]}")
while [ ${#alive[@]} -gt 0 ]; do
  wait -n "${alive[@]}" || true
  still=()
  for p in "${alive[@]}"; do
    if kill -0 "$p" 2>/dev/null; then still+=("$p"); else echo "a member exited (pid $p: ${what[$p]:-?}); the farm keeps running, Ctrl-C stops it" >&2; fi
  done
  alive=("${still[@]}")
done
