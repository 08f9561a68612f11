#!/usr/bin/env bash
# The unit suite under sanitizers, with clang-14 against Debian's LibTorch (which is not instrumented):
#   scripts/sanitize.sh               # ASan + UBSan: every test (tests, examples' script tests), build-asan
#   scripts/sanitize.sh --thread      # TSan: the prefetching loader's tests (iat's own threads), build-tsan
# Any report (memory error, leak, undefined behaviour, data race) fails the test that shows it, and the
# script exits non-zero. Environment: BUILD_DIR, JOBS (default: cores).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=address
case "${1:-}" in
  "" ) ;;
  --thread) mode=thread ;;
  --address) ;;
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
  *) echo "scripts/sanitize.sh: unknown argument '$1' (expected --address or --thread)" >&2; exit 2 ;;
esac

source scripts/deps.sh
iat_install_packages clang-14 libclang-rt-14-dev llvm-14
JOBS=${JOBS:-$(nproc)}
common=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14
        -DIAT_PYTHON=/usr/bin/python3 -DIAT_BUILD_BENCHMARKS=OFF -DIAT_INSTALL=OFF
        -DIAT_WERROR=$([ -n "${CI:-}" ] && echo ON || echo OFF))
supp="$PWD/scripts/sanitizer-suppressions"
# Reports abort the process (a failed test); LibTorch's own one-time allocations are not leaks of iat's.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_odr_violation=0:symbolize=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.txt:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.txt"
export TSAN_OPTIONS="halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.txt"
export OMP_NUM_THREADS=1

if [ "$mode" = address ]; then
  BUILD_DIR=${BUILD_DIR:-build-asan}
  cmake -S . -B "$BUILD_DIR" "${common[@]}" -DIAT_SANITIZE=address,undefined >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS"
  cd "$BUILD_DIR"
  # Everything but [slow] and the consumer builds (other projects configured with the default compiler).
  ctest --output-on-failure -j "$JOBS" -LE 'slow|consumer' --timeout 900
else
  BUILD_DIR=${BUILD_DIR:-build-tsan}
  cmake -S . -B "$BUILD_DIR" "${common[@]}" -DIAT_SANITIZE=thread -DIAT_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS" --target iat_tests_data
  # The loaders: the prefetch worker thread is the one thread iat starts. The distributed tests are not run
  # here: iat's process-group layer starts no thread of its own, and every report TSan gave on them came from
  # inside the uninstrumented LibTorch, Gloo and tensorpipe (docs/security.md, "Sanitizers").
  "$BUILD_DIR/tests/iat_tests_data" "[loader]"
fi
