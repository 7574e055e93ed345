#!/usr/bin/env bash
# Builds a Kiln worker VM image (#19 item 1) from Debian's packages and this checkout's kiln-worker:
# the cloud kernel (linux-image-cloud-amd64) and an initramfs holding busybox-static, the virtio
# modules, kiln-worker with the shared libraries it links, and cluster/vm/init as PID 1. Toolchains
# are not in the image: launch-vm.sh --toolchain shares them read-only (see docs/vm-workers.md).
#
#   cluster/vm/build-image.sh OUT_DIR [KILN_WORKER]
#
# Reproducible: the same inputs give the same bytes (sorted cpio entries, every mtime 0, root-owned,
# no compression: the kernel unpacks it as is). Prints and writes OUT_DIR/image.json with the SHA-256 of each part.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-image.sh OUT_DIR [KILN_WORKER]}
worker=${2:-$here/../../.build/release/kiln-worker}
[ -x "$worker" ] || { echo "no kiln-worker at $worker (swift build -c release)" >&2; exit 1; }
kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -1)
[ -n "$kernel" ] || { echo "no cloud kernel: apt-get install linux-image-cloud-amd64" >&2; exit 1; }
[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' || { echo "busybox-static is needed" >&2; exit 1; }
release=${kernel#/boot/vmlinuz-}
modules=/lib/modules/$release/kernel
mkdir -p "$out"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,proc,sys,dev,tmp,run,etc,lib/modules,opt/kiln/bin}
cp /bin/busybox "$root/bin/busybox"
for applet in sh mount insmod ip poweroff cat cut echo sleep mkdir nc tr timeout true cp ln switch_root; do ln -s busybox "$root/bin/$applet"; done
# kiln-worker lives under /opt: with a toolchain share the guest's /usr is the toolchain's.
cp "$worker" "$root/opt/kiln/bin/kiln-worker"
# The worker's shared libraries (and the dynamic loader) at the paths it was linked against.
ldd "$worker" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# virtio modules, in dependency order (modules.dep), for the network card and the entropy source;
# qemu_fw_cfg for the broker credential the launch passes outside the kernel command line; fuse and
# virtiofs for the read-only toolchain share.
order="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio-rng qemu_fw_cfg fuse virtiofs"
for m in $order; do
  file=$(find "$modules" -name "$m.ko" | head -1)
  [ -n "$file" ] || { echo "module $m not found under $modules" >&2; exit 1; }
  cp "$file" "$root/lib/modules/$m.ko"
done
echo "$order" > "$root/lib/modules/load-order"
printf 'root:x:0:0::/:/bin/sh\n' > "$root/etc/passwd"
cp "$here/init" "$root/init"
cp "$here/run-worker" "$root/opt/kiln/run-worker"
chmod 755 "$root/init" "$root/opt/kiln/run-worker"

find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$out/initramfs.cpio"
cp "$kernel" "$out/vmlinuz"
sha() { sha256sum "$1" | cut -d' ' -f1; }
# The parts, as the in-toto resource descriptors kiln-pool --vm-image names in worker certificates
# (and so in the provenance of every build signed under one).
cat > "$out/image.json" <<JSON
{"kernel_release": "$release",
 "parts": [{"name": "vmlinuz", "digest": {"sha256": "$(sha "$out/vmlinuz")"}},
           {"name": "initramfs.cpio", "digest": {"sha256": "$(sha "$out/initramfs.cpio")"}},
           {"name": "kiln-worker", "digest": {"sha256": "$(sha "$worker")"}}]}
JSON
cat "$out/image.json"

# The SEV-SNP launch measurement of this image as `launch-vm.sh --tee sev-snp` boots it (#19 item 4):
# the SNP firmware it names (KILN_OVMF_SNP), this kernel and initramfs, its run-mode command line, one
# vCPU of EPYC-v4. Users pin it with `kiln verify --expect-measurement`.
ovmf=${KILN_OVMF_SNP:-/usr/share/ovmf/OVMF.amdsev.fd}
kiln=${KILN_CLI:-$(dirname "$worker")/kiln}
if [ -f "$ovmf" ] && [ -x "$kiln" ]; then
  cmdline=$("$here/launch-vm.sh" --image "$out" --id measure --broker kiln://127.0.0.1:1 --accel kvm --tee sev-snp --print-cmdline)
  "$kiln" measure --firmware "$ovmf" --kernel "$out/vmlinuz" --initrd "$out/initramfs.cpio" --append "$cmdline" --vcpus 1 --json \
    > "$out/measurement.sev-snp.json"
  cat "$out/measurement.sev-snp.json"
else
  rm -f "$out/measurement.sev-snp.json"
  echo "build-image.sh: no SEV-SNP firmware at $ovmf (set KILN_OVMF_SNP to an OVMF AmdSev build): no measurement.sev-snp.json" >&2
fi
