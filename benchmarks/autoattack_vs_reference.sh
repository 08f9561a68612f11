#!/usr/bin/env bash
# Time of a full AutoAttack standard run, iat-eval against the reference fra31/auto-attack, side by side on
# the same TorchScript model, points, epsilon, seed, batch size and thread count (the agreement check's
# model: scripts/aa_agreement/make_model.py, 300 Fashion-MNIST test points, L-inf eps 0.1).
#
#   benchmarks/autoattack_vs_reference.sh /path/to/auto-attack [repetitions]
#   AUTOATTACK_REF=... IAT_EVAL=build/examples/iat-eval benchmarks/autoattack_vs_reference.sh
#
# Runs alternate (iat, reference, iat, ...) so that both see the same machine load; wall time, CPU time
# (user + sys) and peak resident memory (all from /usr/bin/time) are printed per run, then the medians and
# the ratios reference/iat.
# Both sides use 1 intra-op thread and TorchScript graph optimisation off.
set -euo pipefail
# One thread everywhere: intra-op (set by both programs), and OpenBLAS's own pool, which otherwise grabs
# every idle core for the linear layers.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
ref="${1:-${AUTOATTACK_REF:-}}"
reps="${2:-1}"
if [ -z "$ref" ] || [ ! -f "$ref/autoattack/autoattack.py" ]; then
  echo "autoattack_vs_reference.sh: give a fra31/auto-attack checkout (argument or AUTOATTACK_REF); see" \
       "scripts/aa_agreement/run_agreement.sh" >&2
  exit 2
fi
PYTHON="${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}"
WORK_DIR="${WORK_DIR:-/tmp/iat_aa_bench}"
IAT_EVAL="${IAT_EVAL:-$root/build/examples/iat-eval}"
mkdir -p "$WORK_DIR"
[ -f "$WORK_DIR/model.pt" ] || "$PYTHON" "$root/scripts/aa_agreement/make_model.py" --out-dir "$WORK_DIR" --n 300

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(nproc --all) cores"
echo "BLAS: $(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null || echo unknown)"
echo "threads: 1 (iat-eval --threads 1, torch.set_num_threads(1), OPENBLAS_NUM_THREADS=1); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
common=(--eps 0.1 --norm Linf --seed 0 --threads 1)
iat_wall=(); iat_cpu=(); ref_wall=(); ref_cpu=(); iat_rss=(); ref_rss=()
for r in $(seq 1 "$reps"); do
  /usr/bin/time -f "%e %U %S %M" -o "$WORK_DIR/time_iat" "$IAT_EVAL" --model "$WORK_DIR/model.pt" \
    --data "$WORK_DIR/points.pt" "${common[@]}" --batch-size 250 --quiet --no-report --out "$WORK_DIR/iat.json" > /dev/null
  /usr/bin/time -f "%e %U %S %M" -o "$WORK_DIR/time_ref" "$PYTHON" "$root/scripts/aa_agreement/run_reference.py" \
    --ref "$ref" --model "$WORK_DIR/model.pt" --data "$WORK_DIR/points.pt" "${common[@]}" --bs 250 \
    --out "$WORK_DIR/ref.json" > /dev/null 2>&1
  read -r w u s m < "$WORK_DIR/time_iat"; iw=$w; ic=$(awk -v a="$u" -v b="$s" 'BEGIN {print a + b}'); iat_mib=$((m / 1024))
  read -r w u s m < "$WORK_DIR/time_ref"; rw=$w; rc=$(awk -v a="$u" -v b="$s" 'BEGIN {print a + b}'); ref_mib=$((m / 1024))
  iat_wall+=("$iw"); iat_cpu+=("$ic"); ref_wall+=("$rw"); ref_cpu+=("$rc"); iat_rss+=("$iat_mib"); ref_rss+=("$ref_mib")
  echo "run $r: iat wall ${iw} s cpu ${ic} s peak ${iat_mib} MiB | reference wall ${rw} s cpu ${rc} s peak ${ref_mib} MiB | robust: iat" \
       "$("$PYTHON" -c "import json;print(json.load(open('$WORK_DIR/iat.json'))['robust_count'])")," \
       "reference $("$PYTHON" -c "import json;print(json.load(open('$WORK_DIR/ref.json'))['robust_count'])")"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mi=$(median "${iat_wall[@]}"); mr=$(median "${ref_wall[@]}"); ci=$(median "${iat_cpu[@]}"); cr=$(median "${ref_cpu[@]}")
echo "median wall: iat ${mi} s, reference ${mr} s, reference/iat $(awk -v a="$mr" -v b="$mi" 'BEGIN {printf "%.2f", a / b}')"
echo "median cpu:  iat ${ci} s, reference ${cr} s, reference/iat $(awk -v a="$cr" -v b="$ci" 'BEGIN {printf "%.2f", a / b}')"
mm_i=$(median "${iat_rss[@]}"); mm_r=$(median "${ref_rss[@]}")
echo "median peak resident memory: iat ${mm_i} MiB, reference ${mm_r} MiB, iat/reference $(awk -v a="$mm_i" -v b="$mm_r" 'BEGIN {printf "%.2f", a / b}')"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
