#!/usr/bin/env bash
# Runs a command with a nix-daemon available, starting one (sandboxed builds, nixbld users, a static
# /bin/sh in the build sandbox) if none answers, and stopping it afterwards if it was ours.
set -euo pipefail
socket=/nix/var/nix/daemon-socket/socket
started=""
if ! timeout 5 nix --extra-experimental-features nix-command store ping --store daemon >/dev/null 2>&1; then
  rm -f "$socket"
  nix-daemon --option sandbox true --option build-users-group nixbld --option sandbox-paths "/bin/sh=/bin/busybox" \
    --option substituters "" >/tmp/kiln-nix-daemon.log 2>&1 &
  started=$!
  for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
fi
cleanup() { if [ -n "$started" ]; then kill "$started" 2>/dev/null || true; wait "$started" 2>/dev/null || true; fi; }
trap cleanup EXIT
# Run the command as a child and pass SIGTERM/SIGINT on, so stopping this script stops it too.
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
status=0
wait "$child" || status=$?
# A trapped signal interrupts `wait`; wait again for the child to finish its own cleanup.
while kill -0 "$child" 2>/dev/null; do wait "$child" || status=$?; done
exit "$status"
