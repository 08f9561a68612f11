#!/usr/bin/env bash
# The one-shot GPU check: builds iat against this machine's PyTorch, runs the [cuda] tests and measures
# training-step throughput (PRN-18 and WRN-34-10, PGD-AT / UIAT / IAT / one-off, fp32 / bf16 /
# bf16 + channels-last, batches of 128), the same PGD-AT step in Python (eager, and torch.compile), the
# projected CIFAR-10 epoch time, peak GPU memory, and AutoAttack standard on a PRN-18 for 1,000 points
# (and the reference implementation's time when AUTOATTACK_REF names a fra31/auto-attack checkout).
# Everything lands in gpu_check.json (and the logs beside it).
#
#   scripts/gpu_check.sh --prepare   # here, on a machine with Debian's packages: copy the header-only
#                                    # dependencies (Catch2, CLI11, nlohmann-json, stb, zlib's headers) into
#                                    # third_party_local/ (ignored by git), for a GPU image that lacks them
#   scripts/gpu_check.sh             # on the GPU machine (carry third_party_local/), under 8 minutes
#   scripts/gpu_check.sh --dry-run   # the same path on the CPU with tiny sizes (CI runs it)
#
# Options: --out DIR (default gpu_check/), --python PY (default: $IAT_PYTHON, else python3: the
# interpreter whose torch to build against and to compare with), --jobs N.
# The build is in build-gpu-check/, configured without libzip (IAT_WITH_LIBZIP=OFF: no .npz reading is
# needed here, and a bare GPU image has no libzip). Exit status: 0 when every step ran, 1 when one failed
# (the JSON says which), 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=gpu
out=gpu_check
python=${IAT_PYTHON:-python3}
jobs=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) mode=dry ;;
    --prepare) mode=prepare ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --python) python=${2:?--python needs an interpreter}; shift ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "scripts/gpu_check.sh: unknown argument '$1' (expected --dry-run, --prepare, --out DIR, --python PY, --jobs N)" >&2; exit 2 ;;
  esac
  shift
done

third=$root/third_party_local

# ---- --prepare: header-only dependencies from this machine's Debian packages ------------------------------
prepare() {
  local missing=()
  for f in /usr/include/catch2/catch.hpp /usr/lib/cmake/Catch2/Catch2Config.cmake /usr/include/CLI/CLI.hpp \
           /usr/lib/libCatch2WithMain.a /usr/share/cmake/CLI11/CLI11Config.cmake /usr/include/nlohmann/json.hpp \
           /usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake /usr/include/stb/stb_image_write.h \
           /usr/include/zlib.h /usr/include/zconf.h /usr/include/gloo/context.h; do
    [ -e "$f" ] || missing+=("$f")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/gpu_check.sh --prepare: missing ${missing[*]} (run scripts/deps.sh first)" >&2
    exit 1
  fi
  rm -rf "$third"
  mkdir -p "$third/include" "$third/lib/cmake" "$third/share/cmake"
  # Gloo's headers too: the wheel ships Gloo compiled into its LibTorch but not their headers, which
  # iat/distributed/process_group.hpp needs (the distributed [cuda] test: NCCL beside Gloo).
  cp -r /usr/include/catch2 /usr/include/CLI /usr/include/nlohmann /usr/include/stb /usr/include/gloo "$third/include/"
  cp /usr/include/zlib.h /usr/include/zconf.h "$third/include/"
  cp -r /usr/lib/cmake/Catch2 "$third/lib/cmake/"
  cp /usr/lib/libCatch2WithMain.a "$third/lib/"  # unused (iat has its own main), but Catch2's config checks it
  cp -r /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$third/share/cmake/"
  echo "scripts/gpu_check.sh: header-only dependencies in third_party_local/ ($(du -sh "$third" | cut -f1)); carry it"
}
if [ "$mode" = prepare ]; then
  prepare
  exit 0
fi
[ -d "$third/lib/cmake/Catch2" ] || prepare

if [ "$mode" = dry ] && [ -z "${IAT_PYTHON:-}" ] && [ "$python" = python3 ]; then
  source scripts/torch_pypi.sh  # the PyPI leg's environment (reused when present)
  python=$IAT_PYTHON
