#!/usr/bin/env bash
# Gateway benchmarks (issue #5): dispatch latency, SSE fan-out, download vs nginx — one JSON line each.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/.build/release}
[ -x "$BIN/kiln-bench" ] || { echo "no $BIN/kiln-bench: build it with KILN_BENCH=1 swift build -c release (make bench does)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }

BP=$(port); GP=$(port); PM=$(port)
"$BIN/kiln-broker" --port "$BP" --monitor-port=-1 --log-level warning > "$work/broker.log" 2>&1 & pids+=($!)
wait_for "$work/broker.log" "listening on"
"$BIN/kiln" keys generate "$work/farm.pem" > /dev/null
# Principals on (#12): every request carries a user's bearer token, as on a shared farm.
export KILN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
AUTH="Authorization: Bearer $KILN_TOKEN"
# Each case gets a gateway of its own with an empty store (#31): jobs a case leaves waiting (the
# dispatch case stops its pool with jobs queued) must not be taken by the next case's stand-in worker
# while that case's clients wait on a job of their own — that hung the SSE case for ever.
GWN=0
start_gateway() {
  if [ -n "${GWPID:-}" ]; then kill -TERM "$GWPID" 2>/dev/null || true; wait "$GWPID" 2>/dev/null || true; fi
  GWN=$((GWN + 1)); GP=$(port)
  "$BIN/kiln-gateway" --port "$GP" --data "$work/gw$GWN" --broker "kiln://127.0.0.1:$BP" --log-level warning --token "bench:user:$KILN_TOKEN" \
    --submissions-per-minute 100000 --max-event-streams-per-caller 100000 > "$work/gw$GWN.log" 2>&1 & GWPID=$!; pids+=($GWPID)
  wait_for "$work/gw$GWN.log" "listening on"
  GW="http://127.0.0.1:$GP"
}

mkdir -p "$work/hello/src"
printf '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n' > "$work/hello/Cargo.toml"
echo 'fn main() { println!("hi"); }' > "$work/hello/src/main.rs"
tar czf "$work/hello.tar.gz" -C "$work" hello

# 1. Dispatch latency with idle workers waiting.
if [ -z "${SKIP_DISPATCH:-}" ]; then
start_gateway
"$BIN/kiln-pool" --broker "kiln://127.0.0.1:$BP" --idle 3 --max 6 --state "$work/pool" --key "$work/farm.pem" --monitor-port "$PM" \
  --log-level warning > "$work/pool.log" 2>&1 & POOL=$!; pids+=($POOL)
sleep 2
python3 bench/gateway_bench.py dispatch --gateway "$GW" --pool-metrics "http://127.0.0.1:$PM/metrics" --archive "$work/hello.tar.gz" --jobs "${DISPATCH_JOBS:-200}" --idle 3
kill -TERM "$POOL"; wait "$POOL" 2>/dev/null || true
fi

if [ -n "${KEEP_WORK:-}" ]; then trap - EXIT; echo "work: $work" >&2; fi
CC=${CC:-$(command -v cc || command -v clang)}
"$CC" -O2 -o "$work/sseclients" bench/sseclients.c
"$CC" -O2 -pthread -o "$work/sse_floor" bench/sse_floor.c
# 2. SSE fan-out: 1000 clients on one job while a (stand-in) worker publishes 1000 events, at 10
#    events/s (a real worker's ceiling: its log batcher ships at most ~10 a second) and at 100/s.
for rate in $([ -n "${SKIP_SSE:-}" ] || echo "${SSE_RATES:-10 100}"); do
start_gateway
rm -f "$work/go"
"$BIN/kiln-bench" fake-worker --port "$BP" --events "${SSE_EVENTS:-1000}" --rate "$rate" --go-file "$work/go" > "$work/fake1.log" 2>&1 & FW=$!
wait_for "$work/fake1.log" "fake-worker ready"
JOB=$(curl -s "$GW/build" -H "$AUTH" -H 'Content-Type: application/json' -d "{\"nonce\":\"abcd\",\"source_data\":\"$(base64 -w0 "$work/hello.tar.gz")\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
wait_for "$work/fake1.log" "fake-worker job"
if [ "${SSE_CLIENT:-c}" = swift ]; then
  "$BIN/kiln-bench" sse-clients --port "$GP" --job "$JOB" --clients "${SSE_CLIENTS:-1000}" --gateway-pid "$GWPID" --go-file "$work/go"
else
  "$work/sseclients" 127.0.0.1 "$GP" "$JOB" "${SSE_CLIENTS:-1000}" "$work/go" "$GWPID" "$rate"
fi
wait "$FW" || true
# The same fan-out from a C server that only writes (sse_floor.c), measured the same way: the floor.
FP=$(port); rm -f "$work/go"
"$work/sse_floor" "$FP" "${SSE_CLIENTS:-1000}" "${SSE_EVENTS:-1000}" "$rate" "$work/go" > "$work/floor.log" 2>&1 & FLOOR=$!
wait_for "$work/floor.log" "floor listening"
"$work/sseclients" 127.0.0.1 "$FP" floor "${SSE_CLIENTS:-1000}" "$work/go" "$FLOOR" "$rate" sse_fanout_floor_c
wait "$FLOOR" || true
done

# 3. Download of a 100 MiB result vs nginx serving the same file.
if [ -z "${SKIP_DOWNLOAD:-}" ]; then
start_gateway
"$BIN/kiln-bench" fake-worker --port "$BP" --events 0 --result-mb 100 > "$work/fake2.log" 2>&1 & FW=$!
wait_for "$work/fake2.log" "fake-worker ready"
JOB=$(curl -s "$GW/build" -H "$AUTH" -H 'Content-Type: application/json' -d "{\"nonce\":\"abcd\",\"source_data\":\"$(base64 -w0 "$work/hello.tar.gz")\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
wait "$FW" || true
for _ in $(seq 100); do curl -s -H "$AUTH" "$GW/build/$JOB" | grep -q '"status":"ready"' && break; sleep 0.1; done
SHA=$(curl -s -H "$AUTH" "$GW/build/$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["sha256"])')
chmod 755 "$work"; mkdir -p "$work/www"; cp "$work/gw$GWN/results/$SHA.tar.gz" "$work/www/result.tar.gz"
NP=$(port)
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:$NP; root $work/www; }
}
NGINX
nginx -c "$work/nginx.conf"
python3 bench/gateway_bench.py download --gateway "$GW" --job "$JOB" --nginx "http://127.0.0.1:$NP/result.tar.gz"
fi

# 4. Fifty concurrent 100 MiB uploads (multipart, then JSON base64) into a fresh gateway: its peak
#    RSS, beside nginx taking the same bodies by WebDAV PUT (spooled to disk, the peer's floor).
if [ -z "${SKIP_UPLOADS:-}" ]; then
UP=$(port); NU=$(port)
"$BIN/kiln-gateway" --port "$UP" --data "$work/gw-up" --broker "kiln://127.0.0.1:$BP" --log-level warning --token "bench:user:$KILN_TOKEN" \
  --max-uploads 64 --max-uploads-per-caller 64 --submissions-per-minute 100000 > "$work/gw-up.log" 2>&1 & UPPID=$!; pids+=($UPPID)
wait_for "$work/gw-up.log" "listening on"
mkdir -p "$work/dav" "$work/davtmp"
chmod 755 "$work"; chmod 777 "$work/dav" "$work/davtmp"   # nginx's workers run as www-data
cat > "$work/nginx-up.conf" <<NGINX
worker_processes 1;
pid $work/nginx-up.pid;
error_log $work/nginx-up-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/davtmp;
  server {
    listen 127.0.0.1:$NU;
    location /upload/ { alias $work/dav/; dav_methods PUT; client_max_body_size 300m; create_full_put_path on; }
  }
}
NGINX
nginx -c "$work/nginx-up.conf"
sleep 0.5
NPIDS=$(cat "$work/nginx-up.pid"),$(pgrep -P "$(cat "$work/nginx-up.pid")" | paste -sd,)
for mode in ${UPLOAD_MODES:-multipart json}; do
  python3 bench/upload_bench.py --gateway-port "$UP" --gateway-pid "$UPPID" --token "$KILN_TOKEN" --nginx-port "$NU" --nginx-pids "$NPIDS" \
    --clients "${UPLOAD_CLIENTS:-50}" --mb "${UPLOAD_MB:-100}" --mode "$mode"
  rm -rf "$work/dav"/* "$work/gw-up/uploads"/*
done
nginx -c "$work/nginx-up.conf" -s stop 2>/dev/null || true
fi
