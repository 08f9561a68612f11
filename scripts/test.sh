#!/usr/bin/env bash
# Builds iat with its tests, examples and benchmarks and runs the test suite (ctest), on a fresh Debian
# bookworm machine as root or with sudo. Non-zero exit on any failure.
#   scripts/test.sh            # everything but the [slow] tests
#   scripts/test.sh --slow     # the [slow] tests as well
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
werror=OFF
[ -n "${CI:-}" ] && werror=ON

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIAT_WERROR=$werror
cmake --build "$BUILD_DIR" -j "$JOBS"

labels=(-LE slow)
[ "${1:-}" = "--slow" ] && labels=()
cd "$BUILD_DIR"
ctest --output-on-failure -j "$JOBS" "${labels[@]}"
