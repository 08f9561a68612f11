#!/usr/bin/env bash
# Builds iat's libFuzzer targets (fuzz/, clang-14 with -fsanitize=fuzzer,address,undefined, against Debian's
# LibTorch), writes their seed corpora with the tests' own writers, and runs each target for a while.
#   scripts/fuzz.sh                     # every target for 60 s (what CI runs)
#   scripts/fuzz.sh --seconds 600       # the long runs recorded in docs/security.md
#   scripts/fuzz.sh --seconds 30 npz    # some targets only
# Environment: BUILD_DIR (default build-fuzz), JOBS (parallel targets and build jobs; default: cores).
# A finding (crash, sanitizer report, leak, an error that does not name the file, an allocation above
# 1 GiB, an input running longer than 20 s) stops that target; its input is saved as
# BUILD_DIR/findings/<target>-crash-* and the script exits 1. The summary goes to BUILD_DIR/fuzz-summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift ;;
    --seconds=*) seconds=${1#--seconds=} ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "scripts/fuzz.sh: unknown option '$1' (expected --seconds N, target names)" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
case "$seconds" in ''|*[!0-9]*) echo "scripts/fuzz.sh: --seconds must be a whole number, got '$seconds'" >&2; exit 2 ;; esac

source scripts/deps.sh
iat_install_packages clang-14 libclang-rt-14-dev llvm-14

BUILD_DIR=${BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
  -DCMAKE_C_COMPILER=clang-14 -DIAT_FUZZ=ON -DIAT_BUILD_TESTS=OFF -DIAT_BUILD_EXAMPLES=OFF \
  -DIAT_BUILD_BENCHMARKS=OFF -DIAT_INSTALL=OFF -DIAT_WERROR=$([ -n "${CI:-}" ] && echo ON || echo OFF) >/dev/null
all=$(sed -n 's/^set(IAT_FUZZ_TARGETS \(.*\))$/\1/p' fuzz/CMakeLists.txt)
grep -q 'IAT_WITH_LIBZIP:BOOL=ON' "$BUILD_DIR/CMakeCache.txt" && all="$all npz"
[ ${#targets[@]} -eq 0 ] && read -r -a targets <<<"$all"
for t in "${targets[@]}"; do
  [[ " $all " == *" $t "* ]] || { echo "scripts/fuzz.sh: no fuzz target '$t' (targets: $all)" >&2; exit 2; }
done
cmake --build "$BUILD_DIR" -j "$JOBS" --target iat_fuzz_make_seeds "${targets[@]/#/iat_fuzz_}"

seeds="$BUILD_DIR/seeds"
rm -rf "$seeds"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/sanitizer-suppressions/lsan.txt:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
python_arg=()
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null && python_arg=(/usr/bin/python3)
"$BUILD_DIR/fuzz/iat_fuzz_make_seeds" "$seeds" "${python_arg[@]}"
mkdir -p "$BUILD_DIR/findings" "$BUILD_DIR/logs"

run_one() {
  local t=$1 corpus="$BUILD_DIR/corpus/$1"
  mkdir -p "$corpus"
  # One thread for LibTorch; inputs up to 64 KiB; 1 GiB for one allocation, 2.5 GiB in all.
  OMP_NUM_THREADS=1 "$BUILD_DIR/fuzz/iat_fuzz_$t" "$corpus" "$seeds/$t" -max_total_time="$seconds" \
    -max_len=65536 -timeout=20 -rss_limit_mb=2560 -malloc_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$BUILD_DIR/findings/$t-" >"$BUILD_DIR/logs/$t.log" 2>&1
}

summary="$BUILD_DIR/fuzz-summary.txt"
echo "iat fuzz run $(date -u +%Y-%m-%dT%H:%MZ), $seconds s per target, $(nproc) cores, ${JOBS} at a time" >"$summary"
failed=0
pids=()
names=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  names+=("$t")
  if [ ${#pids[@]} -ge "$JOBS" ]; then
    if ! wait "${pids[0]}"; then failed=1; echo "FINDING in ${names[0]}: see $BUILD_DIR/logs/${names[0]}.log" | tee -a "$summary"; fi
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then failed=1; echo "FINDING in ${names[$i]}: see $BUILD_DIR/logs/${names[$i]}.log" | tee -a "$summary"; fi
done
for t in "${targets[@]}"; do
  log="$BUILD_DIR/logs/$t.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  files=$(find "$BUILD_DIR/corpus/$t" -type f | wc -l)
  printf '%-18s %10s inputs run, coverage %6s edges, corpus %5s files\n' "$t" "${runs:-?}" "${cov:-?}" "$files" | tee -a "$summary"
done
[ "$failed" = 0 ] && echo "fuzz: no findings" | tee -a "$summary"
exit "$failed"
