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

# The bus as production runs it (#29: `make run`'s broker once let any local process publish a job's
# events and take its build requests): kiln-broker with the production permissions file, passwords of
# this farm's own (random, kept root-only under $STATE/keys), and the operator's credential key, which
# kiln-pool signs each worker's short-lived credential with. Needs BROKER_PORT for `bus`.
secure_bus() {
  if [ ! -f "$STATE/keys/credential.pem" ]; then "$BIN/kiln" keys generate "$STATE/keys/credential.pem" > /dev/null; fi
  "$BIN/kiln" keys show "$STATE/keys/credential.pem" | awk '$1 == "hex" {print $2}' > "$STATE/keys/credential.pub"
  users="$STATE/keys/broker-users.json"
  if [ ! -f "$users" ]; then
    (umask 077 && python3 - cluster/broker-users.production.json "$users" <<'PY'
import json, secrets, sys
users = json.load(open(sys.argv[1]))
for u in users["users"]:
    u["password"] = secrets.token_hex(16)
json.dump(users, open(sys.argv[2], "w"), indent=2)
PY
    )
  fi
}
password() { python3 -c 'import json,sys; print(next(u["password"] for u in json.load(open(sys.argv[1]))["users"] if u["user"] == sys.argv[2]))' "$STATE/keys/broker-users.json" "$1"; }
bus() { echo "kiln://$1:$(password "$1")@127.0.0.1:$BROKER_PORT"; }
broker_security=(--users "$STATE/keys/broker-users.json" --credential-key "$STATE/keys/credential.pub")
