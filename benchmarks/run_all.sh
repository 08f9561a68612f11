#!/usr/bin/env bash
# Every side-by-side comparison of benchmarks/ at a small size, one after the other on this machine, and one
# table of ratios at the end: iat against its peers (the same computation in Python, torchattacks, the
# reference AutoAttack) and each training method against PGD-AT. Ratios, not times: each pair runs in the
# same round, so machine load shows in both. A ratio below 1 means iat (or the method) takes less time.
#
#   benchmarks/run_all.sh [--torch debian|pypi] [BUILD_DIR]
#   AUTOATTACK_REF=/path/to/auto-attack benchmarks/run_all.sh      # adds iat-eval vs the reference
#
# debian (default): BUILD_DIR build, Debian's LibTorch and python3-torch; pypi: BUILD_DIR build-pypi and the
# PyPI leg's environment (scripts/torch_pypi.sh). BUILD_DIR is configured the way scripts/test.sh does
# when it is not there yet, and the benchmark targets are built. Environment: AUTOATTACK_REF (a
# fra31/auto-attack checkout; without one that row is left out, with a note), SKIP (names to leave out:
# pgd models step-cost autoattack data-parallel), WORK_DIR (logs; default a temporary folder, kept).
# Took 3 minutes with AUTOATTACK_REF on the 2-core Debian VM (2026-12-04). The full-size runs behind
# docs/benchmarks.md are the single scripts with their defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
torch=debian
if [ "${1:-}" = "--torch" ]; then torch=${2:?--torch needs debian or pypi}; shift 2; fi
case "$torch" in
  debian)
    BUILD_DIR=${1:-build}
    PYTHON=/usr/bin/python3
    cmake_args=(-DIAT_PYTHON=/usr/bin/python3)
    ;;
  pypi)
    BUILD_DIR=${1:-build-pypi}
    source scripts/torch_pypi.sh
    PYTHON=$IAT_PYTHON
    cmake_args=("-DCMAKE_PREFIX_PATH=$IAT_TORCH_CMAKE" "-DIAT_PYTHON=$IAT_PYTHON")
    [ -x /usr/local/cuda/bin/nvcc ] && cmake_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
    ;;
  *) echo "run_all.sh: --torch must be debian or pypi, got '$torch'" >&2; exit 2 ;;
esac
SKIP=" ${SKIP:-} "
for s in $SKIP; do
  case "$s" in pgd|models|step-cost|autoattack|data-parallel) ;;
    *) echo "run_all.sh: SKIP names pgd, models, step-cost, autoattack or data-parallel, got '$s'" >&2; exit 2 ;;
  esac
done
skip() { [[ "$SKIP" == *" $1 "* ]]; }
WORK_DIR=${WORK_DIR:-$(mktemp -d /tmp/iat_bench_all.XXXXXX)}
mkdir -p "$WORK_DIR"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

[ -f "$BUILD_DIR/CMakeCache.txt" ] ||
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" > "$WORK_DIR/cmake.log"
cmake --build "$BUILD_DIR" --target bench_pgd_step bench_models_fwd_bwd bench_step_cost bench_data_parallel_step \
  iat-eval > "$WORK_DIR/build.log"

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc --all) cores;" \
     "LibTorch leg: $torch ($($PYTHON -c 'import torch; print(torch.__version__)')); 1 thread; logs in $WORK_DIR"
step() { echo "== $1 (log: $WORK_DIR/$2.log)"; }

if ! skip pgd; then
  step "PGD-10 step: iat vs Python vs torchattacks, 1 round" pgd
  benchmarks/run_pgd_step.sh --torch "$torch" "$BUILD_DIR" 1 > "$WORK_DIR/pgd.log" 2>&1
fi
if ! skip models; then
  step "models, one forward+backward: iat vs the Python definitions" models
  { "$BUILD_DIR/benchmarks/bench_models_fwd_bwd" --threads 1 --reps 3
    $PYTHON benchmarks/models_fwd_bwd.py --threads 1 --reps 3; } > "$WORK_DIR/models.log" 2>&1
