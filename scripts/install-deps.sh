#!/usr/bin/env bash
# Installs the Debian packages Kiln needs, only those missing. Usage: install-deps.sh [run|test|bench]
set -euo pipefail
profile="${1:-test}"
pkgs=(libarchive-dev pkg-config git bubblewrap libssl-dev libsqlite3-dev nix-bin busybox-static python3-venv util-linux curl openssl socat)
# socat: the loopback-to-Unix-socket forwarder inside the sandbox that lets cargo generate a lock file
# from the registry index through the worker's relay (#13), and nothing else.
# A real crate set for the directory-mirror tests (#13): clap and serde_json with their dependencies.
pkgs+=(librust-clap-dev librust-serde-json-dev)
# nats-server: the NATS transport is tested against the real server, alone and clustered (#15).
pkgs+=(nats-server)
# postgresql: the PostgreSQL job store is tested against a real server the tests start themselves (#15).
pkgs+=(postgresql)
# A worker VM per build (#19): qemu, Debian's cloud kernel for the guest, cpio for its initramfs, socat to relay
# each guest connection to the broker, squashfs-tools and cryptsetup-bin (veritysetup) for the image's
# dm-verity toolchain disk, dmsetup for the guest to open it.
pkgs+=(qemu-system-x86 linux-image-cloud-amd64 cpio socat squashfs-tools cryptsetup-bin dmsetup)
# The dashboard (#17) is tested in a real headless Chromium, driven by Selenium through chromedriver.
pkgs+=(chromium chromium-driver)
case "$profile" in
  bench) pkgs+=(libnats-dev nginx) ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
