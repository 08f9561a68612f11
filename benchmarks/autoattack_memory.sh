#!/usr/bin/env bash
# Peak resident memory of AutoAttack on 1 000 CIFAR-shaped points with PreAct ResNet-18: iat-eval against the
# reference fra31/auto-attack, attack by attack, on the same TorchScript model, points, epsilon, seed and batch.
#
#   benchmarks/autoattack_memory.sh /path/to/auto-attack [N] [BATCH]      # N = 1000, BATCH = 250 (the reference's bs)
#   AUTOATTACK_REF=... IAT_EVAL=build/examples/iat-eval benchmarks/autoattack_memory.sh
#   ATTACKS="apgd-t square" benchmarks/autoattack_memory.sh REF 250     # some attacks, one batch of points
#
# Each attack of the standard version (apgd-ce, apgd-t, fab-t, square) runs alone on all N points, so that each
# starts with every point unbroken (the points' labels are the model's own predictions: clean accuracy 100 %),
# with 2 iterations (APGD, FAB), 10 Square queries and 1 target class: what an attack holds in memory at a
# batch does not depend on how many iterations or targets it runs one after the other, and the full counts
# would take hours per attack on a CPU. N = BATCH (one batch) measures one batch's working set in a quarter
# of the time; 1 000 points add what is held across batches (measured: 25-95 MiB with APGD-CE). Peak
# resident memory (/usr/bin/time's maximum RSS) of the whole process: Python, torch and the model included on
# the reference's side. One thread on both sides. Both sides run the standard version's settings for the attack
# (iat-eval --version standard --attacks X, the reference's version='standard' with attacks_to_run = [X]):
# APGD-CE with 1 restart (custom's default is 5, which would compare 5 restarts with 1).
set -euo pipefail
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
ref="${1:-${AUTOATTACK_REF:-}}"
N="${2:-1000}"
BATCH="${3:-250}"
if [ -z "$ref" ] || [ ! -f "$ref/autoattack/autoattack.py" ]; then
  echo "autoattack_memory.sh: give a fra31/auto-attack checkout (argument or AUTOATTACK_REF)" >&2
  exit 2
fi
PYTHON="${PYTHON:-/usr/bin/python3}"
WORK_DIR="${WORK_DIR:-/tmp/iat_aa_memory}"
IAT_EVAL="${IAT_EVAL:-$root/build/examples/iat-eval}"
[ -x "$IAT_EVAL" ] || { echo "autoattack_memory.sh: $IAT_EVAL not built (cmake --build build --target iat-eval)" >&2; exit 1; }
mkdir -p "$WORK_DIR"

# The model and the points: PreAct ResNet-18 (the tests' Python definition, seeded weights) scripted, and N
# uniform CIFAR-shaped points labelled with its own predictions.
"$PYTHON" - "$root" "$WORK_DIR" "$N" <<'PY'
import os, sys, torch
root, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, os.path.join(root, "tests", "python"))
import reference_models as ref
torch.manual_seed(0)
net = ref.PreActResNet18().eval()
scripted = torch.jit.script(net)
x = torch.rand(n, 3, 32, 32)
with torch.no_grad():
    y = torch.cat([net(x[i:i + 250]).argmax(1) for i in range(0, n, 250)])
scripted.save(os.path.join(work, "model.pt"))
torch.save({"x": x, "y": y}, os.path.join(work, "points.pt"))
print(f"model: PreAct ResNet-18, {sum(p.numel() for p in net.parameters())} parameters; {n} points, "
      f"{len(set(y.tolist()))} classes among the labels")
PY

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(nproc --all) cores"
echo "points $N, batch $BATCH, eps 8/255 Linf, seed 0, 1 thread; APGD/FAB 2 iterations, Square 10 queries, 1 target"
budget=(--apgd-steps 2 --fab-steps 2 --square-queries 10 --n-targets 1)  # the same flags on both sides
printf '| attack | iat-eval peak | reference peak | iat / reference | iat s | reference s |\n|---|---|---|---|---|---|\n' \
  > "$WORK_DIR/table.md"
for attack in ${ATTACKS:-apgd-ce apgd-t fab-t square}; do
  /usr/bin/time -f "%e %M" -o "$WORK_DIR/time_iat" "$IAT_EVAL" --model "$WORK_DIR/model.pt" --data "$WORK_DIR/points.pt" \
    --eps 8/255 --norm Linf --seed 0 --threads 1 --batch-size "$BATCH" --version standard --attacks "$attack" \
    "${budget[@]}" --quiet --no-report --out "$WORK_DIR/iat-$attack.json" > /dev/null
  /usr/bin/time -f "%e %M" -o "$WORK_DIR/time_ref" "$PYTHON" "$root/scripts/aa_agreement/run_reference.py" --ref "$ref" \
    --model "$WORK_DIR/model.pt" --data "$WORK_DIR/points.pt" --eps "$("$PYTHON" -c 'print(8/255)')" --norm Linf \
    --seed 0 --threads 1 --bs "$BATCH" --attacks "$attack" "${budget[@]}" --out "$WORK_DIR/ref-$attack.json" \
    > /dev/null 2>&1
  read -r iw im < "$WORK_DIR/time_iat"
  read -r rw rm_ < "$WORK_DIR/time_ref"
  printf '| %s | %d MiB | %d MiB | %.2f | %s | %s |\n' "$attack" $((im / 1024)) $((rm_ / 1024)) \
    "$(awk -v a="$im" -v b="$rm_" 'BEGIN {print a / b}')" "$iw" "$rw" | tee -a "$WORK_DIR/table.md"
done
cat "$WORK_DIR/table.md"
