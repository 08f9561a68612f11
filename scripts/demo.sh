#!/usr/bin/env bash
# The main job: adversarial training and evaluation on real data, PGD-AT against UIAT, side by side.
#
#   scripts/demo.sh                                   # Fashion-MNIST (Debian's dataset-fashion-mnist), ~15 min on 2 CPU cores
#   scripts/demo.sh --data cifar10 --data-dir DIR     # the CIFAR-10 PRN-18 presets instead (a GPU job: hours)
#   scripts/demo.sh --out runs/demo2                  # another output folder
#   scripts/demo.sh --long                            # the long demo: PGD-AT, UIAT, TRADES and PGD-AT + AWP,
#                                                     # 5 epochs over all 60 000 images, AutoAttack on 1 000
#                                                     # test points (~1 h on 2 CPU cores; docs/reproduce.md)
#   scripts/demo.sh --sweep beta                      # the supplement's Figure 2 for one UIAT parameter (beta,
#                                                     # gamma, momentum-epoch or one-off-epoch) on Fashion-MNIST,
#                                                     # 4 epochs over 15 000 images per run (docs/sweeps.md)
#
# On a fresh Debian bookworm machine (as root or with sudo) it installs the packages it needs, builds
# iat-train and iat-eval, trains the same model with both methods (in parallel, one thread each), evaluates
# each on held-out test images (natural, PGD-20, CW∞ and AutoAttack on a subset), and writes
# <out>/report.json and <out>/report.md with the table, the methods on shared axes (<out>/curves.png: training
# curves; <out>/accuracy.png: clean / PGD-20 / CW∞ / AutoAttack bars) and links to each run's pictures (its
# curves, the supplement's Figure 1, the AutoAttack breakdown), drawn by scripts/report.py with matplotlib.
# Every number in them is what this run measured.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=fashion-mnist
DATA_DIR=""
OUT=""
LONG=0
SWEEP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --data-dir) DATA_DIR=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --long) LONG=1; shift ;;
    --sweep) SWEEP=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

case "$SWEEP" in
  ""|beta|gamma|momentum-epoch|one-off-epoch) ;;
  *) echo "demo.sh: --sweep takes one of beta, gamma, momentum-epoch, one-off-epoch; got '$SWEEP'" >&2; exit 2 ;;
esac
if [ -n "$SWEEP" ]; then
  [ "$DATA" = fashion-mnist ] && [ "$LONG" = 0 ] \
    || { echo "demo.sh: --sweep is the Fashion-MNIST sweep (for CIFAR-10: docs/sweeps.md)" >&2; exit 2; }
fi

source scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build-demo}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIAT_BUILD_TESTS=OFF -DIAT_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$BUILD_DIR" --target iat-train iat-eval -j "$(nproc)"
TRAIN="$BUILD_DIR/examples/iat-train"
EVAL="$BUILD_DIR/examples/iat-eval"

if [ -n "$SWEEP" ]; then
  # Two runs at a time, one thread each; natural accuracy on 1 000 test points, AutoAttack on the first 100.
  exec /usr/bin/python3 scripts/sweep.py "${OUT:-runs/sweep-$SWEEP}" --preset fashion-uiat-cnn --figure2 "$SWEEP" \
    --train "$TRAIN" --eval "$EVAL" --jobs 2 --threads 1 --eval-n 1000 --autoattack-n "${AA_N:-100}" \
    ${DATA_DIR:+--data-dir "$DATA_DIR"} -- --epochs 4 --train-subset 15000
fi

methods=(pgd-at uiat)
if [ "$LONG" = 1 ] && [ "$DATA" != fashion-mnist ]; then
  echo "demo.sh: --long is the Fashion-MNIST long demo; with --data $DATA use the paper's presets (docs/reproduce.md)" >&2
  exit 2
