#!/usr/bin/env bash
# Compile time (Release flags, one translation unit, compile only): LibTorch's <torch/torch.h> alone, iat's
# <iat/iat.hpp> alone, a one-file trainer using PGD + UIAT + AutoAttack (benchmarks/compile_time/) header-only
# and in the compiled mode (-DIAT_COMPILED_LIB=1, as iat::compiled passes it), and the compiled mode's library
# source (src/iat_compiled.cpp, compiled once per build), interleaved ROUNDS times so that all see the same
# machine load; prints each time and the ratios of the medians to <torch/torch.h> alone (docs/benchmarks.md,
# "Compile time").
#   benchmarks/compile_time.sh [--torch debian|pypi] [ROUNDS]
# debian (default): Debian's LibTorch 1.13.1 headers; pypi: the PyPI leg's wheel (scripts/torch_pypi.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
torch=debian
if [ "${1:-}" = "--torch" ]; then torch=$2; shift 2; fi
ROUNDS=${1:-3}
CXX=${CXX:-c++}
case "$torch" in
  debian) inc=(-isystem /usr/include/torch/csrc/api/include); abi=1; std=gnu++17 ;;
  pypi)
    source scripts/torch_pypi.sh
    root=$("$IAT_PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
    inc=(-isystem "$root/include" -isystem "$root/include/torch/csrc/api/include")
    abi=$("$IAT_PYTHON" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
    std=gnu++20 ;;  # LibTorch 2.x's headers require C++20 (its CMake target asks for it too)
  *) echo "compile_time.sh: --torch must be debian or pypi, got '$torch'" >&2; exit 2 ;;
esac
flags=("-std=$std" -O3 -DNDEBUG "-D_GLIBCXX_USE_CXX11_ABI=$abi" -Iinclude "${inc[@]}" -c -o /dev/null)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$ROUNDS"); do
  for f in torch_only iat_only trainer trainer_compiled library; do
    case "$f" in
      trainer_compiled) args=(-DIAT_COMPILED_LIB=1 benchmarks/compile_time/trainer.cpp) ;;
      library) args=(-DIAT_COMPILED_LIB=1 src/iat_compiled.cpp) ;;
      *) args=("benchmarks/compile_time/$f.cpp") ;;
    esac
    start=$(date +%s%N)
    "$CXX" "${flags[@]}" "${args[@]}"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    echo "round $r $f $ms ms"
    echo "$f $ms" >> "$out"
  done
done
/usr/bin/python3 - "$out" "$("$CXX" --version | head -1)" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    name, t = line.split()
    times.setdefault(name, []).append(float(t) / 1000)
base = statistics.median(times["torch_only"])
print(f"compiler: {sys.argv[2]}")
for name in ("torch_only", "iat_only", "trainer", "trainer_compiled", "library"):
    m = statistics.median(times[name])
    print(f"{name:16s} median {m:6.1f} s   x{m / base:.2f} of <torch/torch.h> alone")
PY
