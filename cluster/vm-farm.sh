#!/usr/bin/env bash
# `make run-vm`: a local farm that builds every job in a fresh VM (#28 item 3), set up as production is:
# the farm key and the operator's credential key generated under $KILN_STATE/keys, a broker users file
# with random passwords and the production permissions, per-worker broker credentials, the pool holding
# the farm key and certifying each VM's in-memory key, and kiln-fetch as the only process with a network
# (requests stamped by the broker, no --allow-unstamped). The worker image is built once and rebuilt
# when kiln-worker changes. Ctrl-C stops everything.
#
# Environment: as cluster/farm.sh (BIN, KILN_STATE, KILN_BROKER_PORT, KILN_BROKER_MONITOR_PORT,
# KILN_GATEWAY_PORT, KILN_POOL_IDLE (default 1), KILN_POOL_MAX (default 2), KILN_POOL_MONITOR_PORT,
# KILN_FETCH_MONITOR_PORT, KILN_WORKER_ARGS (passed into each VM's worker), KILN_FETCH_ARGS), and
# KILN_VM_ACCEL (auto|kvm|tcg; auto boots a probe VM under KVM once and falls back to TCG if it does not
# come up), KILN_VM_TOOLCHAIN (host: this host's toolchains shared read-only; image: the image's own
# dm-verity disk, as a confidential VM uses), KILN_VM_MEMORY (MiB per VM, default 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release}
STATE=${KILN_STATE:-.state}
BROKER_PORT=${KILN_BROKER_PORT:-4222}
BROKER_MONITOR_PORT=${KILN_BROKER_MONITOR_PORT:-8222}
GATEWAY_PORT=${KILN_GATEWAY_PORT:-8080}
POOL_IDLE=${KILN_POOL_IDLE:-1}
POOL_MAX=${KILN_POOL_MAX:-2}
POOL_MONITOR_PORT=${KILN_POOL_MONITOR_PORT:-8223}
FETCH_MONITOR_PORT=${KILN_FETCH_MONITOR_PORT:-8224}
TOOLCHAIN=${KILN_VM_TOOLCHAIN:-host}
MEMORY=${KILN_VM_MEMORY:-2048}
case "$TOOLCHAIN" in host|image) ;; *) echo "KILN_VM_TOOLCHAIN must be host or image" >&2; exit 2 ;; esac
mkdir -p "$STATE/keys" "$STATE/logs" "$STATE/vm"
STATE=$(cd "$STATE" && pwd)
VM=$(pwd)/cluster/vm

source cluster/common.sh

secure_bus

# The worker image: rebuilt when this build's kiln-worker is not the one it holds.
image="$STATE/vm/image-$TOOLCHAIN"
worker_digest=$(sha256sum "$BIN/kiln-worker" | cut -d' ' -f1)
if ! grep -q "$worker_digest" "$image/image.json" 2>/dev/null; then
  echo "building the worker VM image ($TOOLCHAIN toolchain) in $image …"
  rm -rf "$image"
  with=()
  [ "$TOOLCHAIN" = image ] && with=(--with-toolchain)
  cluster/vm/build-image.sh "${with[@]}" "$image" "$BIN/kiln-worker" > "$STATE/logs/build-image.log" 2>&1 \
    || { tail -20 "$STATE/logs/build-image.log" >&2; exit 1; }
fi

# The accelerator: KVM where a guest really boots under it (on a host that is itself a VM, /dev/kvm can
# exist and hang), else TCG — said plainly below. The probe's answer is kept for the next start.
ACCEL=${KILN_VM_ACCEL:-auto}
if [ "$ACCEL" = auto ]; then
  ACCEL=$(cat "$STATE/vm/accel" 2>/dev/null || true)
  if [ -z "$ACCEL" ]; then
    ACCEL=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
      echo "probing KVM (a guest must come up within 30 s) …"
      if timeout 40 "$VM/launch-vm.sh" --image "$image" --id kvmprobe --broker "kiln://127.0.0.1:1" --mode check --accel kvm \
        --deadline 30 --memory 256 --toolchain "$TOOLCHAIN" 2>&1 | grep -q "kiln-vm: init at"; then ACCEL=kvm; fi
    fi
    echo "$ACCEL" > "$STATE/vm/accel"
  fi
