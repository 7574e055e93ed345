#!/usr/bin/env bash
# Boots one Kiln worker in a fresh VM (#19 item 2), for kiln-pool's --launch:
#
#   kiln-pool --launch "cluster/vm/launch-vm.sh --image /var/lib/kiln/vm --id {id} --broker {broker}"
#
# Direct kernel boot of the image cluster/vm/build-image.sh made; nothing writable is shared with the
# host (no disk at all: the guest runs from its initramfs in RAM, which vanishes with it). The worker id
# and broker go through fw_cfg (the kernel command line stays the same for every VM); the worker's broker credential (KILN_BROKER_TOKEN, which
# kiln-pool sets per worker) goes through fw_cfg from a file only root can read, removed when the VM
# ends, so it is in no process list and on no shared disk. The guest's only network is qemu's user-mode stack with
# restrict=on: it can reach exactly one address, 10.0.2.100:4222, forwarded to the broker, and nothing
# else on the host or beyond. The VM is destroyed when the worker exits (the guest powers off) or at
# --deadline, whichever comes first.
#
# Toolchains (--toolchain host|DIR) are shared read-only over virtiofs (tag kiln-toolchain): a
# virtiofsd serves a tree holding usr/ (a Debian /usr: compilers, linker, libc, bwrap, git), rust/ (a
# Rust sysroot) and etc/ (alternatives, ld.so.cache), every part a read-only bind mount in a mount
# namespace of its own, so the host refuses writes whatever the guest's kernel does. `host` assembles
# it from this host's /usr, /etc and Rust sysroot (KILN_RUST_SYSROOT, else `rustc --print sysroot`);
# DIR is an operator's tree of the same shape. A host-shared toolchain is outside the VM's launch
# measurement, so --tee refuses it: a confidential VM uses --toolchain image, the image's own toolchain
# disk (build-image.sh --with-toolchain), verified by dm-verity against the root hash on the measured
# kernel command line.
#
# Options: --image DIR  --id ID  --broker URL (kiln://host:port or nats://host:port)
#          --deadline SECONDS (default 3600)  --mode run|check|panic  --memory MiB (default 2048)
#          (panic: the guest kernel panics on purpose once booted; the launch must then fail)
#          --cpus N (default 1; only with --tee none: a confidential VM's launch measurement in image.json
#          is taken for one vCPU, and every vCPU's initial state is part of it)
#          --accel auto|kvm|tcg (default auto: KVM when /dev/kvm is usable and KILN_VM_ACCEL is not tcg)
#          --tee none|sev-snp|tdx  --print-command (print the qemu command line and exit)
#          --print-cmdline (print the guest kernel's command line and exit: build-image.sh measures it)
#          --probe ADDR:PORT[,…] (check mode: the guest tries each address and prints what it reached)
#          --toolchain image|host|DIR (image: the image's dm-verity toolchain disk; host|DIR: share read-only
#          over virtiofs; without a toolchain the guest can build nothing)
set -euo pipefail
image="" id="" broker="" deadline=3600 mode=run memory=2048 cpus=1 accel=${KILN_VM_ACCEL:-auto} tee=none print=0 probe="" toolchain=""
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=$2; shift 2 ;;
    --id) id=$2; shift 2 ;;
    --broker) broker=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --tee) tee=$2; shift 2 ;;
    --print-command) print=1; shift ;;
    --print-cmdline) print=2; shift ;;
    --probe) probe=$2; shift 2 ;;
    --toolchain) toolchain=$2; shift 2 ;;
    *) echo "launch-vm.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
