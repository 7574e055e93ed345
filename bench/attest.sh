#!/usr/bin/env bash
# Attestation benchmark (issue #3): hashing + manifest + packaging of a 200 MiB artifacts directory by
# Kiln, side by side with `tar czf` + `sha256sum` of the same directory, in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release}
[ -x "$BIN/kiln-bench" ] || { echo "no $BIN/kiln-bench: build it with KILN_BENCH=1 swift build -c release (make bench does)" >&2; exit 1; }
SIZE_MIB=${SIZE_MIB:-200}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
art="$work/artifacts"
mkdir -p "$art"
# Realistic content: real ELF binaries and libraries from this machine, concatenated into 4 artifacts.
per=$((SIZE_MIB / 4))
i=0
for f in $(find /usr/lib/x86_64-linux-gnu /usr/bin -maxdepth 1 -type f -size +200k 2>/dev/null | sort); do
  cat "$f"
done | head -c $((SIZE_MIB * 1024 * 1024)) > "$work/blob" || true   # head closes the pipe early
for n in 0 1 2 3; do
  dd if="$work/blob" of="$art/artifact-$n" bs=1M skip=$((n * per)) count=$per status=none
done
chmod 755 "$art"/artifact-*
rm "$work/blob"
bytes=$(find "$art" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')

# Peer: tar czf then sha256sum, median of 3 (page cache warm for both).
cat "$art"/* > /dev/null
times=()
for r in 1 2 3; do
  s=$(date +%s.%N)
  tar czf "$work/peer.tar.gz" -C "$work" artifacts
  sha256sum "$art"/* > /dev/null
  e=$(date +%s.%N)
  times+=("$(echo "$e - $s" | bc)")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
printf '{"case":"attest+package","tool":"tar czf + sha256sum","bytes":%d,"seconds":%.3f,"mb_per_s":%.1f}\n' \
  "$bytes" "$median" "$(echo "$bytes / $median / 1000000" | bc -l)"
"$BIN/kiln-bench" attest --dir "$art" --output "$work/kiln.tar.gz" --runs 3
ls -l "$work/peer.tar.gz" "$work/kiln.tar.gz" | awk '{print "# " $5 " " $9}'
