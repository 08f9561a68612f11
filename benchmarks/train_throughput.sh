#!/usr/bin/env bash
# Training throughput of iat-train, PGD-AT against UIAT, side by side: PreAct ResNet-18 on CIFAR-shaped
# synthetic data (3x32x32, 10 classes), batch 32, PGD-10, one thread, STEPS optimiser steps per run,
# interleaved ROUNDS times. Prints images/s per run and the median ratio UIAT/PGD-AT.
#   benchmarks/train_throughput.sh [BUILD_DIR] [STEPS] [ROUNDS] [MODEL] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
STEPS=${2:-3}
ROUNDS=${3:-1}
MODEL=${4:-prn18}
BATCH=${5:-32}
bin="$BUILD_DIR/examples/iat-train"
[ -x "$bin" ] || { echo "train_throughput.sh: $bin not built" >&2; exit 1; }
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc --all) cores; 1 thread; BLAS $(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=()
for r in $(seq "$ROUNDS"); do
  for m in pgd-at uiat; do
    "$bin" --data synthetic-cifar --model "$MODEL" --method "$m" --batch-size "$BATCH" --train-subset $((STEPS * BATCH)) \
      --epochs 1 --test-subset 32 --eval-pgd-steps 1 --augment true --threads 1 --plain-progress --no-report --out "$work/$m" > "$work/log" 2>&1
    ips=$(/usr/bin/python3 -c "import json;print(json.loads(open('$work/$m/metrics.jsonl').readline())['images_per_second'])")
    echo "round $r $m: $ips img/s"
    results+=("$m $ips")
    rm -rf "$work/$m"
  done
done
printf '%s\n' "${results[@]}" | /usr/bin/python3 -c "
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
med = lambda v: sorted(v)[len(v) // 2]
p = med([float(v) for m, v in rows if m == 'pgd-at'])
u = med([float(v) for m, v in rows if m == 'uiat'])
print(f'median images/s: PGD-AT {p:.2f}, UIAT {u:.2f}; UIAT step time / PGD-AT step time = {p / u:.2f}')
"
