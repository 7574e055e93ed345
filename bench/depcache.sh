#!/usr/bin/env bash
# Compiled-dependency cache benchmark (#31 item 3): a project dominated by its dependencies (clap with
# derive and serde_json, 27 crates from Debian's set served as a sparse registry on loopback), built
# by bare `cargo build --release` (crates fetched beforehand, clean target each run), and through the
# farm (kiln-broker, gateway, kiln-fetch, one-shot process workers) three ways per round: a miss (a
# fresh fetch state: the dependency-only step compiles the crates and stores the signed entry), a hit
# (a fresh worker, the same fetch state), and `skip_cache` (no entry used or stored). Same machine,
# same run, alternating. Reports whether the farm's artifact is byte-identical across miss, hit and
# skip (bare cargo builds at other paths, so its bytes differ anyway). With
# KILN_RIPGREP_SOURCE (scripts/fetch-ripgrep.sh), ripgrep 13 the same way (one round).
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
app="$work/depapp"
clap_serde_project "$app" depapp

BP=$(port); GP=$(port)
"$BIN/kiln-broker" --port "$BP" --monitor-port=-1 --log-level warning > "$work/broker.log" 2>&1 & pids+=($!)
wait_for "$work/broker.log" "listening on"
"$BIN/kiln" keys generate "$work/farm.pem" > /dev/null
"$BIN/kiln-gateway" --port "$GP" --data "$work/gw" --broker "kiln://127.0.0.1:$BP" --log-level warning > "$work/gw.log" 2>&1 & pids+=($!)
wait_for "$work/gw.log" "listening on"

# One farm build of archive $1 with a fresh worker and a kiln-fetch on state $2 ($4: skip_cache).
# Prints "total_s (submit → ready) artifact_sha256 dependency_cache_summary".
farm_build() {
  local archive="$1" state="$2" tag="$3" skip="${4:-false}" artifact="$5"
  "$BIN/kiln-fetch" --broker "kiln://127.0.0.1:$BP" --state "$state" --cargo-registry "$INDEX" --allow-unstamped > "$work/f-$tag.log" 2>&1 &
  local fetch=$!
  wait_for "$work/f-$tag.log" "kiln-fetch ready"
  "$BIN/kiln-worker" --broker "kiln://127.0.0.1:$BP" --key "$work/farm.pem" --scratch "$work/scratch-$tag" --build-timeout 7200 \
    > "$work/w-$tag.log" 2>&1 &
  wait_for "$work/w-$tag.log" "ready"
  local total; total=$(python3 - "$GP" "$archive" "$skip" "$work/result-$tag.tar.gz" <<'PY'
import base64, json, sys, time, urllib.request
gw, archive, skip, out = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2], sys.argv[3] == "true", sys.argv[4]
body = {"nonce": "abcd", "source_data": base64.b64encode(open(archive, "rb").read()).decode(), "skip_cache": skip}
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
open(out, "wb").write(urllib.request.urlopen(f"{gw}/build/{job}/result").read())
print(f"{total:.2f}")
PY
)
  kill "$fetch"; wait "$fetch" 2>/dev/null || true
  local sha; sha=$(tar -xzOf "$work/result-$tag.tar.gz" "artifacts/$artifact" | sha256sum | cut -c1-64)
  local summary; summary=$(tar -xzOf "$work/result-$tag.tar.gz" provenance.json | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["predicate"]["buildDefinition"]["internalParameters"].get("dependency_cache","none").split(":")[0].split()[0])')
  echo "$total $sha $summary"
}

# Rounds of one project: bare, miss, hit, skip. Prints the JSON line for case $1.
project() {
  local case=$1 dir=$2 artifact=$3 rounds=$4
  tar czf "$work/$case.tar.gz" -C "$(dirname "$dir")" "$(basename "$dir")"
  bare_home "$work/bare-home-$case"
  (cd "$dir" && CARGO_HOME="$work/bare-home-$case" cargo fetch --locked -q)
  local bare=() miss=() hit=() skip=() shas=() kinds=()
  for r in $(seq "$rounds"); do
    rm -rf "$work/target"
    local s; s=$(date +%s.%N)
    (cd "$dir" && CARGO_HOME="$work/bare-home-$case" CARGO_TARGET_DIR="$work/target" cargo build --release --locked --offline -q)
    bare+=("$(echo "$(date +%s.%N) - $s" | bc)")
    rm -rf "$work/state-$case-$r"
    local t sha kind got
    for kind in miss hit skip; do
      read -r t sha got < <(farm_build "$work/$case.tar.gz" "$work/state-$case-$r" "$case-$kind-$r" "$([ "$kind" = skip ] && echo true || echo false)" "$artifact")
      case $kind in miss) miss+=("$t");; hit) hit+=("$t");; skip) skip+=("$t");; esac
      shas+=("$sha"); kinds+=("$kind=$got")
    done
  done
  python3 - "$case" "${bare[*]}" "${miss[*]}" "${hit[*]}" "${skip[*]}" "${shas[*]}" "${kinds[*]}" <<'PY'
import json, statistics, sys
case = sys.argv[1]
bare, miss, hit, skip = ([float(x) for x in a.split()] for a in sys.argv[2:6])
shas, kinds = sys.argv[6].split(), sys.argv[7].split()
med = statistics.median
for k in kinds:
    want, got = k.split("=")
    assert {"miss": "miss", "hit": "hit", "skip": "skipped (skip_cache)"}[want].startswith(got), f"a {want} build reported {got}"
print(json.dumps({"case": case, "bare_cargo_s": round(med(bare), 2), "kiln_miss_s": round(med(miss), 2), "kiln_hit_s": round(med(hit), 2),
                  "kiln_skip_cache_s": round(med(skip), 2), "hit_ratio": round(med(hit) / med(bare), 3), "goal_hit_ratio": 0.5,
                  "artifact_identical": len(set(shas)) == 1, "artifact_sha256": sorted(set(shas)),
                  "bare_runs": sys.argv[2], "miss_runs": sys.argv[3], "hit_runs": sys.argv[4], "skip_runs": sys.argv[5]}))
PY
}

project dependency_cache_clap_serde "$app" depapp "$ROUNDS"
if [ -n "${KILN_RIPGREP_SOURCE:-}" ]; then
  rg="$work/ripgrep"
  cp -r "$KILN_RIPGREP_SOURCE" "$rg" && rm -rf "$rg/debian" "$rg/.pc" "$rg/Cargo.lock" && sed -i '/^simd-accel = /d' "$rg/Cargo.toml"
  (cd "$rg" && CARGO_HOME="$work/lock-home" cargo generate-lockfile -q)
  project dependency_cache_ripgrep "$rg" rg 1
fi