fi
"$python" -c 'import torch' 2>/dev/null || { echo "scripts/gpu_check.sh: $python cannot import torch" >&2; exit 1; }
if [ "$mode" = gpu ] && ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "scripts/gpu_check.sh: no CUDA device visible to $python's torch (use --dry-run on a CPU machine)" >&2
  exit 1
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
log=$out/gpu_check.log
: > "$log"
steps_json=()
failed=0
note() { echo "gpu_check: $*" | tee -a "$log"; }
# run_step NAME COMMAND...: runs it with its output in NAME.log; records the exit status and the time.
run_step() {
  local name=$1; shift
  local t0=$(date +%s.%N)
  note "$name: $*"
  set +e
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  set -e
  local secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  note "$name: exit $rc after $secs s"
  steps_json+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $secs}")
  [ $rc -eq 0 ] || failed=1
  return 0
}

# ---- sizes ----------------------------------------------------------------------------------------------
if [ "$mode" = gpu ]; then
  device=cuda; batch=128; steps=10; warmup=3; wrn_steps=5; wrn_warmup=2; size=32; aa_n=1000; aa_bs=500
  threads=0; compile=1; aa_budget=()
else
  device=cpu; batch=2; steps=1; warmup=0; wrn_steps=1; wrn_warmup=0; size=16; aa_n=4; aa_bs=4
  threads=2; compile=0  # torch.compile takes minutes to compile on a 2-core CPU: skipped in a dry run
  aa_budget=(--apgd-steps 10 --fab-steps 10 --square-queries 100)  # AutoAttack's path, not its budget
fi

# ---- build against this Python's torch --------------------------------------------------------------------
torch_cmake=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
torch_root=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
torch_version=$("$python" -c 'import torch; print(torch.__version__)')
gpu_name=$("$python" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")')
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake_args=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$torch_cmake;$torch_root;$third" -DIAT_WITH_LIBZIP=OFF
            -DIAT_PYTHON="$python" "-DCMAKE_CXX_FLAGS=-isystem $third/include")
[ -n "${CI:-}" ] && cmake_args+=(-DIAT_WERROR=ON)
# zlib: the system's development files when present, else the copied headers and the runtime library.
if [ ! -e /usr/include/zlib.h ]; then
  libz=$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/ { print $NF; exit }')
  [ -n "$libz" ] || libz=$("$python" -c 'import zlib, ctypes.util; print(ctypes.util.find_library("z") or "")')
  cmake_args+=(-DZLIB_INCLUDE_DIR="$third/include" -DZLIB_LIBRARY="$libz")
fi
for nvcc in "${CUDACXX:-}" /usr/local/cuda/bin/nvcc; do
  if [ -n "$nvcc" ] && [ -x "$nvcc" ]; then cmake_args+=(-DCMAKE_CUDA_COMPILER="$nvcc"); break; fi
done
build=$root/build-gpu-check
run_step configure cmake -S "$root" -B "$build" "${generator[@]}" "${cmake_args[@]}"
targets=(iat_tests_precision iat_tests_inverse iat_tests_distributed bench_train_step_throughput iat-eval)
run_step build cmake --build "$build" -j "$jobs" --target "${targets[@]}"
built=1
[ -x "$build/benchmarks/bench_train_step_throughput" ] && [ -x "$build/examples/iat-eval" ] || built=0
[ "$built" = 1 ] || note "the build failed (build.log): nothing to measure"
if [ "$built" = 1 ]; then

# ---- [cuda] tests ---------------------------------------------------------------------------------------
for suite in precision inverse distributed; do
  run_step "test_$suite" "$build/tests/iat_tests_$suite" "[cuda]" --success --reporter compact
done

# ---- throughput: iat (C++) ------------------------------------------------------------------------------
bench=$build/benchmarks/bench_train_step_throughput
thr=()
[ "$threads" -gt 0 ] && thr=(--threads "$threads")
run_step iat_prn18 "$bench" --device "$device" --models prn18 --batch "$batch" --steps "$steps" --warmup "$warmup" \
  --image-size "$size" "${thr[@]}"
run_step iat_wrn34 "$bench" --device "$device" --models wrn-34-10 --batch "$batch" --steps "$wrn_steps" \
  --warmup "$wrn_warmup" --image-size "$size" "${thr[@]}"

# ---- throughput: the same PGD-AT step in Python ----------------------------------------------------------
py_rows=()
for precision in fp32 bf16-cl; do
  run_step "python_prn18_$precision" "$python" benchmarks/train_step_python.py --device "$device" --model prn18 \
    --batch "$batch" --steps "$steps" --warmup "$warmup" --precision "$precision" --image-size "$size" "${thr[@]}"
  py_rows+=("$out/python_prn18_$precision.log")
