#!/usr/bin/env bash
# VM worker benchmark (#19): a hello crate through a fresh-VM worker vs a process worker, same farm
# (kiln-broker with per-worker credentials, gateway, kiln-pool certifying each worker's in-memory key),
# same machine, same run, alternating. Reports launch → ready (kiln_pool_worker_boot_seconds) and
# submit → result downloaded with a ready worker waiting, per kind. The VM runs under KVM when
# /dev/kvm works (KILN_VM_ACCEL=kvm to insist) and TCG otherwise; the accelerator is in the output.
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
