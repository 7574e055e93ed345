#!/usr/bin/env bash
# Fetch benchmark (issue #13): a real project with 27 registry dependencies (clap with derive, and
# serde_json, from Debian's crate set packed into a sparse-HTTP registry on loopback by
# bench/debian_registry.py), built by bare `cargo build --release` (fresh CARGO_HOME each run: it
# downloads from the same registry) and through the farm with a cold crate cache, then a warm one;
# alternating rounds, same machine, same run. Reports the fetch phase's time beside the total. The
# workers do not use the compiled-dependency cache (--dependency-cache off; bench/depcache.sh measures it).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/.build/release}
export PATH=/root/.cargo/bin:$HOME/.cargo/bin:$PATH
ROUNDS=${ROUNDS:-3}
[ -d /usr/share/cargo/registry/clap-4.0.32 ] || { echo "needs librust-clap-dev and librust-serde-json-dev (scripts/install-deps.sh test)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

source bench/common.sh
start_debian_registry
app="$work/app"
clap_serde_project "$app" fetchapp
tar czf "$work/app.tar.gz" -C "$work" app

BP=$(port); GP=$(port)
"$BIN/kiln-broker" --port "$BP" --monitor-port=-1 --log-level warning > "$work/broker.log" 2>&1 & pids+=($!)
wait_for "$work/broker.log" "listening on"
"$BIN/kiln" keys generate "$work/farm.pem" > /dev/null
"$BIN/kiln-gateway" --port "$GP" --data "$work/gw" --broker "kiln://127.0.0.1:$BP" --log-level warning > "$work/gw.log" 2>&1 & pids+=($!)
wait_for "$work/gw.log" "listening on"

# One farm build with a fresh worker and a fresh kiln-fetch whose state (its crate cache) is $1:
# the warm build's cache has survived a restart of the fetch service. Prints "total_s fetch_s hits misses".
farm_build() {
  local cache="$1" tag="$2"
  "$BIN/kiln-fetch" --broker "kiln://127.0.0.1:$BP" --state "$cache" --cargo-registry "$INDEX" --allow-unstamped > "$work/f-$tag.log" 2>&1 &
  local fetch=$!
  wait_for "$work/f-$tag.log" "kiln-fetch ready"
  "$BIN/kiln-worker" --broker "kiln://127.0.0.1:$BP" --key "$work/farm.pem" --scratch "$work/scratch-$tag" --dependency-cache off > "$work/w-$tag.log" 2>&1 &
  wait_for "$work/w-$tag.log" "ready"
  python3 - "$GP" "$work/app.tar.gz" <<'PY'
import base64, json, sys, time, urllib.request
from datetime import datetime
gw, archive = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2]
body = {"nonce": "abcd", "source_data": base64.b64encode(open(archive, "rb").read()).decode()}
t0 = time.time()
req = urllib.request.Request(gw + "/build", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
job = json.load(urllib.request.urlopen(req))["job_id"]
while True:
    doc = json.load(urllib.request.urlopen(f"{gw}/build/{job}"))
    if doc["status"] in ("ready", "error", "cancelled"):
        break
    time.sleep(0.05)
total = time.time() - t0
assert doc["status"] == "ready", doc
events = urllib.request.urlopen(f"{gw}/build/{job}/events").read().decode()
phases = {}
for block in events.split("\n\n"):
    data = [l[6:] for l in block.split("\n") if l.startswith("data: ")]
    if data:
        e = json.loads("".join(data))
        if e["type"] == "phase":
            phases[e["name"]] = datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
fetch = phases["build"] - phases["fetch"]
c = doc["cache_summary"] or {}
print(f"{total:.2f} {fetch:.2f} {c.get('hits', 0)} {c.get('misses', 0)}")
PY
  kill "$fetch"; wait "$fetch" 2>/dev/null || true
}

bare=(); cold=(); warm=(); coldfetch=(); warmfetch=()
for r in $(seq "$ROUNDS"); do
  bare_home "$work/bare-home"; rm -rf "$work/target"
  s=$(date +%s.%N)
  (cd "$app" && CARGO_HOME="$work/bare-home" CARGO_TARGET_DIR="$work/target" cargo build --release --locked -q)
  bare+=("$(echo "$(date +%s.%N) - $s" | bc)")
  rm -rf "$work/cache-$r"
  read -r t f h m < <(farm_build "$work/cache-$r" "cold$r"); cold+=("$t"); coldfetch+=("$f")
  [ "$m" -gt 0 ] && [ "$h" -eq 0 ] || { echo "cold build was not cold: $h hits, $m misses" >&2; exit 1; }
  read -r t f h m < <(farm_build "$work/cache-$r" "warm$r"); warm+=("$t"); warmfetch+=("$f")
  [ "$m" -eq 0 ] || { echo "warm build missed the cache: $m misses" >&2; exit 1; }
done
med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
python3 - "$(med "${bare[@]}")" "$(med "${cold[@]}")" "$(med "${warm[@]}")" "$(med "${coldfetch[@]}")" "$(med "${warmfetch[@]}")" \
  "${bare[*]}" "${cold[*]}" "${warm[*]}" <<'PY'
import json, sys
b, c, w, cf, wf = map(float, sys.argv[1:6])
print(json.dumps({"case": "fetch_27_crates_vs_bare_cargo", "bare_cargo_s": round(b, 2), "kiln_cold_s": round(c, 2), "kiln_cold_fetch_s": round(cf, 2),
                  "kiln_warm_s": round(w, 2), "kiln_warm_fetch_s": round(wf, 2), "warm_ratio": round(w / b, 3), "goal_warm_s": round(b * 1.05 + 1, 2),
                  "bare_runs": sys.argv[6], "cold_runs": sys.argv[7], "warm_runs": sys.argv[8]}))
PY