fail() { echo "launch-vm.sh: $*" >&2; exit 2; }
[ -f "$image/vmlinuz" ] && [ -f "$image/initramfs.cpio" ] || fail "--image must name a directory made by build-image.sh"
[[ "$id" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || fail "--id must be 1 to 64 of A-Z a-z 0-9 _ -"
[[ "$deadline" =~ ^[0-9]{1,6}$ ]] && [ "$deadline" -ge 5 ] || fail "--deadline must be 5 to 999999 seconds"
[[ "$memory" =~ ^[0-9]{3,6}$ ]] && [ "$memory" -ge 100 ] || fail "--memory must be 100 to 999999 MiB"
[[ "$cpus" =~ ^[0-9]{1,3}$ ]] && [ "$cpus" -ge 1 ] && [ "$cpus" -le 256 ] || fail "--cpus must be 1 to 256"
case "$mode" in run|check|panic) ;; *) fail "--mode must be run, check or panic" ;; esac
[[ "$probe" =~ ^([0-9.]+:[0-9]{1,5}(,[0-9.]+:[0-9]{1,5})*)?$ ]] || fail "--probe must be ADDR:PORT[,ADDR:PORT…]"
guest_broker=""
[ "$mode" = run ] && [ -z "$broker" ] && fail "--broker is needed to run a worker"
if [ -n "$broker" ]; then
  [[ "$broker" =~ ^(kiln|nats)://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})$ ]] || fail "--broker must be kiln://host:port or nats://host:port"
  scheme=${BASH_REMATCH[1]} host=${BASH_REMATCH[2]} port=${BASH_REMATCH[3]}
  [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || fail "--broker port out of range"
  guest_broker="$scheme://10.0.2.100:4222"
fi
verity=""
if [ "$toolchain" = image ]; then
  # The image's own toolchain disk (build-image.sh --with-toolchain), checked block by block by
  # dm-verity against the root hash on the (measured) kernel command line.
  [ -f "$image/toolchain.json" ] && [ -f "$image/toolchain.squashfs" ] && [ -f "$image/toolchain.verity" ] \
    || fail "--toolchain image: $image has no toolchain disk (build-image.sh --with-toolchain)"
  tj=$(cat "$image/toolchain.json")
  [[ "$tj" =~ \"data_blocks\":\ ([0-9]{1,12}),\ \"root_hash\":\ \"([0-9a-f]{64})\",\ \"salt\":\ \"([0-9a-f]{64})\" ]] \
    || fail "$image/toolchain.json is not what build-image.sh writes"
  verity="${BASH_REMATCH[1]}:${BASH_REMATCH[2]}:${BASH_REMATCH[3]}"
elif [ -n "$toolchain" ]; then
  [ "$tee" = none ] || fail "--toolchain shares host files the launch measurement does not cover; a confidential VM needs its toolchains in its image"
  [ -x "${KILN_VIRTIOFSD:=/usr/lib/qemu/virtiofsd}" ] || fail "no virtiofsd at $KILN_VIRTIOFSD (qemu-system-common)"
  if [ "$toolchain" = host ]; then
    rust_sysroot=${KILN_RUST_SYSROOT:-$( (rustc --print sysroot || "$HOME/.cargo/bin/rustc" --print sysroot) 2>/dev/null || true)}
    [ -x "$rust_sysroot/bin/cargo" ] || fail "--toolchain host: no Rust sysroot with bin/cargo (set KILN_RUST_SYSROOT)"
  else
    [ -d "$toolchain/usr/bin" ] || fail "--toolchain must be host or a directory holding usr/ (and rust/, etc/)"
  fi
fi
case "$accel" in
  auto) if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi ;;
  kvm|tcg) ;;
  *) fail "--accel must be auto, kvm or tcg" ;;
esac

# The kernel command line is the same for every worker VM (in a confidential VM it is part of the launch
# measurement users pin: build-image.sh publishes it); what differs per VM — its worker id, the broker
# URL the guest dials, its credential — goes through fw_cfg, which the measurement does not cover and
# which nothing in the guest trusts beyond what the broker then checks.
share=""
[ -n "$toolchain" ] && [ "$toolchain" != image ] && share=1
# no_timer_check: under emulation on a busy host the kernel's boot-time test of the timer interrupt
# can see too few ticks and panic ("IO-APIC + timer doesn't work!"; seen under TCG with both host cores
# busy); a VM's timer is the hypervisor's and needs no such test.
cmdline="console=ttyS0 quiet panic=-1 no_timer_check kiln.mode=$mode${probe:+ kiln.probe=$probe}${share:+ kiln.toolchain=1}${verity:+ kiln.verity=$verity}"
netdev="user,id=n0,restrict=on"
# Each guest connection to 10.0.2.100:4222 starts its own relay to the broker, at the moment the guest
# connects (a `tcp:` target would be one connection opened when qemu starts: the broker's handshake
# timer runs out while the guest boots, and a worker could never reconnect).
[ -n "$guest_broker" ] && netdev+=",guestfwd=tcp:10.0.2.100:4222-cmd:socat - TCP:$host:$port"
machine=q35
cpu=max
tee_args=()
[ "$tee" = none ] || [ "$cpus" = 1 ] || fail "--cpus $cpus with --tee $tee: the image's launch measurement is for one vCPU"
case "$tee" in
  none) ;;
  sev-snp)
    # AMD SEV-SNP (needs a host kernel with SNP and qemu ≥ 8.2): memory must be a private memfd backend,
    # the kernel boots through OVMF built for SNP with its hashes measured (kernel-hashes=on), and the
    # launch measurement then covers firmware, kernel, initramfs and this command line.
    [ "$accel" = kvm ] || fail "--tee sev-snp needs KVM"
    machine="q35,confidential-guest-support=sev0,memory-backend=ram1"
    cpu=EPYC-v4
    tee_args=(-object "memory-backend-memfd,id=ram1,size=${memory}M,share=true,prealloc=false"
      -object "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on"
      -bios "${KILN_OVMF_SNP:-/usr/share/ovmf/OVMF.amdsev.fd}") ;;
  tdx)
    [ "$accel" = kvm ] || fail "--tee tdx needs KVM"
    machine="q35,confidential-guest-support=tdx0,kernel-irqchip=split"
    cpu=host
    tee_args=(-object "tdx-guest,id=tdx0" -bios "${KILN_OVMF_TDX:-/usr/share/ovmf/OVMF.tdx.fd}") ;;
  *) fail "--tee must be none, sev-snp or tdx" ;;
