#!/usr/bin/env bash
# Data parallelism on the CPU: PreAct ResNet-18 training steps at one global batch, 1 process vs 2 processes
# under torchrun (1 intra-op thread each, Gloo on the loopback), with the all-reduces overlapped with
# backward and without, interleaved ROUNDS times so that all see the same machine load. Prints each run and,
# from the medians, the speed-up 1 -> 2 processes, the scaling efficiency (speed-up / 2) and the share of the
# 2-process step spent waiting for gradients after backward; and, as the machine's ceiling, two independent
# 1-process runs of half the batch at once (no communication at all): what 2 processes could reach here.
#   benchmarks/run_data_parallel.sh [--torch debian|pypi] [BUILD_DIR] [ROUNDS] [BATCH]
# debian (default): BUILD_DIR build, Debian's launcher (python3 -m torch.distributed.run, with the
# --redirects/--tee it needs on Python 3.11); pypi: BUILD_DIR build-pypi and the PyPI leg's torchrun.
# Environment: STEPS timed steps per run (5); ATTACK_STEPS K > 0 times PGD-AT steps with PGD-K (iat-train's
# step) instead of plain ones (0, the default: the worst case for the share of communication).
set -euo pipefail
cd "$(dirname "$0")/.."
torch=debian
if [ "${1:-}" = "--torch" ]; then torch=$2; shift 2; fi
case "$torch" in
  debian) BUILD_DIR=${1:-build}; LAUNCH=(/usr/bin/python3 -m torch.distributed.run) ;;
  pypi) BUILD_DIR=${1:-build-pypi}; source scripts/torch_pypi.sh; LAUNCH=("$(dirname "$IAT_PYTHON")/torchrun") ;;
  *) echo "run_data_parallel.sh: --torch must be debian or pypi, got '$torch'" >&2; exit 2 ;;
esac
ROUNDS=${2:-3}
BATCH=${3:-64}
BIN=$BUILD_DIR/benchmarks/bench_data_parallel_step
[ -x "$BIN" ] || { echo "run_data_parallel.sh: build $BIN first (cmake --build $BUILD_DIR --target bench_data_parallel_step)" >&2; exit 2; }
export OMP_NUM_THREADS=1
ARGS=(--batch "$BATCH" --steps "${STEPS:-5}" --warmup 1 --threads 1 --attack-steps "${ATTACK_STEPS:-0}")
port=$(( 29600 + RANDOM % 300 ))
two() {  # two OVERLAP: rank 0's JSON line of a 2-process run
  port=$(( port + 1 ))
  "${LAUNCH[@]}" --redirects 2 --tee 2 --nproc_per_node 2 --master_port $port --no_python "$BIN" "${ARGS[@]}" --overlap "$1" 2>/dev/null |
    sed -n 's/^.*\({"world_size".*\)$/\1/p' | head -1
}
apart() {  # two independent 1-process runs of half the batch at once, no communication: the machine's ceiling
  local a b
  a=$(mktemp); b=$(mktemp)
  "$BIN" "${HALF[@]}" > "$a" & "$BIN" "${HALF[@]}" > "$b"; wait
  /usr/bin/python3 -c 'import json, sys; r = [json.load(open(f)) for f in sys.argv[1:]]; m = max(r, key=lambda x: x["step_ms"]); m["apart"] = True; print(json.dumps(m))' "$a" "$b"
  rm -f "$a" "$b"
}
HALF=(--batch $(( BATCH / 2 )) --steps "${STEPS:-5}" --warmup 1 --threads 1 --attack-steps "${ATTACK_STEPS:-0}")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$ROUNDS"); do
  "$BIN" "${ARGS[@]}" | tee -a "$out"
  two 1 | tee -a "$out"
  two 0 | tee -a "$out"
  apart | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(key, **where):
    return statistics.median(r[key] for r in rows if all(r.get(k) == v for k, v in where.items()))
t1 = med("step_ms", world_size=1, global_batch=rows[0]["global_batch"])
t_apart = med("step_ms", apart=True)
step = f"PGD-AT steps with PGD-{rows[0]['attack_steps']}" if rows[0]["attack_steps"] else "plain training steps"
print(f"{step}, global batch {rows[0]['global_batch']}, gradients {rows[0]['gradient_bytes'] / 1e6:.1f} MB per step "
      f"(model {rows[0]['model_bytes'] / 1e6:.1f} MB)")
for overlap in (True, False):
    t2 = med("step_ms", world_size=2, overlap=overlap)
    sync = med("sync_ms", world_size=2, overlap=overlap)
    print(f"2 processes, overlap {str(overlap).lower():5}: speed-up {t1 / t2:.2f}, efficiency {100 * t1 / (2 * t2):.0f} %, "
          f"waiting after backward {sync:.0f} ms = {100 * sync / t2:.1f} % of the step "
          f"(one all-reduce of the gradients alone: {med('allreduce_ms', world_size=2, overlap=overlap):.0f} ms)")
print(f"ceiling: 2 independent processes of half the batch at once, no communication: step {t_apart:.0f} ms, "
      f"speed-up {t1 / t_apart:.2f}, efficiency {100 * t1 / (2 * t_apart):.0f} % (what the machine allows); "
      f"2 processes with overlap reach {100 * t_apart / med('step_ms', world_size=2, overlap=True):.0f} % of it")
PY