done
if [ "$compile" = 1 ]; then
  run_step python_prn18_compile "$python" benchmarks/train_step_python.py --device "$device" --model prn18 \
    --batch "$batch" --steps "$steps" --warmup "$warmup" --precision bf16-cl --compile --image-size "$size"
  py_rows+=("$out/python_prn18_compile.log")
fi

# ---- AutoAttack standard on a PRN-18 ---------------------------------------------------------------------
# A randomly initialised PRN-18 (TorchScript) and points labelled with its own predictions: clean accuracy
# 100 %, so every attack has points to work on. The figure is the time, not the robustness.
run_step aa_points "$python" - "$out" "$aa_n" "$size" <<'EOF'
import os, sys
sys.path.insert(0, os.path.join("tests", "python"))
import torch
from reference_models import PreActResNet18, randomise
out, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = PreActResNet18()
randomise(net, 1)
net.eval()
x = torch.rand(n, 3, size, size)
with torch.no_grad():
    y = net(x).argmax(1)
torch.jit.save(torch.jit.script(net), os.path.join(out, "aa_model.pt"))
torch.save({"x": x, "y": y}, os.path.join(out, "aa_points.pt"))
EOF
run_step aa_iat "$build/examples/iat-eval" --model "$out/aa_model.pt" --data "$out/aa_points.pt" --eps 8/255 \
  --batch-size "$aa_bs" --device "$device" "${aa_budget[@]}" --quiet --no-report --out "$out/aa_iat.json"
if [ -n "${AUTOATTACK_REF:-}" ]; then
  run_step aa_reference "$python" scripts/aa_agreement/run_reference.py --ref "$AUTOATTACK_REF" \
    --model "$out/aa_model.pt" --data "$out/aa_points.pt" --eps "$("$python" -c 'print(8/255)')" --bs "$aa_bs" \
    --device "$device" --out "$out/aa_reference.json"
fi

fi  # built

# ---- gpu_check.json -------------------------------------------------------------------------------------
steps_file=$out/steps.jsonl
printf '%s\n' "${steps_json[@]}" > "$steps_file"
"$python" - "$out" "$mode" "$gpu_name" "$torch_version" "$steps_file" <<'EOF'
import glob, json, os, sys
out, mode, gpu, torch_version, steps_file = sys.argv[1:6]
def rows(path):
    found = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                found.append(json.loads(line))
    return found
iat = rows(os.path.join(out, "iat_prn18.log")) + rows(os.path.join(out, "iat_wrn34.log"))
python = []
for path in sorted(glob.glob(os.path.join(out, "python_prn18_*.log"))):
    python += rows(path)
epoch = {}
for r in iat:
    if r["model"] == "prn18" and r["method"] == "pgd-at":
        epoch[r["precision"]] = round(50000 / r["images_per_second"], 1)
ratio = {}
for p in python:
    if "error" in p:
        continue
    match = [r for r in iat if r["model"] == "prn18" and r["method"] == "pgd-at" and r["precision"] == p["precision"]]
    if match:
        key = p["precision"] + ("+compile" if p["compile"] else "")
        ratio[key] = round(match[0]["step_ms"] / p["step_ms"], 3)
autoattack = {}
for name in ("aa_iat", "aa_reference"):
    path = os.path.join(out, name + ".json")
    if os.path.exists(path):
        r = json.load(open(path))
        autoattack[name[3:]] = {k: r.get(k) for k in ("robust_accuracy", "clean_accuracy", "total_seconds")}
        autoattack[name[3:]]["per_attack_seconds"] = {s["attack"]: s["seconds"] for s in r.get("steps", [])}
if "iat" in autoattack and "reference" in autoattack:
    autoattack["iat_over_reference_time"] = round(autoattack["iat"]["total_seconds"] /
                                                  autoattack["reference"]["total_seconds"], 3)
report = {
    "mode": mode, "gpu": gpu, "torch": torch_version,
    "steps": rows(steps_file),
    "iat_train_steps": iat,
    "python_pgd_at_steps": python,
    "iat_over_python_step_time_prn18_pgd_at": ratio,
    "projected_cifar10_epoch_seconds_prn18_pgd_at": epoch,
    "autoattack_prn18": autoattack,
}
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(report, f, indent=2)
print(json.dumps({k: report[k] for k in ("mode", "gpu", "torch", "projected_cifar10_epoch_seconds_prn18_pgd_at",
                                          "iat_over_python_step_time_prn18_pgd_at", "autoattack_prn18")}, indent=2))
EOF
note "wrote $out/gpu_check.json"
if [ $failed -ne 0 ]; then
  note "some steps failed (see the rc fields in gpu_check.json and their logs)"
  exit 1
fi
