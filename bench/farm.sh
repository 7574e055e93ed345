#!/usr/bin/env bash
# Farm benchmark (issue #6): 50 small jobs submitted at once to a pool of 4 workers (jobs/min, wait in
# queue p50/p99), and the same 50 builds back to back with plain `cargo build --release`. Before the
# burst, five hello jobs one at a time with idle workers; bench/job_breakdown.py splits both sets' wall
# time into dispatch, start-up, each phase and the gateway's store (#31 item 2).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/.build/release}
export PATH=/root/.cargo/bin:$HOME/.cargo/bin:$PATH
JOBS=${JOBS:-50}
work=$(mktemp -d)
farm=""
cleanup() { [ -n "$farm" ] && kill -TERM "$farm" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for i in $(seq "$JOBS"); do
  mkdir -p "$work/src/job$i/src"
  printf '[package]\nname = "job%s"\nversion = "0.1.0"\nedition = "2021"\n' "$i" > "$work/src/job$i/Cargo.toml"
  echo "fn main() { println!(\"job $i\"); }" > "$work/src/job$i/src/main.rs"
  tar czf "$work/job$i.tar.gz" -C "$work/src" "job$i"
done
# Five more, built one at a time before the burst (sources of their own: nothing the burst builds is
# built before it).
for i in $(seq 5); do
  mkdir -p "$work/src/solo$i/src"
  printf '[package]\nname = "solo%s"\nversion = "0.1.0"\nedition = "2021"\n' "$i" > "$work/src/solo$i/Cargo.toml"
  echo "fn main() { println!(\"solo $i\"); }" > "$work/src/solo$i/src/main.rs"
  tar czf "$work/solo$i.tar.gz" -C "$work/src" "solo$i"
done
GP=$(port)
BIN="$BIN" KILN_STATE="$work/state" KILN_BROKER_PORT=$(port) KILN_BROKER_MONITOR_PORT=$(port) KILN_GATEWAY_PORT=$GP \
  KILN_POOL_MONITOR_PORT=$(port) KILN_FETCH_MONITOR_PORT=$(port) KILN_POOL_IDLE=4 KILN_POOL_MAX=4 cluster/farm.sh > "$work/farm.log" 2>&1 &
farm=$!
for _ in $(seq 400); do grep -q "Kiln is running" "$work/farm.log" && break; sleep 0.05; done
sleep 2
python3 - "$GP" "$work" "$JOBS" <<'PY'
import base64, json, subprocess, sys, time, urllib.request, concurrent.futures
from datetime import datetime
gp, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
gw = f"http://127.0.0.1:{gp}"
def submit(i, name="job"):
    data = base64.b64encode(open(f"{work}/{name}{i}.tar.gz", "rb").read()).decode()
    req = urllib.request.Request(gw + "/build", data=json.dumps({"nonce": "abcd", "source_data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["job_id"]
def wait_all(ids):
    while True:
        st = [json.load(urllib.request.urlopen(f"{gw}/build/{i}")) for i in ids]
        if all(s["status"] in ("ready", "error", "cancelled") for s in st): return st
        time.sleep(0.1)
def breakdown(case, ids):
    subprocess.run([sys.executable, "bench/job_breakdown.py", gw, case, *ids], check=True)
# One hello job at a time with idle workers waiting: where a small job's time goes when nothing queues.
single = []
for i in range(1, 6):
    single.append(submit(i, "solo"))
    wait_all(single[-1:])
breakdown("hello_job_breakdown_idle_pool", single)
t0 = time.time()
# At most 8 uploads at once: the gateway's default per-caller upload limit (16 died with HTTP 429, #31).
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    ids = list(ex.map(submit, range(1, n + 1)))
st = wait_all(ids)
t1 = time.time()
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
waits = sorted(ts(s["started_at"]) - ts(s["queued_at"]) for s in st if s.get("started_at"))
ok = sum(1 for s in st if s["status"] == "ready")
print(json.dumps({"case": "farm_50_jobs_pool_4", "jobs": n, "ready": ok, "seconds": round(t1 - t0, 1), "jobs_per_min": round(n / (t1 - t0) * 60, 1),
                  "queue_wait_p50_s": round(waits[len(waits) // 2], 2), "queue_wait_p99_s": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 2)}))
breakdown("farm_50_jobs_breakdown", ids)
PY
s=$(date +%s.%N)
for i in $(seq "$JOBS"); do (cd "$work/src/job$i" && CARGO_TARGET_DIR="$work/target-$i" cargo build --release -q); done
e=$(date +%s.%N)
python3 -c "import json; d=$e-$s; print(json.dumps({'case':'cargo_back_to_back','jobs':$JOBS,'seconds':round(d,1),'jobs_per_min':round($JOBS/d*60,1)}))"
