#!/usr/bin/env bash
# Worker benchmark (issue #4): a zero-dependency crate that takes ~20 s to compile, built by bare
# `cargo build --release` and through kiln-worker (fetch from the upload, sandbox, package, attest,
# upload through broker + gateway), alternating, same machine, same run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/.build/release}
export PATH=/root/.cargo/bin:$HOME/.cargo/bin:$PATH
ROUNDS=${ROUNDS:-3}
FUNCS=${FUNCS:-5000}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }

mkdir -p "$work/slowcrate/src"
printf '[package]\nname = "slowcrate"\nversion = "0.1.0"\nedition = "2021"\n' > "$work/slowcrate/Cargo.toml"
python3 bench/gen_slow_crate.py "$FUNCS" > "$work/slowcrate/src/main.rs"
(cd "$work/slowcrate" && cargo generate-lockfile --offline -q)

BP=$(port); GP=$(port)
"$BIN/kiln-broker" --port "$BP" --monitor-port=-1 --log-level warning > "$work/broker.log" 2>&1 & pids+=($!)
wait_for "$work/broker.log" "listening on"
"$BIN/kiln" keys generate "$work/farm.pem" > /dev/null
"$BIN/kiln-gateway" --port "$GP" --data "$work/gw" --broker "kiln://127.0.0.1:$BP" --log-level warning > "$work/gw.log" 2>&1 & pids+=($!)
wait_for "$work/gw.log" "listening on"

bare=(); kiln=()
for r in $(seq "$ROUNDS"); do
  rm -rf "$work/target"
  s=$(date +%s.%N)
  (cd "$work/slowcrate" && CARGO_TARGET_DIR="$work/target" cargo build --release --locked --offline -q)
  bare+=("$(echo "$(date +%s.%N) - $s" | bc)")

  "$BIN/kiln-worker" --broker "kiln://127.0.0.1:$BP" --key "$work/farm.pem" --scratch "$work/scratch-$r" > "$work/w$r.log" 2>&1 &
  wait_for "$work/w$r.log" "ready"
  s=$(date +%s.%N)
  KILN_GATEWAY="http://127.0.0.1:$GP" "$BIN/kiln" submit "$work/slowcrate" --nonce abcd --follow > "$work/submit$r.log"
  kiln+=("$(echo "$(date +%s.%N) - $s" | bc)")
done
med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
B=$(med "${bare[@]}"); K=$(med "${kiln[@]}")
python3 - "$B" "$K" "${bare[*]}" "${kiln[*]}" <<'PY'
import json, sys
b, k = float(sys.argv[1]), float(sys.argv[2])
print(json.dumps({"case": "worker_vs_bare_cargo", "bare_cargo_s": round(b, 2), "kiln_worker_s": round(k, 2), "ratio": round(k / b, 3),
                  "overhead_s": round(k - b, 2), "goal_s": round(b * 1.05 + 1, 2), "bare_runs": sys.argv[3], "kiln_runs": sys.argv[4]}))
PY
