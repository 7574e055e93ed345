#!/usr/bin/env bash
# Host-side cost of hostile builds (#29 items 1 and 2): each project below goes through a real kiln-worker
# (broker, gateway, kiln-fetch on loopback); the worker runs under GNU time, so its peak RSS is the
# kernel's figure, and the host disk it made the farm write is measured around the job. One JSON
# line per case; the bound is 256 MiB of worker RSS whatever a build prints.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/.build/release}
export PATH=/root/.cargo/bin:$HOME/.cargo/bin:$PATH
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }

BP=$(port); GP=$(port)
"$BIN/kiln-broker" --port "$BP" --monitor-port=-1 --log-level warning > "$work/broker.log" 2>&1 & pids+=($!)
wait_for "$work/broker.log" "listening on"
"$BIN/kiln" keys generate "$work/farm.pem" > /dev/null
"$BIN/kiln-gateway" --port "$GP" --data "$work/gw" --broker "kiln://127.0.0.1:$BP" --log-level warning > "$work/gw.log" 2>&1 & pids+=($!)
wait_for "$work/gw.log" "listening on"
"$BIN/kiln-fetch" --broker "kiln://127.0.0.1:$BP" --state "$work/fetch" --allow-unstamped > "$work/fetch.log" 2>&1 & pids+=($!)
wait_for "$work/fetch.log" "kiln-fetch ready"

crate() {  # crate DIR NAME: a package skeleton
  mkdir -p "$1/src"
  printf '[package]\nname = "%s"\nversion = "0.1.0"\nedition = "2021"\n' "$2" > "$1/Cargo.toml"
}

# 1. A proc-macro printing N lines shaped like cargo's compiler-artifact messages.
crate "$work/artifacts" flood
printf '\n[dependencies]\nevilmacro = { path = "evilmacro" }\n' >> "$work/artifacts/Cargo.toml"
echo 'evilmacro::flood!(); fn main() {}' > "$work/artifacts/src/main.rs"
crate "$work/artifacts/evilmacro" evilmacro
printf '\n[lib]\nproc-macro = true\n' >> "$work/artifacts/evilmacro/Cargo.toml"
cat > "$work/artifacts/evilmacro/src/lib.rs" <<RS
use proc_macro::TokenStream;
#[proc_macro]
pub fn flood(_: TokenStream) -> TokenStream {
    let pad = "x".repeat(200);
    for i in 0..${ARTIFACT_LINES:-300000} {
        println!("{{\"reason\":\"compiler-artifact\",\"package_id\":\"path+file:///build/src#flood@0.1.0\",\"target\":{{\"kind\":[\"bin\"],\"name\":\"evil\"}},\"filenames\":[],\"executable\":\"/build/out/fake-{}-{}\"}}", i, pad);
    }
    TokenStream::new()
}
RS
# 2. A build script printing N lines of 200 bytes to stderr (the log the worker ships and keeps).
crate "$work/logflood" logflood
cat > "$work/logflood/build.rs" <<RS
fn main() {
    let line = "y".repeat(200);
    for i in 0..${LOG_LINES:-2000000} { eprintln!("{} {}", i, line); }
    panic!("and fail, so cargo shows the build script's output");
}
RS
echo 'fn main() {}' > "$work/logflood/src/main.rs"
# 3. Six 1 GiB sparse binaries from a linker wrapper.
crate "$work/sparse" sparse
for i in 1 2 3 4 5 6; do printf '\n[[bin]]\nname = "b%d"\npath = "src/main.rs"\n' "$i" >> "$work/sparse/Cargo.toml"; done
echo 'fn main() {}' > "$work/sparse/src/main.rs"
mkdir -p "$work/sparse/.cargo" "$work/sparse/w"
printf '[target.x86_64-unknown-linux-gnu]\nlinker = "/build/src/w/cc"\n' > "$work/sparse/.cargo/config.toml"
cat > "$work/sparse/w/cc" <<'SH'
#!/bin/sh
/usr/bin/cc "$@" || exit $?
prev=
for a in "$@"; do
  if [ "$prev" = -o ]; then case "$a" in */deps/b[0-9]-*) truncate -s 1073741824 "$a" ;; esac; fi
  prev=$a
done
SH
chmod 755 "$work/sparse/w/cc"

# 4. A Nix derivation whose builder writes 2 GB into its build directory (the daemon's, not the sandbox's).
mkdir -p "$work/nixhog"
cat > "$work/nixhog/default.nix" <<NIX
derivation { name = "nixhog-$$"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "head -c 2000000000 /dev/zero > big && ls -l big > \$out" ]; }
NIX

for case in artifacts logflood sparse nixhog; do
  if [ -f "$work/$case/Cargo.toml" ]; then (cd "$work/$case" && cargo generate-lockfile --offline -q); fi
  before=$(df --output=used -B1 "$work" | tail -1)
  # The host disk's peak during the job, not only its end: a daemon's build directory is deleted after.
  ( peak=$before; while :; do u=$(df --output=used -B1 "$work" | tail -1); [ "$u" -gt "$peak" ] && peak=$u && echo "$peak" > "$work/$case.peak"; sleep 0.2; done ) &
  sampler=$!
  /usr/bin/time -f '%M' -o "$work/$case.rss" "$BIN/kiln-worker" --broker "kiln://127.0.0.1:$BP" --key "$work/farm.pem" \
    --scratch "$work/scratch-$case" --disk-mb 256 > "$work/w-$case.log" 2>&1 &
  W=$!
  wait_for "$work/w-$case.log" "ready"
  KILN_GATEWAY="http://127.0.0.1:$GP" "$BIN/kiln" submit "$work/$case" --nonce abcd --follow > "$work/submit-$case.log" 2>&1 || true
  wait "$W" || true
  after=$(df --output=used -B1 "$work" | tail -1)
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  peak=$(cat "$work/$case.peak" 2>/dev/null || echo "$before")
  python3 - "$case" "$(cat "$work/$case.rss")" "$before" "$after" "$work/submit-$case.log" "$peak" <<'PY'
import json, sys
case, rss_kib, before, after, log, peak = sys.argv[1], int(sys.argv[2].split()[-1]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
text = open(log, errors="replace").read().strip().splitlines()
ending = next((l for l in reversed(text) if "failed" in l or "ready" in l or "error" in l), text[-1] if text else "")
print(json.dumps({"case": f"hostile_{case}", "worker_peak_rss_mib": round(rss_kib / 1024, 1), "rss_bound_mib": 256,
                  "host_disk_delta_mib": round((after - before) / 2**20, 1), "host_disk_peak_delta_mib": round((peak - before) / 2**20, 1),
                  "job_ended": ending[:160]}))
PY
done
