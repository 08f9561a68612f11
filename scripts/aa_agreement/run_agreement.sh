#!/usr/bin/env bash
# The AutoAttack agreement check: iat-eval against the reference implementation fra31/auto-attack, on the
# same TorchScript model, points, epsilon, seed and batch size. Compares robust accuracy after each attack,
# the per-point robust flags and the adversarial examples themselves (bit for bit).
#
#   scripts/aa_agreement/run_agreement.sh /path/to/auto-attack [--quick]
#   AUTOATTACK_REF=/path/to/auto-attack scripts/aa_agreement/run_agreement.sh
#
# Get the reference (read-only use, nothing of it is copied into iat):
#   git clone https://github.com/fra31/auto-attack /tmp/auto-attack && git -C /tmp/auto-attack checkout a392200
# Needs: python3 with torch and numpy (Debian: python3-torch, python3-numpy), Fashion-MNIST IDX files
# (Debian: dataset-fashion-mnist, or FASHION_MNIST_DIR), and iat-eval (built here into $BUILD_DIR unless
# IAT_EVAL points to a binary).
#
# Configurations (300 test points, seed 0, batch size 250, one thread, TorchScript graph optimisation off):
#   standard-linf  the full standard run, L-inf eps 0.1 (also timed: both totals are printed)
#   single-linf    each attack alone with standard settings, L-inf eps 0.1 (every attack then breaks points)
#   single-l2      each attack alone, L2 eps 1.0 (FAB 20 iterations, Square 1000 queries)
# --quick: FAB 20 iterations and Square 300 queries everywhere (a few minutes on 2 cores).
# Environment: WORK_DIR (default /tmp/iat_aa_agreement), BUILD_DIR (default build), N (points, 300),
# PYTHON (default /usr/bin/python3 if present). Exit status 1 if any configuration disagrees.
set -euo pipefail
# One thread everywhere: intra-op (set by both programs), and OpenBLAS's own pool, which otherwise grabs
# every idle core for the linear layers.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ref="${AUTOATTACK_REF:-}"
quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) ref="$arg" ;;
  esac
done
if [ -z "$ref" ] || [ ! -f "$ref/autoattack/autoattack.py" ]; then
  echo "run_agreement.sh: give the path of a fra31/auto-attack checkout (argument or AUTOATTACK_REF)." >&2
  echo "  git clone https://github.com/fra31/auto-attack /tmp/auto-attack && git -C /tmp/auto-attack checkout a392200" >&2
  exit 2
fi
PYTHON="${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}"
WORK_DIR="${WORK_DIR:-/tmp/iat_aa_agreement}"
BUILD_DIR="${BUILD_DIR:-$root/build}"
N="${N:-300}"
mkdir -p "$WORK_DIR"
if [ -z "${IAT_EVAL:-}" ]; then
  cmake -S "$root" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$WORK_DIR/cmake.log"
  cmake --build "$BUILD_DIR" --target iat-eval > "$WORK_DIR/build.log"
  IAT_EVAL="$BUILD_DIR/examples/iat-eval"
fi

if [ ! -f "$WORK_DIR/model.pt" ] || [ ! -f "$WORK_DIR/points.pt" ]; then
  "$PYTHON" "$here/make_model.py" --out-dir "$WORK_DIR" --n "$N"
fi

fab=100; square=5000; fab_l2=20; square_l2=1000
if [ "$quick" = 1 ]; then fab=20; square=300; fab_l2=20; square_l2=300; fi
summary="$WORK_DIR/summary.jsonl"
: > "$summary"
status=0

# run <label> <norm> <eps> <attacks: standard or one name> <fab steps> <square queries>
run() {
  local label=$1 norm=$2 eps=$3 attacks=$4 fs=$5 sq=$6
  local common=(--eps "$eps" --norm "$norm" --seed 0 --threads 1 --fab-steps "$fs" --square-queries "$sq")
  local iat_args=("${common[@]}" --batch-size 250) ref_args=("${common[@]}" --bs 250)
  if [ "$attacks" != standard ]; then iat_args+=(--attacks "$attacks"); ref_args+=(--attacks "$attacks"); fi
  echo "== $label: $attacks, $norm eps $eps (FAB $fs it., Square $sq queries)"
  "$IAT_EVAL" --model "$WORK_DIR/model.pt" --data "$WORK_DIR/points.pt" "${iat_args[@]}" --quiet --no-report \
    --out "$WORK_DIR/iat_$label.json" --save-adv "$WORK_DIR/iat_$label.pt" > "$WORK_DIR/iat_$label.txt"
  "$PYTHON" "$here/run_reference.py" --ref "$ref" --model "$WORK_DIR/model.pt" --data "$WORK_DIR/points.pt" \
    "${ref_args[@]}" --out "$WORK_DIR/ref_$label.json" --save-adv "$WORK_DIR/ref_$label.pt" > "$WORK_DIR/ref_$label.txt" 2>&1
  "$PYTHON" "$here/compare_reports.py" --iat "$WORK_DIR/iat_$label.json" --ref "$WORK_DIR/ref_$label.json" \
    --iat-adv "$WORK_DIR/iat_$label.pt" --ref-adv "$WORK_DIR/ref_$label.pt" --label "$label" --summary "$summary" \
    || status=1
}

run standard-linf Linf 0.1 standard "$fab" "$square"
for a in apgd-ce apgd-t fab-t square; do run "single-linf-$a" Linf 0.1 "$a" "$fab" "$square"; done
for a in apgd-ce apgd-t fab-t square; do run "single-l2-$a" L2 1.0 "$a" "$fab_l2" "$square_l2"; done

echo
if [ "$status" = 0 ]; then echo "agreement check: all configurations AGREE (details in $summary)"
else echo "agreement check: some configurations DISAGREE (details in $summary)"; fi
exit "$status"
