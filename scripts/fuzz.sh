#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer (-sanitize=fuzzer, into .build-fuzz) and runs each for
# FUZZ_SECONDS (default 60) on its corpus in fuzz/corpus/<target> (new finds are added there).
# Prints each target's executions; exits non-zero if a target crashes (the reproducer is written
# to fuzz/crashes/<target>/). CI runs it briefly: FUZZ_SECONDS=10.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
targets=(FuzzBusFrames FuzzGatewayMessages FuzzSubmissionBodies)
# ASan + libFuzzer's coverage instrumentation; libFuzzer's driver linked without its own main, which
# the target's Swift main hands control to (see fuzz/KilnFuzzSupport/FuzzDriver.swift).
runtime=$(dirname "$(readlink -f "$(command -v swiftc)")")/../lib/swift/clang/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a
for t in "${targets[@]}"; do
  swift build -c release --build-path .build-fuzz --product "$t" -Xcc -DKILN_FUZZ \
    -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
    -Xlinker "$runtime" -Xlinker -lstdc++ > /tmp/kiln-fuzz-build.log 2>&1 || { tail -30 /tmp/kiln-fuzz-build.log; exit 1; }
done
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/crashes/$t"
  log=$(mktemp)
  if ! ".build-fuzz/release/$t" "fuzz/corpus/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="fuzz/crashes/$t/" -print_final_stats=1 > "$log" 2>&1; then
    echo "$t: CRASH (reproducer in fuzz/crashes/$t/)"; tail -40 "$log"; status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  echo "$t: $runs executions in ${seconds}s, $cov, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs"
  rm -f "$log"
  # Keep the committed corpus small: only inputs that add coverage survive.
  merged=$(mktemp -d)
  ".build-fuzz/release/$t" -merge=1 "$merged" "fuzz/corpus/$t" > /dev/null 2>&1 && rm -rf "fuzz/corpus/$t" && mv "$merged" "fuzz/corpus/$t"
done
exit $status