fi
case "$ACCEL" in kvm|tcg) ;; *) echo "KILN_VM_ACCEL must be auto, kvm or tcg" >&2; exit 2 ;; esac

"$BIN/kiln-broker" --host 127.0.0.1 --port "$BROKER_PORT" --monitor-port "$BROKER_MONITOR_PORT" "${broker_security[@]}" \
  > "$STATE/logs/broker.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/broker.log" "kiln-broker listening on"

# shellcheck disable=SC2086  # KILN_FETCH_ARGS is a list of flags
"$BIN/kiln-fetch" --broker "$(bus fetch)" --state "$STATE/fetch" --monitor-port "$FETCH_MONITOR_PORT" ${KILN_FETCH_ARGS:-} \
  > "$STATE/logs/fetch.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/fetch.log" "kiln-fetch ready"

"$BIN/kiln-gateway" --host 127.0.0.1 --port "$GATEWAY_PORT" --data "$STATE/gateway" --broker "$(bus gateway)" \
  --public-key "$STATE/keys/farm.pub.pem" > "$STATE/logs/gateway.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/gateway.log" "kiln-gateway listening on"

# Emulated guests take a whole core each: they run at a lower priority than the farm's own processes.
nice=""
[ "$ACCEL" = tcg ] && nice="nice -n 10 "
KILN_WORKER_ARGS=${KILN_WORKER_ARGS:-} "$BIN/kiln-pool" --broker "$(bus pool)" --idle "$POOL_IDLE" --max "$POOL_MAX" \
  --state "$STATE/pool" --monitor-port "$POOL_MONITOR_PORT" --credential-signing-key "$STATE/keys/credential.pem" \
  --farm-key "$STATE/keys/farm.pem" --vm-image "$image/image.json" --boot-timeout 300 \
  --launch "${nice}$VM/launch-vm.sh --image $image --id {id} --broker {broker} --accel $ACCEL --memory $MEMORY --toolchain $TOOLCHAIN" \
  > "$STATE/logs/pool.log" 2>&1 &
pids+=($!)
wait_for "$STATE/logs/pool.log" "started worker"

accel_said="KVM"
[ "$ACCEL" = tcg ] && accel_said="TCG (software emulation: no usable KVM here; builds run many times slower than on KVM)"
cat <<INFO
Kiln is running, one fresh VM per build.
  gateway     http://127.0.0.1:$GATEWAY_PORT
  dashboard   http://127.0.0.1:$GATEWAY_PORT/ui/
  public key  $STATE/keys/farm.pub.pem  (VM workers sign with in-memory keys the pool certifies with it)
  accelerator $accel_said
  VM image    $image ($TOOLCHAIN toolchain)
  logs        $STATE/logs/ (workers: $STATE/pool/workers/)
  metrics     broker http://127.0.0.1:$BROKER_MONITOR_PORT/metrics  gateway http://127.0.0.1:$GATEWAY_PORT/metrics  pool http://127.0.0.1:$POOL_MONITOR_PORT/metrics
              fetch http://127.0.0.1:$FETCH_MONITOR_PORT/metrics

Try it (a zero-dependency crate):
  mkdir -p /tmp/hello/src && printf '[package]\\nname = "hello"\\nversion = "0.1.0"\\nedition = "2021"\\n' > /tmp/hello/Cargo.toml \\
    && echo 'fn main() { println!("hello"); }' > /tmp/hello/src/main.rs
  KILN_GATEWAY=http://127.0.0.1:$GATEWAY_PORT $BIN/kiln submit /tmp/hello --nonce 00112233445566778899aabbccddeeff --follow -o result.tar.gz
  $BIN/kiln verify result.tar.gz --nonce 00112233445566778899aabbccddeeff --key $STATE/keys/farm.pub.pem --allow-tee-none
  (key_trust: farm-certified — the result was signed by a VM's own key, certified by the farm key)
Ctrl-C stops everything.
INFO

# Stop everything as soon as any component dies.
wait -n "${pids[@]}"
echo "a component exited; stopping the farm" >&2
