# Sourced by farm.sh and scale-out.sh (needs BIN and STATE): the farm's signing key and its public half,
# the processes a script starts (`pids+=($!)`) stopped in reverse order on exit, and waiting for a log line.
# A script that must stop more than its own children redefines `stop_extra`.
mkdir -p "$STATE/keys" "$STATE/logs"
if [ ! -f "$STATE/keys/farm.pem" ]; then "$BIN/kiln" keys generate "$STATE/keys/farm.pem" > /dev/null; fi
"$BIN/kiln" keys show "$STATE/keys/farm.pem" | sed -n '/BEGIN PUBLIC KEY/,$p' > "$STATE/keys/farm.pub.pem"

pids=()
stop_extra() { :; }
cleanup() {
  trap - EXIT INT TERM
  for (( i=${#pids[@]}-1; i>=0; i-- )); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  stop_extra
}
trap cleanup EXIT INT TERM

wait_for() {  # file pattern [tries of 50 ms, default 300]
  for _ in $(seq "${3:-300}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1" >&2; tail -20 "$1" >&2; return 1
}
