#!/usr/bin/env bash
# Writes kiln-source.json beside the built executables: the git commit they were built from and
# whether the work tree had uncommitted changes. kiln-worker records both in every provenance.
# Usage: scripts/stamp-source.sh BIN_DIR
set -euo pipefail
dir="${1:?usage: stamp-source.sh BIN_DIR}"
cd "$(dirname "$0")/.."
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=false
git diff --quiet HEAD -- 2>/dev/null || dirty=true
printf '{"commit":"%s","dirty":%s}\n' "$commit" "$dirty" > "$dir/kiln-source.json"
