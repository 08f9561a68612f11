#!/usr/bin/env bash
# PGD-10 on a small CNN (Fashion-MNIST shape, batch 128, one thread): iat vs the same computation written
# directly in Python vs torchattacks' PGD, all on the same LibTorch backend and BLAS, interleaved ROUNDS
# times so that all see the same machine load; prints each run and the ratios of medians (peer time / iat
# time: > 1 means iat is faster).
#   benchmarks/run_pgd_step.sh [--torch debian|pypi] [BUILD_DIR] [ROUNDS]
# debian (default): BUILD_DIR build, Debian's /usr/bin/python3 with python3-torch 1.13.1; torchattacks
#   (pure Python, pinned in scripts/requirements-pypi.txt) is installed without dependencies into
#   .venv/torchattacks-debian and Debian's python3-scipy provides the one module it imports.
# pypi: BUILD_DIR build-pypi, the PyPI leg's environment (scripts/torch_pypi.sh: torch 2.x, torchattacks).
# One thread means one: at::set_num_threads / torch.set_num_threads do not reach OpenBLAS's own thread pool,
# which otherwise takes the second core on both sides (and spends much of it spinning in the kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
torch=debian
if [ "${1:-}" = "--torch" ]; then torch=$2; shift 2; fi
case "$torch" in
  debian)
    BUILD_DIR=${1:-build}
    PYTHON=/usr/bin/python3
    ta_dir=.venv/torchattacks-debian
    ta_pin=$(grep '^torchattacks==' scripts/requirements-pypi.txt)
    if ! PYTHONPATH=$ta_dir $PYTHON -c "import torchattacks" >/dev/null 2>&1; then
      dpkg-query -W -f='${Status}' python3-scipy 2>/dev/null | grep -q "install ok installed" ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-scipy >/dev/null; }
      python3 -m pip install -q --disable-pip-version-check --no-deps --target "$ta_dir" "$ta_pin"
    fi
    export PYTHONPATH=$ta_dir
    ;;
  pypi)
    BUILD_DIR=${1:-build-pypi}
    source scripts/torch_pypi.sh
    PYTHON=$IAT_PYTHON
    ;;
  *) echo "run_pgd_step.sh: --torch must be debian or pypi, got '$torch'" >&2; exit 2 ;;
esac
ROUNDS=${2:-3}
bin="$BUILD_DIR/benchmarks/bench_pgd_step"
[ -x "$bin" ] || { echo "run_pgd_step.sh: $bin not built (cmake --build $BUILD_DIR --target bench_pgd_step)" >&2; exit 1; }
blas=$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null || echo unknown)
echo "LibTorch leg: $torch; Python: $PYTHON ($($PYTHON -c 'import torch; print(torch.__version__)'))"
echo "BLAS (Debian's LibTorch and python3-torch): $blas"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc --all) cores; threads 1 (OPENBLAS_NUM_THREADS=1 too); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp)
for r in $(seq "$ROUNDS"); do
  "$bin" --threads 1 | tee -a "$out"
  $PYTHON benchmarks/pgd_step.py --threads 1 --impl python | tee -a "$out"
  $PYTHON benchmarks/pgd_step.py --threads 1 --impl torchattacks | tee -a "$out"
done
$PYTHON - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = lambda v: sorted(v)[len(v) // 2]
for key in ("attack_ms", "train_step_ms"):
    i = med([r[key] for r in rows if r["impl"] == "iat"])
    line = f"{key}: iat {i:.1f} ms"
    for peer in ("python", "torchattacks"):
        p = med([r[key] for r in rows if r["impl"] == peer])
        line += f", {peer} {p:.1f} ms ({peer}/iat = {p / i:.2f})"
    print(line)
PY
rm -f "$out"
