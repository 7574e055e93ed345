#!/usr/bin/env bash
# Runs a command with a nix-daemon available, starting one (sandboxed builds, nixbld users, a static
# /bin/sh in the build sandbox) if none answers, and stopping it afterwards if it was ours.
set -euo pipefail
socket=/nix/var/nix/daemon-socket/socket
started=""
# Kiln's Nix settings, in a configuration directory of their own that the command inherits
# (NIX_CONF_DIR): kiln-worker starts each Nix job's own nix-daemon with them (JobNixDaemon), and the
# shared daemon below uses them too. The operator's /etc/nix/nix.conf is left alone.
# A fresh directory (mktemp: ours alone, never one another user made in /tmp), removed on exit.
conf=""
if [ -z "${NIX_CONF_DIR:-}" ]; then
  conf=$(mktemp -d /tmp/kiln-nix-conf.XXXXXX)
  chmod 755 "$conf"
  printf '%s\n' "sandbox = true" "build-users-group = nixbld" "sandbox-paths = /bin/sh=/bin/busybox" "substituters =" >"$conf/nix.conf"
  export NIX_CONF_DIR="$conf"
fi
if ! timeout 5 nix --extra-experimental-features nix-command store ping --store daemon >/dev/null 2>&1; then
  rm -f "$socket"
  nix-daemon >/tmp/kiln-nix-daemon.log 2>&1 &
  started=$!
  for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
fi
cleanup() {
  if [ -n "$started" ]; then kill "$started" 2>/dev/null || true; wait "$started" 2>/dev/null || true; fi
  if [ -n "$conf" ]; then rm -rf "$conf"; fi
}
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
