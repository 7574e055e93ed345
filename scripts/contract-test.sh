#!/usr/bin/env bash
# The API contract (#12 item 5): schemathesis generates requests for every operation in
# docs/openapi.yaml and sends them to a real gateway (with tokens) backed by a real broker and
# pool; it fails on any 5xx, any response that does not match its documented schema, and any
# undocumented status code. The pool's workers fetch repositories from 127.0.0.1 only, so no
# generated repo_url makes the farm reach beyond this machine. One schemathesis worker: with two
# threads, Hypothesis's lambda descriptions parse source concurrently and CPython 3.11's ast
# sometimes fails ("AST constructor recursion depth mismatch"), about one run in eight.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/.build/debug}
VENV=${VENV:-.venv}
EXAMPLES=${CONTRACT_EXAMPLES:-100}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # A worker stopped mid-build can leave its workspace mounted (the pool that would clean up is stopping too).
  awk -v w="$work/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }

BP=$(port); GP=$(port)
"$BIN/kiln-broker" --host 127.0.0.1 --port "$BP" --monitor-port=-1 --log-level warning > "$work/broker.log" 2>&1 & pids+=($!)
wait_for "$work/broker.log" "listening on"
"$BIN/kiln" keys generate "$work/farm.pem" > /dev/null
USER_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
"$BIN/kiln-gateway" --host 127.0.0.1 --port "$GP" --data "$work/gw" --broker "kiln://127.0.0.1:$BP" --public-key "$work/farm.pem" \
  --token "contract:user:$USER_TOKEN" --token "operator:admin:$ADMIN_TOKEN" --max-body $((8 << 20)) --submissions-per-minute 600 \
  --log-level warning > "$work/gw.log" 2>&1 & pids+=($!)
wait_for "$work/gw.log" "listening on"
"$BIN/kiln-fetch" --broker "kiln://127.0.0.1:$BP" --state "$work/fetch" --allow-unstamped --only-allowed-source-hosts \
  --allow-source-host 127.0.0.1 --log-level warning > "$work/fetch.log" 2>&1 & pids+=($!)
wait_for "$work/fetch.log" "kiln-fetch ready"
"$BIN/kiln-pool" --broker "kiln://127.0.0.1:$BP" --idle 1 --max 2 --state "$work/pool" --key "$work/farm.pem" \
  --log-level warning > "$work/pool.log" 2>&1 & pids+=($!)

# One real job for the operations on /build/{id}: it fails at once at source (nothing listens on
# 127.0.0.1:1), so its event stream ends and it has a full status document.
JOB=$(curl -s "http://127.0.0.1:$GP/build" -H "Authorization: Bearer $USER_TOKEN" -H 'Content-Type: application/json' \
  -d '{"nonce":"c0ffee00","repo_url":"http://127.0.0.1:1/none.git"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
for _ in $(seq 600); do
  curl -s "http://127.0.0.1:$GP/build/$JOB" -H "Authorization: Bearer $USER_TOKEN" | grep -q '"status":"error"' && break
  sleep 0.1
done
curl -s "http://127.0.0.1:$GP/build/$JOB" -H "Authorization: Bearer $USER_TOKEN" | grep -q '"status":"error"' || {
  echo "the contract test's job did not fail at source as expected:" >&2
  curl -s "http://127.0.0.1:$GP/build/$JOB" -H "Authorization: Bearer $USER_TOKEN" >&2; tail -20 "$work/pool.log" >&2; exit 1; }
printf '[parameters]\n"path.id" = "%s"\n' "$JOB" > "$work/schemathesis.toml"

# The build feed (GET /builds/events) never ends by design: GatewayBuildFeedTests covers it.
status=0
for who in "$USER_TOKEN" "$ADMIN_TOKEN"; do
  "$VENV/bin/schemathesis" --config-file "$work/schemathesis.toml" run docs/openapi.yaml --url "http://127.0.0.1:$GP" -H "Authorization: Bearer $who" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing --max-examples "$EXAMPLES" --request-timeout 10 --workers 1 \
    --exclude-operation-id buildFeed --suppress-health-check all --no-color || status=$?
done
if grep -qi "fatal\|panic" "$work/gw.log"; then echo "the gateway logged a fatal error:" >&2; cat "$work/gw.log" >&2; status=1; fi
kill -0 "${pids[1]}" 2>/dev/null || { echo "the gateway died during the contract test" >&2; status=1; }
exit $status
