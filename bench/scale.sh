#!/usr/bin/env bash
# #15's benchmark: a burst of submissions → stand-in workers → ready, then dispatch latency one job at a
# time with idle workers, through one gateway vs two, kiln-broker vs a
# three-member nats-server cluster, SQLite vs PostgreSQL — one JSON line per configuration, same run.
# On a small machine every process shares the same cores, so a second gateway adds work, not capacity.
# The last configurations therefore also give each gateway a fixed CPU budget of its own
# (SCALE_GATEWAY_CPU cores, default 0.25, a cgroup-v1 CPU quota), as it would have on its own host:
# that is what shows whether the gateway tier scales out.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/.build/release}
[ -x "$BIN/kiln-bench" ] || { echo "no $BIN/kiln-bench: build it with KILN_BENCH=1 swift build -c release (make bench does)" >&2; exit 1; }
JOBS=${SCALE_JOBS:-400}
WORKERS=${SCALE_WORKERS:-16}
GATEWAY_CPU=${SCALE_GATEWAY_CPU:-0.25}
CPU_CGROUP=/sys/fs/cgroup/cpu
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d); chmod 755 "$work"
pids=()
groups=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=()
  for g in "${groups[@]}"; do rmdir "$g" 2>/dev/null || true; done; groups=()
}
# cap PID CORES: the process (all its threads) gets CORES of CPU time per period, in a cgroup of its own.
cap() {
  local g="$CPU_CGROUP/kiln-bench-$$-$1" period
  period=$(cat "$CPU_CGROUP/cpu.cfs_period_us")
  mkdir "$g" && groups+=("$g")
  echo "$period" > "$g/cpu.cfs_period_us"
  awk -v c="$2" -v p="$period" 'BEGIN { printf "%d\n", c * p }' > "$g/cpu.cfs_quota_us"
  echo "$1" > "$g/cgroup.procs"
}
cleanup() { stop_all; [ -f "$work/pg/data/postmaster.pid" ] && kill -TERM "$(head -1 "$work/pg/data/postmaster.pid")" 2>/dev/null; sleep 1; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }

mkdir -p "$work/hello/src" "$work/pg/data" "$work/pg/socket"
printf '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n' > "$work/hello/Cargo.toml"
echo 'fn main() { println!("hi"); }' > "$work/hello/src/main.rs"
tar czf "$work/hello.tar.gz" -C "$work" hello

# One PostgreSQL for the run (a fresh database per configuration), fsync on as in production.
chown postgres:postgres "$work/pg/data" "$work/pg/socket"
runuser -u postgres -- "$PG_BIN/initdb" -D "$work/pg/data" -A trust -U kiln > /dev/null
runuser -u postgres -- "$PG_BIN/postgres" -D "$work/pg/data" -k "$work/pg/socket" -c listen_addresses= -c max_connections=300 > "$work/pg.log" 2>&1 &
wait_for "$work/pg.log" "ready to accept connections"
n=0
database() { runuser -u postgres -- psql -h "$work/pg/socket" -U kiln -d postgres -qc "CREATE DATABASE bench$1" > /dev/null; echo "postgres://kiln@localhost/bench$1?host=$work/pg/socket"; }

# run NAME BUS(kiln|nats) STORE(sqlite|postgres) GATEWAYS [CORES PER GATEWAY]
run() {
  local name=$1 bus=$2 store=$3 count=$4 cores=${5:-} urls="" gws=() busurls=()
  local dir="$work/$name"; mkdir -p "$dir"
  if [ "$bus" = kiln ]; then
    local bp; bp=$(port)
    "$BIN/kiln-broker" --port "$bp" --monitor-port=-1 --log-level warning > "$dir/broker.log" 2>&1 & pids+=($!)
    wait_for "$dir/broker.log" "listening on"
    busurls=("kiln://127.0.0.1:$bp")
  else
    local cp=() rp=() routes=""
    for i in 0 1 2; do cp+=("$(port)"); rp+=("$(port)"); routes+="nats://127.0.0.1:${rp[$i]},"; done
    for i in 0 1 2; do
      nats-server -a 127.0.0.1 -p "${cp[$i]}" --cluster_name kiln --cluster "nats://127.0.0.1:${rp[$i]}" --routes "${routes%,}" --no_advertise > "$dir/nats$i.log" 2>&1 & pids+=($!)
    done
    for i in 0 1 2; do wait_for "$dir/nats$i.log" "Server is ready"; done
    sleep 1  # routes up
    for i in 0 1 2; do busurls+=("nats://127.0.0.1:${cp[$i]},nats://127.0.0.1:${cp[$(( (i + 1) % 3 ))]},nats://127.0.0.1:${cp[$(( (i + 2) % 3 ))]}"); done
  fi
  local db=""; n=$((n + 1)); [ "$store" = postgres ] && db=$(database "$n")
  for (( g=0; g<count; g++ )); do
    local gp; gp=$(port)
    "$BIN/kiln-gateway" --port "$gp" --data "$dir/shared" ${db:+--database "$db"} --broker "${busurls[$(( g % ${#busurls[@]} ))]}" \
      --log-level warning --submissions-per-minute 10000000 > "$dir/gw$g.log" 2>&1 & pids+=($!)
    if [ -n "$cores" ]; then cap "$!" "$cores"; fi
    gws+=("http://127.0.0.1:$gp")
  done
  for (( g=0; g<count; g++ )); do wait_for "$dir/gw$g.log" "listening on"; done
  urls=$(IFS=,; echo "${gws[*]}")
  local workerbus; workerbus=$(IFS=';'; echo "${busurls[*]}")
  "$BIN/kiln-bench" scale --name "$name" --gateways "$urls" --bus "${workerbus//;/,}" --archive "$work/hello.tar.gz" --jobs "$JOBS" --workers "$WORKERS"
  stop_all
}

run "kiln-broker, SQLite, 1 gateway" kiln sqlite 1
run "kiln-broker, PostgreSQL, 1 gateway" kiln postgres 1
run "kiln-broker, PostgreSQL, 2 gateways" kiln postgres 2
run "NATS cluster, PostgreSQL, 1 gateway" nats postgres 1
run "NATS cluster, PostgreSQL, 2 gateways" nats postgres 2
if [ -w "$CPU_CGROUP/cgroup.procs" ] && [ -f "$CPU_CGROUP/cpu.cfs_quota_us" ]; then
  run "kiln-broker, PostgreSQL, 1 gateway of $GATEWAY_CPU CPU" kiln postgres 1 "$GATEWAY_CPU"
  run "kiln-broker, PostgreSQL, 2 gateways of $GATEWAY_CPU CPU each" kiln postgres 2 "$GATEWAY_CPU"
  run "NATS cluster, PostgreSQL, 1 gateway of $GATEWAY_CPU CPU" nats postgres 1 "$GATEWAY_CPU"
  run "NATS cluster, PostgreSQL, 2 gateways of $GATEWAY_CPU CPU each" nats postgres 2 "$GATEWAY_CPU"
else
  echo "no writable cgroup-v1 CPU controller at $CPU_CGROUP: the per-gateway CPU budget configurations are skipped" >&2
fi
