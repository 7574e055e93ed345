#!/usr/bin/env bash
# Fetches ripgrep 13 as Debian packages it (`apt-get source rust-ripgrep`, with Debian's patches) into
# DIR and installs the librust-*-dev packages of its dependencies into /usr/share/cargo/registry, the
# crate set the tests serve as a registry. For the opt-in cross-isolation test:
#   KILN_RIPGREP_SOURCE=$(scripts/fetch-ripgrep.sh /var/tmp/ripgrep) swift test --filter ripgrepBuilds
# Debian's rustc/cargo are not installed (the farm uses the toolchain under ~/.cargo/bin).
# Needs root and Debian's archive; prints the source directory.
set -euo pipefail
dir=${1:?usage: fetch-ripgrep.sh DIR}
mkdir -p "$dir"
sources=/etc/apt/sources.list.d/debian.sources
if [ -f "$sources" ] && ! grep -q '^Types: deb deb-src' "$sources"; then
  sed -i 's/^Types: deb$/Types: deb deb-src/' "$sources"
  apt-get update -qq >&2
fi
if ! ls -d "$dir"/rust-ripgrep-13.* >/dev/null 2>&1; then
  (cd "$dir" && apt-get source -qq rust-ripgrep >&2)
fi
packages=$(apt-get build-dep -s rust-ripgrep 2>/dev/null | awk '/^Inst/ {print $2}' | grep -E '^(librust-|libpcre2-dev$)' || true)
[ -z "$packages" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >&2
ls -d "$dir"/rust-ripgrep-13.* | head -1
