#!/usr/bin/env bash
# Builds a Kiln worker VM image (#19 item 1) from Debian's packages and this checkout's kiln-worker:
# the cloud kernel (linux-image-cloud-amd64) and an initramfs holding busybox-static, the virtio
# modules, dmsetup, kiln-worker with the shared libraries it links, and cluster/vm/init as PID 1.
#
#   cluster/vm/build-image.sh [--with-toolchain] OUT_DIR [KILN_WORKER]
#
# Toolchains: launch-vm.sh --toolchain host shares this host's read-only over virtiofs, which a TEE's
# launch measurement does not cover. --with-toolchain instead bakes them into the image as a read-only
# disk: toolchain.squashfs (a Debian /usr closure of gcc, binutils, libc, bwrap, util-linux, git, dash,
# plus a Rust sysroot: cargo, rustc, std) and its dm-verity hash tree toolchain.verity, whose root hash
# goes on the guest's kernel command line — measured in a confidential VM, so every block the guest
# reads from that disk is checked against the measured hash. (launch-vm.sh --toolchain image.)
#
# Reproducible: the same inputs give the same bytes (sorted cpio entries, every mtime 0, root-owned,
# no compression: the kernel unpacks it as is; squashfs -reproducible with fixed times; the verity salt
# derived from the data). Prints and writes OUT_DIR/image.json with the SHA-256 of each part.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
with_toolchain=0
[ "${1:-}" = --with-toolchain ] && { with_toolchain=1; shift; }
out=${1:?usage: build-image.sh [--with-toolchain] OUT_DIR [KILN_WORKER]}
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
# Its digest, for the provenance's builder version: hashing 75 MB in a TCG guest took seconds per build.
# It is in the same (measured) initramfs as the binary it names (kiln-worker --known-digests).
printf '%s %s /opt/kiln/bin/kiln-worker\n' "$(sha256sum "$worker" | cut -d' ' -f1)" "$(stat -c %s "$worker")" > "$root/opt/kiln/known-digests"
chmod 644 "$root/opt/kiln/known-digests"
cp /usr/sbin/dmsetup "$root/bin/dmsetup"
# The shared libraries (and the dynamic loader) of the worker and dmsetup, at the paths they were linked against.
{ ldd "$worker"; ldd /usr/sbin/dmsetup; } | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# pvpanic first: from then on a guest kernel panic makes qemu exit with a failure (launch-vm.sh's
# -action panic=exit-failure) instead of the clean exit a reboot under -no-reboot would look like.
# virtio modules, in dependency order (modules.dep), for the network card and the entropy source;
# qemu_fw_cfg for the broker credential the launch passes outside the kernel command line; fuse and
# virtiofs for the read-only toolchain share.
order="pvpanic pvpanic-pci virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio-rng qemu_fw_cfg fuse virtiofs"
# virtio_blk, device mapper with dm-verity, and squashfs for the baked toolchain disk.
order+=" virtio_blk dm-mod dm-bufio reed_solomon dm-verity squashfs"
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
if [ "$with_toolchain" = 1 ]; then
  [ -x /usr/bin/mksquashfs ] && [ -x /usr/sbin/veritysetup ] || { echo "--with-toolchain needs squashfs-tools and cryptsetup-bin" >&2; exit 1; }
  tc=$root.toolchain
  trap 'rm -rf "$root" "$tc"' EXIT
  mkdir -p "$tc/rust/bin" "$tc/rust/lib/rustlib" "$tc/etc"
  # The Debian closure of what a build runs (no recommends), minus documentation; /bin, /lib, /lib64
  # and /sbin are /usr's on this merged-/usr system. Plus the worker's own system libraries.
  packages="gcc gcc-12 cpp cpp-12 binutils libc6-dev bubblewrap util-linux mount dash git coreutils socat"
  closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances $packages | grep -v '^[ <]' | sort -u)
  { for p in $closure; do dpkg -L "$p" 2>/dev/null || true; done
    # (each library by the name it is linked as, often a symlink, and the file that name resolves to)
    ldd "$worker" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do echo "$lib"; readlink -f "$lib"; done
    # Commands update-alternatives made (cc → /etc/alternatives/cc → gcc): in no package's file list.
    find /usr/bin /usr/sbin -maxdepth 1 -lname '/etc/alternatives/*'
  } | grep -vE '^/usr/share/(doc|man|info|locale|lintian|bash-completion)' | sed -E 's#^/(bin|lib|lib64|sbin)/#/usr/\1/#' \
    | grep '^/usr/' | LC_ALL=C sort -u > "$tc.list"
  tar -C / --no-recursion -cf - -T "$tc.list" 2>/dev/null | tar -C "$tc" -xf -
  rm "$tc.list"
  cp -a /etc/alternatives "$tc/etc/alternatives"
  cp /etc/ld.so.cache /etc/ld.so.conf "$tc/etc/"
  cp -a /etc/ld.so.conf.d "$tc/etc/"
  # The Rust sysroot the builds use: cargo, rustc, their libraries and the host target's std.
  sysroot=${KILN_RUST_SYSROOT:-$( (rustc --print sysroot || "$HOME/.cargo/bin/rustc" --print sysroot) 2>/dev/null)}
  [ -x "$sysroot/bin/cargo" ] || { echo "--with-toolchain: no Rust sysroot with bin/cargo (set KILN_RUST_SYSROOT)" >&2; exit 1; }
  cp "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$tc/rust/bin/"
  # The digests of the binaries every provenance names, on the verity-checked disk beside them, at the
  # paths the guest sees them (kiln-worker --known-digests, passed only when the disk verified).
  for b in cargo rustc; do
    printf '%s %s /toolchain/rust/bin/%s\n' "$(sha256sum "$tc/rust/bin/$b" | cut -d' ' -f1)" "$(stat -c %s "$tc/rust/bin/$b")" "$b"
  done > "$tc/kiln-digests"
  chmod 644 "$tc/kiln-digests"
  cp -P "$sysroot"/lib/*.so* "$tc/rust/lib/"
  cp -a "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu" "$tc/rust/lib/rustlib/"
  mksquashfs "$tc" "$out/toolchain.squashfs" -noappend -quiet -comp lz4 -all-root -mkfs-time 0 -all-time 0 -reproducible > /dev/null
  salt=$(sha256sum "$out/toolchain.squashfs" | cut -d' ' -f1)
  rm -f "$out/toolchain.verity"
  roothash=$(veritysetup format "$out/toolchain.squashfs" "$out/toolchain.verity" --no-superblock --salt="$salt" \
    | awk '/^Root hash:/ { print $3 }')
  blocks=$(( $(stat -c %s "$out/toolchain.squashfs") / 4096 ))
  chmod 644 "$out/toolchain.verity"
  printf '{"data_blocks": %s, "root_hash": "%s", "salt": "%s"}\n' "$blocks" "$roothash" "$salt" > "$out/toolchain.json"
else
  rm -f "$out/toolchain.squashfs" "$out/toolchain.verity" "$out/toolchain.json"
fi

# The parts, as the in-toto resource descriptors kiln-pool --vm-image names in worker certificates
# (and so in the provenance of every build signed under one).
cat > "$out/image.json" <<JSON
{"kernel_release": "$release",
 "parts": [{"name": "vmlinuz", "digest": {"sha256": "$(sha "$out/vmlinuz")"}},
           {"name": "initramfs.cpio", "digest": {"sha256": "$(sha "$out/initramfs.cpio")"}},
           {"name": "kiln-worker", "digest": {"sha256": "$(sha "$worker")"}}$(
  [ "$with_toolchain" = 0 ] || printf ',\n           {"name": "toolchain.squashfs", "digest": {"sha256": "%s"}},\n           {"name": "toolchain.verity", "digest": {"sha256": "%s"}}' \
    "$(sha "$out/toolchain.squashfs")" "$(sha "$out/toolchain.verity")")]}
JSON
cat "$out/image.json"

# The SEV-SNP launch measurement of this image as `launch-vm.sh --tee sev-snp` boots it (#19 item 4):
# the SNP firmware it names (KILN_OVMF_SNP), this kernel and initramfs, its run-mode command line, one
# vCPU of EPYC-v4. Users pin it with `kiln verify --expect-measurement`.
ovmf=${KILN_OVMF_SNP:-/usr/share/ovmf/OVMF.amdsev.fd}
kiln=${KILN_CLI:-$(dirname "$worker")/kiln}
if [ -f "$ovmf" ] && [ -x "$kiln" ]; then
  toolchain_args=()
  [ "$with_toolchain" = 0 ] || toolchain_args=(--toolchain image)
  cmdline=$("$here/launch-vm.sh" --image "$out" --id measure --broker kiln://127.0.0.1:1 --accel kvm --tee sev-snp "${toolchain_args[@]}" --print-cmdline)
  "$kiln" measure --firmware "$ovmf" --kernel "$out/vmlinuz" --initrd "$out/initramfs.cpio" --append "$cmdline" --vcpus 1 --json \
    > "$out/measurement.sev-snp.json"
  cat "$out/measurement.sev-snp.json"
else
  rm -f "$out/measurement.sev-snp.json"
  echo "build-image.sh: no SEV-SNP firmware at $ovmf (set KILN_OVMF_SNP to an OVMF AmdSev build): no measurement.sev-snp.json" >&2
fi