fi
if ! skip step-cost; then
  step "training step of each method vs PGD-AT, small CNN, batch 32" step-cost
  "$BUILD_DIR/benchmarks/bench_step_cost" --model cnn --batch 32 --reps 3 --threads 1 > "$WORK_DIR/step-cost.log" 2>&1
fi
if ! skip autoattack; then
  if [ -n "${AUTOATTACK_REF:-}" ]; then
    step "AutoAttack standard: iat-eval vs the reference, 300 points" autoattack
    IAT_EVAL="$BUILD_DIR/examples/iat-eval" PYTHON=$PYTHON WORK_DIR="$WORK_DIR/aa" \
      benchmarks/autoattack_vs_reference.sh "$AUTOATTACK_REF" 1 > "$WORK_DIR/autoattack.log" 2>&1
  else
    echo "== AutoAttack vs the reference: left out (set AUTOATTACK_REF to a fra31/auto-attack checkout)"
  fi
fi
if ! skip data-parallel; then
  step "data parallelism: 1 vs 2 processes, PreAct ResNet-18, global batch 32" data-parallel
  benchmarks/run_data_parallel.sh --torch "$torch" "$BUILD_DIR" 1 32 > "$WORK_DIR/data-parallel.log" 2>&1
fi

# One table from the logs; a comparison whose log is missing or lacks its summary is reported as such.
$PYTHON - "$WORK_DIR" <<'PY'
import json, os, re, sys
work = sys.argv[1]
def log(name):
    path = os.path.join(work, name + ".log")
    return open(path).read() if os.path.exists(path) else None
rows = []
text = log("pgd")
if text is not None:
    for key, what in (("attack_ms", "PGD-10 attack"), ("train_step_ms", "PGD-AT training step")):
        m = re.search(key + r": iat ([\d.]+) ms, python ([\d.]+) ms .*?, torchattacks ([\d.]+) ms", text)
        if m:
            i, p, t = map(float, m.groups())
            rows.append((what + ", small CNN, batch 128", "iat / Python", i / p))
            rows.append((what + ", small CNN, batch 128", "iat / torchattacks", i / t))
        else:
            rows.append((what, "no summary in pgd.log", None))
text = log("models")
if text is not None:
    runs = [json.loads(l) for l in text.splitlines() if l.startswith("{")]
    for model in ("small_cnn", "preact_resnet18"):
        i = [r["ms"] for r in runs if r["impl"] == "iat" and r["model"] == model]
        p = [r["ms"] for r in runs if r["impl"] == "python" and r["model"] == model]
        rows.append((f"{model} forward+backward", "iat / Python", i[0] / p[0] if i and p else None))
text = log("step-cost")
if text is not None:
    for m in re.finditer(r"^\| ([^|]+?) \| [\d.]+ \| ([\d.]+) \| [\d.]+ \| [\d.]+ \|$", text, re.M):
        if m.group(1) != "PGD-AT":
            rows.append((m.group(1) + " step, small CNN, batch 32", "method / PGD-AT (CPU time)", float(m.group(2))))
    m = re.search(r"^TRADES\+UIAT / TRADES: ([\d.]+) \(CPU\)", text, re.M)
    rows.append(("TRADES+UIAT step, small CNN, batch 32", "method / TRADES (CPU time)", float(m.group(1)) if m else None))
text = log("autoattack")
if text is not None:
    m = re.search(r"median cpu: +iat ([\d.]+) s, reference ([\d.]+) s", text)
    rows.append(("AutoAttack standard, 300 points", "iat / reference (CPU time)",
                 float(m.group(1)) / float(m.group(2)) if m else None))
text = log("data-parallel")
if text is not None:
    m = re.search(r"overlap true : speed-up ([\d.]+), efficiency (\d+) %", text)
    rows.append(("PreAct ResNet-18 step, 2 processes vs 1", "2-process step / half the 1-process step",
                 100 / float(m.group(2)) if m else None))
print()
print("| comparison | ratio | value |")
print("|---|---|---|")
failed = False
for what, ratio, value in rows:
    failed |= value is None
    print(f"| {what} | {ratio} | {'missing: see the log' if value is None else f'{value:.2f}'} |")
sys.exit(1 if failed else 0)
PY
