#!/usr/bin/env bash
# VM worker benchmark (#19): a hello crate through a fresh-VM worker vs a process worker, same farm
# (kiln-broker with per-worker credentials, gateway, kiln-pool certifying each worker's in-memory key),
# same machine, same run, alternating. Reports launch → ready (kiln_pool_worker_boot_seconds) and
# submit → result downloaded with a ready worker waiting, per kind. The VM runs under KVM when
# /dev/kvm works (KILN_VM_ACCEL=kvm to insist) and TCG otherwise; the accelerator is in the output.
# With KILN_RIPGREP_SOURCE (scripts/fetch-ripgrep.sh), also ripgrep 13 (#28): its crates from Debian's
# set served as a registry through kiln-fetch, on a process worker with a cold then a warm farm cache,
# in a fresh VM (warm; RIPGREP_VM_COLD=1 adds a cold one), and by bare `cargo build --release` (crates
# fetched beforehand), same run; the fetch phase's time for each, and whether the VM's `rg` is the
# process worker's bytes. One TCG ripgrep build takes ~35–40 min here. Every ripgrep build compiles all
# of it (--dependency-cache off): bench/depcache.sh measures the compiled-dependency cache.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/.build/release}
export PATH=/root/.cargo/bin:$HOME/.cargo/bin:$PATH
ROUNDS=${ROUNDS:-3}
ACCEL=${KILN_VM_ACCEL:-tcg}
work=$(mktemp -d)
pids=()
pool=""
cleanup() {
  [ -z "$pool" ] || kill -TERM "$pool" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq "${3:-600}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }

cluster/vm/build-image.sh "$work/image" "$BIN/kiln-worker" > /dev/null
"$BIN/kiln" keys generate "$work/cred.pem" > /dev/null
"$BIN/kiln" keys show "$work/cred.pem" | awk '$1 == "hex" { print $2 }' > "$work/cred.pub"
"$BIN/kiln" keys generate "$work/farm.pem" > /dev/null
"$BIN/kiln" keys show "$work/farm.pem" | awk '$1 == "hex" { print $2 }' > "$work/farm.pub"
BP=$(port); GP=$(port)
"$BIN/kiln-broker" --port "$BP" --monitor-port=-1 --users cluster/broker-users.production.json --credential-key "$work/cred.pub" \
  --log-level warning > "$work/broker.log" 2>&1 & pids+=($!)
wait_for "$work/broker.log" "listening on"
"$BIN/kiln-gateway" --port "$GP" --data "$work/gw" --broker "kiln://gateway:change-me-gateway@127.0.0.1:$BP" \
  --public-key "$work/farm.pub" --log-level warning > "$work/gw.log" 2>&1 & pids+=($!)
wait_for "$work/gw.log" "listening on"
mkdir -p "$work/hello/src"
printf '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n' > "$work/hello/Cargo.toml"
echo 'fn main() { println!("hello"); }' > "$work/hello/src/main.rs"

# One round: a pool of one worker of `kind`, its boot time, then one hello build with it ready.
round() {
  local kind=$1 r=$2 launch
  if [ "$kind" = vm ]; then
    launch="cluster/vm/launch-vm.sh --image $work/image --id {id} --broker {broker} --accel $ACCEL --deadline 900 --toolchain host"
  else
    launch="$BIN/kiln-worker --broker {broker} --worker-id {id} --scratch {scratch} --certified-key"
  fi
  local mp; mp=$(port)
  "$BIN/kiln-pool" --broker "kiln://pool:change-me-pool@127.0.0.1:$BP" --idle 1 --max 1 --state "$work/pool-$kind-$r" \
    --credential-signing-key "$work/cred.pem" --farm-key "$work/farm.pem" --vm-image "$work/image/image.json" \
    --monitor-port "$mp" --launch "$launch" --log-level warning > "$work/pool-$kind-$r.log" 2>&1 &
  pool=$!
  for _ in $(seq 1200); do [ "$(metric "$mp" kiln_pool_ready_workers | cut -d. -f1)" = 1 ] && break; sleep 0.1; done
  local boot; boot=$(metric "$mp" kiln_pool_worker_boot_seconds_sum)
  local s; s=$(date +%s.%N)
  KILN_GATEWAY="http://127.0.0.1:$GP" "$BIN/kiln" submit "$work/hello" --nonce abcd --follow -o "$work/result-$kind-$r.tar.gz" \
    > "$work/submit-$kind-$r.log"
  local took; took=$(echo "$(date +%s.%N) - $s" | bc)
  "$BIN/kiln" verify "$work/result-$kind-$r.tar.gz" --nonce abcd --key "$work/farm.pub" --allow-tee-none > /dev/null
  # Where the job's time went (#31 item 2), to stderr: the JSON line on stdout is this case's result.
  python3 bench/job_breakdown.py "http://127.0.0.1:$GP" "hello_breakdown_$kind" "$(awk '$1 == "job" { print $2; exit }' "$work/submit-$kind-$r.log")" >&2
  kill -TERM "$pool"; wait "$pool" 2>/dev/null || true; pool=""
  echo "$boot $took"
}
if [ -n "${KILN_RIPGREP_SOURCE:-}" ]; then
  RP=$(port)
  mkdir -p "$work/registry"
  python3 -u -m http.server "$RP" --bind 127.0.0.1 --directory "$work/registry" > "$work/registry.log" 2>&1 & pids+=($!)
  python3 bench/debian_registry.py "$work/registry" "http://127.0.0.1:$RP/dl"
  INDEX="sparse+http://127.0.0.1:$RP/index/"
  rg="$work/ripgrep"
  # As the cross-isolation test: no upstream lock (crates.io's versions), no simd-accel (not packaged).
  cp -r "$KILN_RIPGREP_SOURCE" "$rg" && rm -rf "$rg/debian" "$rg/.pc" "$rg/Cargo.lock" && sed -i '/^simd-accel = /d' "$rg/Cargo.toml"
  fetch=""
  start_fetch() {  # a kiln-fetch on state $1 (kept across restarts: the farm cache)
    [ -z "$fetch" ] || { kill -TERM "$fetch"; wait "$fetch" 2>/dev/null || true; }
    "$BIN/kiln-fetch" --broker "kiln://fetch:change-me-fetch@127.0.0.1:$BP" --state "$1" --cargo-registry "$INDEX" \
      > "$work/fetch-$2.log" 2>&1 &
    fetch=$!
    wait_for "$work/fetch-$2.log" "kiln-fetch ready"
  }
  # One ripgrep build on a fresh pool of one `kind` worker; prints "total_s fetch_s rg_sha256".
  rg_round() {
    local kind=$1 tag=$2 launch mp
    if [ "$kind" = vm ]; then
      launch="cluster/vm/launch-vm.sh --image $work/image --id {id} --broker {broker} --accel $ACCEL --deadline 21600 --toolchain host --memory 8192"
    else
      launch="$BIN/kiln-worker --broker {broker} --worker-id {id} --scratch {scratch} --certified-key --build-timeout 7200 --dependency-cache off"
    fi
    mp=$(port)
    KILN_WORKER_ARGS="--build-timeout 21000 --dependency-cache off" "$BIN/kiln-pool" --broker "kiln://pool:change-me-pool@127.0.0.1:$BP" --idle 1 --max 1 \
      --state "$work/pool-rg-$tag" --credential-signing-key "$work/cred.pem" --farm-key "$work/farm.pem" --vm-image "$work/image/image.json" \
      --monitor-port "$mp" --launch "$launch" --boot-timeout 600 --log-level warning > "$work/pool-rg-$tag.log" 2>&1 &
    pool=$!
    for _ in $(seq 6000); do [ "$(metric "$mp" kiln_pool_ready_workers | cut -d. -f1)" = 1 ] && break; sleep 0.1; done
    local s; s=$(date +%s.%N)
    KILN_GATEWAY="http://127.0.0.1:$GP" "$BIN/kiln" submit "$rg" --nonce abcd --follow -o "$work/rg-$tag.tar.gz" > "$work/submit-rg-$tag.log"
    local took; took=$(echo "$(date +%s.%N) - $s" | bc)
    "$BIN/kiln" verify "$work/rg-$tag.tar.gz" --nonce abcd --key "$work/farm.pub" --allow-tee-none > /dev/null
    [ -f "$rg/Cargo.lock" ] || tar -xzOf "$work/rg-$tag.tar.gz" build-config/Cargo.lock > "$rg/Cargo.lock"
    local job; job=$(awk '$1 == "job" { print $2; exit }' "$work/submit-rg-$tag.log")
    local fetch_ms; fetch_ms=$(python3 bench/job_breakdown.py "http://127.0.0.1:$GP" "ripgrep_$tag" "$job" | tee -a /dev/stderr \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["median_ms"]["fetch"])')
    kill -TERM "$pool"; wait "$pool" 2>/dev/null || true; pool=""
    echo "$took $(echo "$fetch_ms / 1000" | bc -l) $(tar -xzOf "$work/rg-$tag.tar.gz" artifacts/rg | sha256sum | cut -c1-64)"
  }
  start_fetch "$work/fetch-state" cold
  read -r pc_t pc_f pc_rg < <(rg_round process process-cold)   # also resolves the lock every later build uses
  start_fetch "$work/fetch-state" warm
  read -r pw_t pw_f pw_rg < <(rg_round process process-warm)
  read -r vw_t vw_f vw_rg < <(rg_round vm vm-warm)
  vc_t=0; vc_f=0; vc_rg=-
  if [ "${RIPGREP_VM_COLD:-0}" = 1 ]; then
    start_fetch "$work/fetch-state-vm-cold" vm-cold
    read -r vc_t vc_f vc_rg < <(rg_round vm vm-cold)
  fi
  # Bare cargo: the same source and lock, crates fetched from the same registry beforehand (not timed).
  mkdir -p "$work/bare-home"
  printf '[source.crates-io]\nreplace-with = "mirror"\n[source.mirror]\nregistry = "%s"\n' "$INDEX" > "$work/bare-home/config.toml"
  cp -r "$rg" "$work/rg-bare"
  (cd "$work/rg-bare" && CARGO_HOME="$work/bare-home" cargo fetch --locked -q)
  s=$(date +%s.%N)
  (cd "$work/rg-bare" && CARGO_HOME="$work/bare-home" cargo build --release --locked --offline -q)
  bare=$(echo "$(date +%s.%N) - $s" | bc)
  python3 - "$ACCEL" "$pc_t" "$pc_f" "$pw_t" "$pw_f" "$vw_t" "$vw_f" "$vc_t" "$vc_f" "$bare" "$pc_rg" "$pw_rg" "$vw_rg" "$vc_rg" <<'PY'
import json, sys
accel = sys.argv[1]
pc_t, pc_f, pw_t, pw_f, vw_t, vw_f, vc_t, vc_f, bare = map(float, sys.argv[2:11])
pc_rg, pw_rg, vw_rg, vc_rg = sys.argv[11:15]
row = {"case": "ripgrep_vm_vs_process_vs_bare", "accel": accel, "vm_vcpus": 1,
       "process_cold_s": round(pc_t, 1), "process_cold_fetch_s": round(pc_f, 2),
       "process_warm_s": round(pw_t, 1), "process_warm_fetch_s": round(pw_f, 2),
       "vm_warm_s": round(vw_t, 1), "vm_warm_fetch_s": round(vw_f, 2), "bare_cargo_s": round(bare, 1),
       "process_ratio": round(pw_t / bare, 2), "vm_ratio": round(vw_t / bare, 2),
       # ripgrep's rg is not always the same bytes even on one kind of worker (unicode-linebreak's
       # randomly seeded table; docs/vm-workers.md): the VM's counts as identical when it matches either.
       "rg_identical_process_vm": vw_rg in (pc_rg, pw_rg), "rg_identical_process_runs": pc_rg == pw_rg, "rg_sha256": [pc_rg, pw_rg, vw_rg]}
if vc_t:
    row.update({"vm_cold_s": round(vc_t, 1), "vm_cold_fetch_s": round(vc_f, 2), "rg_identical_vm_cold": vc_rg in (pc_rg, pw_rg)})
print(json.dumps(row))
PY
  [ -z "$fetch" ] || { kill -TERM "$fetch"; wait "$fetch" 2>/dev/null || true; }
  [ "${RIPGREP_ONLY:-0}" = 1 ] && exit 0
fi

pb=(); ph=(); vb=(); vh=()
for r in $(seq "$ROUNDS"); do
  read -r b h < <(round process "$r"); pb+=("$b"); ph+=("$h")
  read -r b h < <(round vm "$r"); vb+=("$b"); vh+=("$h")
done
med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
python3 - "$ACCEL" "$(med "${pb[@]}")" "$(med "${ph[@]}")" "$(med "${vb[@]}")" "$(med "${vh[@]}")" "${vb[*]}" "${vh[*]}" <<'PY'
import json, sys
accel, pb, ph, vb, vh = sys.argv[1], *map(float, sys.argv[2:6])
print(json.dumps({"case": "vm_vs_process_worker", "accel": accel, "process_boot_to_ready_s": round(pb, 2),
                  "vm_boot_to_ready_s": round(vb, 2), "process_hello_s": round(ph, 2), "vm_hello_s": round(vh, 2),
                  "vm_hello_ratio": round(vh / ph, 2), "vm_boot_runs": sys.argv[6], "vm_hello_runs": sys.argv[7]}))
PY
