#!/usr/bin/env bash
# Builds iat with its tests, examples and benchmarks and runs the test suite (ctest), on a fresh Debian
# bookworm machine as root or with sudo. Non-zero exit on any failure.
#   scripts/test.sh                  # Debian's LibTorch 1.13.1 (CPU), everything but the [slow] tests
#   scripts/test.sh --torch pypi     # the pinned PyPI torch 2.x wheel's LibTorch (CUDA-enabled; runs on the CPU)
#   scripts/test.sh --slow           # the [slow] tests as well (either leg)
# Environment: BUILD_DIR (default build, or build-pypi for --torch pypi), JOBS (default: number of cores),
# CI (set: warnings are errors), IAT_VENV (the PyPI leg's virtual environment, see scripts/torch_pypi.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

torch=debian
slow=0
while [ $# -gt 0 ]; do
  case "$1" in
    --slow) slow=1 ;;
    --torch) torch=${2:-}; shift ;;
    --torch=*) torch=${1#--torch=} ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "scripts/test.sh: unknown argument '$1' (expected --slow, --torch debian|pypi)" >&2; exit 2 ;;
  esac
  shift
done

source scripts/deps.sh
cmake_args=()
case "$torch" in
  debian)
    BUILD_DIR=${BUILD_DIR:-build}
    cmake_args+=(-DIAT_PYTHON=/usr/bin/python3)
    ;;
  pypi)
    BUILD_DIR=${BUILD_DIR:-build-pypi}
    source scripts/torch_pypi.sh
    cmake_args+=("-DCMAKE_PREFIX_PATH=$IAT_TORCH_CMAKE" "-DIAT_PYTHON=$IAT_PYTHON")
    # The wheel's TorchConfig looks for the CUDA toolkit (headers, nvcc) at configure time.
    [ -x /usr/local/cuda/bin/nvcc ] && cmake_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
    ;;
  *) echo "scripts/test.sh: --torch must be debian or pypi, got '$torch'" >&2; exit 2 ;;
esac

JOBS=${JOBS:-$(nproc)}
werror=OFF
[ -n "${CI:-}" ] && werror=ON

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIAT_WERROR=$werror "${cmake_args[@]}"
cmake --build "$BUILD_DIR" -j "$JOBS"

labels=(-LE slow)
[ "$slow" = 1 ] && labels=()
cd "$BUILD_DIR"
ctest --output-on-failure -j "$JOBS" "${labels[@]}"
