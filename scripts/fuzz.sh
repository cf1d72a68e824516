#!/usr/bin/env bash
# Fuzzes KOS's parsers of untrusted input with libFuzzer (clang-16, ASan, UBSan).
#
#   scripts/fuzz.sh TARGET MINUTES     one target (objects_fuzz, patch_fuzz, selectors_fuzz,
#                                      addresses_fuzz, kubeconfig_fuzz, cni_fuzz,
#                                      http_request_fuzz)
#   scripts/fuzz.sh all MINUTES        each target in turn
#
# Builds the targets in build/fuzz (CMake preset "fuzz"), starts from the seed corpus in
# fuzz/corpus/TARGET and keeps what it finds in build/fuzz/corpus/TARGET. A crash stops the
# run; its input is in build/fuzz/crashes/TARGET (add it to fuzz/corpus/TARGET once fixed:
# ctest replays the corpus on every build). Prints each target's executions and coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
target=$1 minutes=$2
command -v clang++-16 >/dev/null || { echo "fuzz.sh: needs clang-16 and libclang-rt-16-dev (scripts/install-deps.sh)" >&2; exit 1; }
TARGETS=(objects_fuzz patch_fuzz selectors_fuzz addresses_fuzz kubeconfig_fuzz cni_fuzz http_request_fuzz)
[ "$target" = all ] || TARGETS=("$target")
cmake --preset fuzz > /dev/null
cmake --build build/fuzz --target "${TARGETS[@]}"
for t in "${TARGETS[@]}"; do
  mkdir -p "build/fuzz/corpus/$t" "build/fuzz/crashes/$t"
  echo "== $t: $minutes min"
  "build/fuzz/fuzz/$t" -max_total_time=$((minutes * 60)) -print_final_stats=1 -max_len=65536 \
    -artifact_prefix="build/fuzz/crashes/$t/" "build/fuzz/corpus/$t" "fuzz/corpus/$t" 2>&1 |
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==ERROR|SUMMARY|INFO: Running)|cov:' | tail -4
done