esac
qemu=(qemu-system-x86_64 -accel "$accel" -machine "$machine" -cpu "$cpu" -m "$memory" -smp "$cpus"
  -nographic -no-reboot -nodefaults -serial stdio
  -kernel "$image/vmlinuz" -initrd "$image/initramfs.cpio" -append "$cmdline"
  -netdev "$netdev" -device virtio-net-pci,netdev=n0,romfile=
  -device virtio-rng-pci "${tee_args[@]}"
  # A guest kernel panic must not look like a clean end: under -no-reboot the panic's reboot would
  # make qemu exit 0. With pvpanic (loaded first by the guest's init) qemu exits with a failure. A panic
  # before init loads the module still ends as a reboot (exit 0): the pool then sees a worker that never
  # announced itself or a job whose worker fell silent, and the job is retried.
  -device pvpanic-pci -action panic=exit-failure
  -fw_cfg "name=opt/kiln/worker_id,string=$id" -fw_cfg "name=opt/kiln/isolation,string=vm-$accel")
[ -z "$guest_broker" ] || qemu+=(-fw_cfg "name=opt/kiln/broker,string=$guest_broker")
# A development farm's extra worker flags (KILN_WORKER_ARGS), never for a confidential VM: what the host
# says there would change how the measured worker behaves.
if [ -n "${KILN_WORKER_ARGS:-}" ]; then
  [ "$tee" = none ] || fail "KILN_WORKER_ARGS is not passed to a confidential VM (--tee $tee)"
  [[ "$KILN_WORKER_ARGS" =~ ^[A-Za-z0-9_.=:/\ -]{1,1024}$ ]] || fail "KILN_WORKER_ARGS must be flags of letters, digits and _ . = : / - separated by spaces"
  qemu+=(-fw_cfg "name=opt/kiln/worker_args,string=$KILN_WORKER_ARGS")
