#!/usr/bin/env bash
# `make run`: a local Kiln farm from the release build (a nix-daemon is started for Nix builds if none runs).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-nix-daemon.sh cluster/farm.sh
