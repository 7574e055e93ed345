#!/usr/bin/env bash
# Boots one Kiln worker in a fresh VM (#19 item 2), for kiln-pool's --launch:
#
#   kiln-pool --launch "cluster/vm/launch-vm.sh --image /var/lib/kiln/vm --id {id} --broker {broker}"
#
# Direct kernel boot of the image cluster/vm/build-image.sh made; nothing writable is shared with the
# host (no disk at all: the guest runs from its initramfs in RAM, which vanishes with it). The worker id
# and broker go on the kernel command line; the worker's broker credential (KILN_BROKER_TOKEN, which
# kiln-pool sets per worker) goes through fw_cfg from a file only root can read, removed when the VM
# ends, so it is in no process list and on no shared disk. The guest's only network is qemu's user-mode stack with
# restrict=on: it can reach exactly one address, 10.0.2.100:4222, forwarded to the broker, and nothing
# else on the host or beyond. The VM is destroyed when the worker exits (the guest powers off) or at
# --deadline, whichever comes first.
#
# Options: --image DIR  --id ID  --broker URL (kiln://host:port or nats://host:port)
#          --deadline SECONDS (default 3600)  --mode run|check  --memory MiB (default 2048)
#          --accel auto|kvm|tcg (default auto: KVM when /dev/kvm is usable and KILN_VM_ACCEL is not tcg)
#          --tee none|sev-snp|tdx  --print-command (print the qemu command line and exit)
#          --probe ADDR:PORT[,…] (check mode: the guest tries each address and prints what it reached)
set -euo pipefail
image="" id="" broker="" deadline=3600 mode=run memory=2048 accel=${KILN_VM_ACCEL:-auto} tee=none print=0 probe=""
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=$2; shift 2 ;;
    --id) id=$2; shift 2 ;;
    --broker) broker=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --tee) tee=$2; shift 2 ;;
    --print-command) print=1; shift ;;
    --probe) probe=$2; shift 2 ;;
    *) echo "launch-vm.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
fail() { echo "launch-vm.sh: $*" >&2; exit 2; }
[ -f "$image/vmlinuz" ] && [ -f "$image/initramfs.cpio" ] || fail "--image must name a directory made by build-image.sh"
[[ "$id" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || fail "--id must be 1 to 64 of A-Z a-z 0-9 _ -"
[[ "$deadline" =~ ^[0-9]{1,6}$ ]] && [ "$deadline" -ge 5 ] || fail "--deadline must be 5 to 999999 seconds"
[[ "$memory" =~ ^[0-9]{3,6}$ ]] && [ "$memory" -ge 100 ] || fail "--memory must be 100 to 999999 MiB"
case "$mode" in run|check) ;; *) fail "--mode must be run or check" ;; esac
[[ "$probe" =~ ^([0-9.]+:[0-9]{1,5}(,[0-9.]+:[0-9]{1,5})*)?$ ]] || fail "--probe must be ADDR:PORT[,ADDR:PORT…]"
guest_broker=""
[ "$mode" = run ] && [ -z "$broker" ] && fail "--broker is needed to run a worker"
if [ -n "$broker" ]; then
  [[ "$broker" =~ ^(kiln|nats)://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})$ ]] || fail "--broker must be kiln://host:port or nats://host:port"
  scheme=${BASH_REMATCH[1]} host=${BASH_REMATCH[2]} port=${BASH_REMATCH[3]}
  [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || fail "--broker port out of range"
  guest_broker="$scheme://10.0.2.100:4222"
fi
case "$accel" in
  auto) if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi ;;
  kvm|tcg) ;;
  *) fail "--accel must be auto, kvm or tcg" ;;
esac

cmdline="console=ttyS0 quiet panic=-1 kiln.mode=$mode kiln.worker_id=$id${guest_broker:+ kiln.broker=$guest_broker}${probe:+ kiln.probe=$probe}"
netdev="user,id=n0,restrict=on"
[ -n "$guest_broker" ] && netdev+=",guestfwd=tcp:10.0.2.100:4222-tcp:$host:$port"
machine=q35
cpu=max
tee_args=()
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
qemu=(qemu-system-x86_64 -accel "$accel" -machine "$machine" -cpu "$cpu" -m "$memory" -smp 1
  -nographic -no-reboot -nodefaults -serial stdio
  -kernel "$image/vmlinuz" -initrd "$image/initramfs.cpio" -append "$cmdline"
  -netdev "$netdev" -device virtio-net-pci,netdev=n0,romfile=
  -device virtio-rng-pci "${tee_args[@]}")
secret=""
if [ -n "${KILN_BROKER_TOKEN:-}" ]; then
  secret=$(mktemp -d)
  (umask 077 && printf '%s' "$KILN_BROKER_TOKEN" > "$secret/token")
  qemu+=(-fw_cfg "name=opt/kiln/token,file=$secret/token")
fi
if [ "$print" = 1 ]; then printf '%q ' "${qemu[@]}"; echo; [ -z "$secret" ] || rm -rf "$secret"; exit 0; fi
echo "launch-vm.sh: worker $id in a fresh VM (accel $accel, tee $tee, deadline ${deadline}s)" >&2
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
[ -z "$secret" ] || rm -rf "$secret"
exit "$status"