fi
if [ "$print" = 2 ]; then echo "$cmdline"; exit 0; fi
# A root-only directory of this launch's own (credential file, virtiofs socket), removed at the end.
# Named after the worker, so its leftovers (virtiofsd's socket path) can be told from another VM's.
work=$(umask 077 && mktemp -d -t "kiln-vm-$id.XXXXXX")
sharepid=""
cleanup() { [ -z "$sharepid" ] || kill "$sharepid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
if [ -n "${KILN_BROKER_TOKEN:-}" ]; then
  (umask 077 && printf '%s' "$KILN_BROKER_TOKEN" > "$work/token")
  qemu+=(-fw_cfg "name=opt/kiln/token,file=$work/token")
fi
if [ -n "$verity" ]; then
  for part in squashfs verity; do qemu+=(-drive "file=$image/toolchain.$part,if=virtio,format=raw,readonly=on"); done
fi
if [ -n "$share" ]; then
  # vhost-user needs guest memory qemu can share with virtiofsd.
  qemu+=(-object "memory-backend-memfd,id=mem,size=${memory}M,share=on" -numa node,memdev=mem)
  qemu+=(-chardev "socket,id=tc,path=$work/toolchain.sock" -device vhost-user-fs-pci,chardev=tc,tag=kiln-toolchain)
fi
if [ "$print" = 1 ]; then printf '%q ' "${qemu[@]}"; echo; exit 0; fi
if [ -n "$share" ]; then
  # The shared tree, assembled in a private mount namespace (the host's mount table never sees it):
  # each part bound read-only, then virtiofsd serves it from inside that namespace.
  stage=$work/toolchain
  mkdir "$stage"
  if [ "$toolchain" = host ]; then
    parts="/usr=usr $rust_sysroot=rust /etc/alternatives=etc/alternatives /etc/ld.so.cache=etc/ld.so.cache /etc/ld.so.conf=etc/ld.so.conf /etc/ld.so.conf.d=etc/ld.so.conf.d"
  else
    parts="$toolchain=."
  fi
  # shellcheck disable=SC2016 # expanded by the inner shell
  script='set -e; stage=$1; sock=$2; shift 2
    mount -t tmpfs -o mode=755 kiln-toolchain "$stage"
    for part in "$@"; do
      src=${part%%=*}; dst=$stage/${part#*=}
      if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; : > "$dst"; fi
      mount --bind "$src" "$dst"; mount -o remount,bind,ro "$dst"
    done
    mount -o remount,ro "$stage"
    exec "$KILN_VIRTIOFSD" --socket-path="$sock" -o source="$stage" -o cache=always -o sandbox=namespace -o log_level=warn'
  # shellcheck disable=SC2086 # parts are space-separated on purpose
  KILN_VIRTIOFSD=$KILN_VIRTIOFSD unshare --mount --propagation private -- /bin/sh -c "$script" share "$stage" "$work/toolchain.sock" $parts &
  sharepid=$!
  for _ in $(seq 100); do [ -S "$work/toolchain.sock" ] && break; kill -0 "$sharepid" 2>/dev/null || fail "virtiofsd did not start"; sleep 0.05; done
  [ -S "$work/toolchain.sock" ] || fail "virtiofsd did not open its socket"
fi
echo "launch-vm.sh: worker $id in a fresh VM (accel $accel, tee $tee, toolchain ${toolchain:-none}, deadline ${deadline}s)" >&2
# The VM ends when its worker powers it off; past the deadline it is killed. It leaves no files (the
# guest lives in RAM); the credential file goes with it. A SIGTERM (the pool stopping) is passed on.
unset KILN_BROKER_TOKEN
timeout --signal=KILL "$deadline" "${qemu[@]}" &
vm=$!
trap 'kill -TERM "$vm" 2>/dev/null' TERM INT
status=0
wait "$vm" || status=$?
# A trapped signal interrupts the first wait; the second collects the VM's real end.
kill -0 "$vm" 2>/dev/null && { wait "$vm" || status=$?; }
exit "$status"