fi
case "$DATA" in
  fashion-mnist)
    data_args=()
    [ -n "$DATA_DIR" ] && data_args=(--data-dir "$DATA_DIR")
    EPS=0.1
    if [ "$LONG" = 1 ]; then
      methods=(pgd-at uiat trades pgd-at-awp)
      preset() { echo "fashion-$1-cnn-long"; }
      EVAL_N=1000; AA_N=${AA_N:-1000}; OUT=${OUT:-runs/demo-long}
    else
      preset() { echo "fashion-$1-cnn"; }
      EVAL_N=1000; AA_N=${AA_N:-100}
    fi ;;
  cifar10)
    [ -n "$DATA_DIR" ] || { echo "demo.sh: --data cifar10 needs --data-dir DIR (the CIFAR-10 binary version)" >&2; exit 2; }
    preset() { echo "cifar10-$1-prn18"; }
    data_args=(--data-dir "$DATA_DIR")
    EVAL_N=10000; AA_N=${AA_N:-1000}; EPS=8/255 ;;
  *) echo "demo.sh: --data must be fashion-mnist or cifar10, got '$DATA'" >&2; exit 2 ;;
esac
OUT=${OUT:-runs/demo}
mkdir -p "$OUT"

# run_all LABEL FUNCTION: runs FUNCTION METHOD for every method in parallel (one thread each, so the two
# runs share the two cores), logging to <out>/<method>/LABEL.log.
# Shows the last line of each still-running job's log every 30 s, then checks every exit status.
run_all() {
  local label=$1; shift
  local pids=() m
  for m in "${methods[@]}"; do
    mkdir -p "$OUT/$m"
    rm -f "$OUT/$m/$label.rc"
    ( "$@" "$m" > "$OUT/$m/$label.log" 2>&1; echo $? > "$OUT/$m/$label.rc" ) &
    pids+=($!)
  done
  while kill -0 "${pids[@]}" 2>/dev/null; do
    sleep 30
    for m in "${methods[@]}"; do
      [ -e "$OUT/$m/$label.rc" ] || printf '[%s] %s\n' "$m" "$(tail -n 1 "$OUT/$m/$label.log" 2>/dev/null)"
    done
  done
  wait
  for m in "${methods[@]}"; do
    local rc
    rc=$(cat "$OUT/$m/$label.rc")
    if [ "$rc" != 0 ]; then
      echo "demo.sh: $label of $m failed (exit $rc); last lines of $OUT/$m/$label.log:" >&2
      tail -n 20 "$OUT/$m/$label.log" >&2
      exit 1
    fi
  done
}
train_one() {
  "$TRAIN" --preset "$(preset "$1")" "${data_args[@]}" --out "$OUT/$1" --plain-progress --threads 1 --no-report
}
eval_one() {
  "$EVAL" --checkpoint "$OUT/$1/checkpoint.pt" --dataset "$DATA" "${data_args[@]}" --n "$EVAL_N" \
    --eps "$EPS" --attacks pgd20,cw --autoattack-n "$AA_N" --threads 1 --out "$OUT/$1/eval.json" --no-report
}

echo "== training ${methods[*]} on $DATA (logs: $OUT/<method>/train.log)"
run_all train train_one
for m in "${methods[@]}"; do grep '^epoch [0-9]*/[0-9]*:' "$OUT/$m/train.log" | sed "s/^/[$m] /"; done

echo "== evaluating on $EVAL_N test images: natural, PGD-20, CW-inf; AutoAttack on the first $AA_N (logs: $OUT/<method>/eval.log)"
run_all eval eval_one

# The comparison on shared axes (one curve figure, one bar chart) and the table, from what the runs wrote;
# each run's own pictures (curves, Figure 1, the AutoAttack breakdown) are redrawn beside its files.
method_dirs=()
for m in "${methods[@]}"; do method_dirs+=("$OUT/$m"); done
/usr/bin/python3 scripts/report.py --quiet --compare "$OUT" "${method_dirs[@]}"
echo "Report: $OUT/report.md, $OUT/report.json; pictures: $OUT/curves.png, $OUT/accuracy.png (and .svg)"
