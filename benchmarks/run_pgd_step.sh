#!/usr/bin/env bash
# PGD-10 on a small CNN (Fashion-MNIST shape, batch 128): iat vs the same computation in Python with
# Debian's python3-torch (same 1.13.1 backend, same BLAS), interleaved ROUNDS times so both see the same
# machine load; prints each run and the ratio of medians (Python time / iat time: > 1 means iat is faster).
#   benchmarks/run_pgd_step.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
ROUNDS=${2:-3}
bin="$BUILD_DIR/benchmarks/bench_pgd_step"
[ -x "$bin" ] || { echo "run_pgd_step.sh: $bin not built (cmake --build $BUILD_DIR --target bench_pgd_step)" >&2; exit 1; }
blas=$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null || echo unknown)
echo "BLAS: $blas"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads 1"
out=$(mktemp)
for r in $(seq "$ROUNDS"); do
  "$bin" --threads 1 | tee -a "$out"
  /usr/bin/python3 benchmarks/pgd_step.py --threads 1 | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = lambda v: sorted(v)[len(v) // 2]
for key in ("attack_ms", "train_step_ms"):
    i = med([r[key] for r in rows if r["impl"] == "iat"])
    p = med([r[key] for r in rows if r["impl"] == "python"])
    print(f"{key}: iat {i:.1f} ms, python {p:.1f} ms, python/iat = {p / i:.2f}")
PY
rm -f "$out"
