#!/usr/bin/env bash
# End-to-end checks of iat-eval on tiny TorchScript models (tests/eval/make_fixtures.py), one ctest entry
# per case:
#   iat_eval_test.sh <iat-eval binary> <python with torch> <case>
# Cases: state (a state file written under other settings is refused, each difference named;
# --state-mismatch-ok continues and reports them), resume (an evaluation killed with SIGKILL and resumed from
# --state ends with the flags, re-checked accuracy and maximal perturbation of an uninterrupted run), signal
# (SIGINT with --state: the running batch is written, exit 130, no temporary file, the same command resumes),
# nonfinite (NaN logits stop the run with the number of points; --nonfinite-as-broken counts them broken),
# badinput (a model that fails on the points' shape, a file of 0 points, usage errors: exit 2 with one readable line,
# never an abort), out (an unwritable --out is refused before the evaluation, an existing report is kept).
set -euo pipefail
BIN=$1
PY=$2
CASE=$3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iat_eval_test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_rc CODE LOG CMD...: runs CMD with its output in LOG; fails unless it exits with CODE.
expect_rc() {
  local want=$1 log=$2 rc=0
  shift 2
  "$@" > "$log" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || { cat "$log"; fail "expected exit $want, got $rc: $*"; }
}
expect_in() { grep -q -- "$2" "$1" || { cat "$1"; fail "'$2' not in $1"; }; }
# field FILE KEY: a top-level value of a JSON report.
field() { "$PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]]))' "$1" "$2"; }

"$PY" "$(dirname "$0")/make_fixtures.py" "$WORK"
M=$WORK/model.pt
P=$WORK/points.pt
QUICK=(--attacks apgd-ce,square --apgd-steps 20 --square-queries 200 --batch-size 8 --quiet)

case "$CASE" in
  state)
    expect_rc 0 "$WORK/a.log" "$BIN" --model "$M" --data "$P" --eps 0.05 "${QUICK[@]}" --state "$WORK/s" --out "$WORK/a.json"
    expect_rc 2 "$WORK/b.log" "$BIN" --model "$M" --data "$P" --eps 0.3 "${QUICK[@]}" --state "$WORK/s" --out "$WORK/b.json"
    expect_in "$WORK/b.log" "iat-eval: error:"
    expect_in "$WORK/b.log" "eps"
    [ ! -e "$WORK/b.json" ] || fail "a refused run wrote a report"
    # Another model is another identity, even with the same settings.
    cp "$WORK/nan_model.pt" "$WORK/other.pt"
    expect_rc 2 "$WORK/c2.log" "$BIN" --model "$WORK/other.pt" --data "$P" --eps 0.05 "${QUICK[@]}" --state "$WORK/s" --nonfinite-as-broken
    expect_in "$WORK/c2.log" "model"
    # Forced: the run goes on, and the report lists what differed.
    expect_rc 0 "$WORK/d.log" "$BIN" --model "$M" --data "$P" --eps 0.3 "${QUICK[@]}" --state "$WORK/s" --state-mismatch-ok --out "$WORK/d.json"
    [ "$(field "$WORK/d.json" state_mismatch)" != "[]" ] || fail "the forced run does not report the mismatch"
    ;;
  resume)
    expect_rc 0 "$WORK/full.log" "$BIN" --model "$M" --data "$P" --eps 0.05 "${QUICK[@]}" --out "$WORK/full.json"
    # Kill the same evaluation with SIGKILL once its state file holds a batch, then resume it.
    "$BIN" --model "$M" --data "$P" --eps 0.05 "${QUICK[@]}" --state "$WORK/s" --out "$WORK/r.json" > "$WORK/k.log" 2>&1 &
    pid=$!
    for _ in $(seq 400); do [ -e "$WORK/s" ] && break; sleep 0.01; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -e "$WORK/s" ] || fail "no state file was written"
    expect_rc 0 "$WORK/r.log" "$BIN" --model "$M" --data "$P" --eps 0.05 "${QUICK[@]}" --state "$WORK/s" --out "$WORK/r.json"
    for key in robust_flags robust_flags_rechecked robust_accuracy robust_accuracy_rechecked max_perturbation clean_accuracy; do
      [ "$(field "$WORK/full.json" $key)" = "$(field "$WORK/r.json" $key)" ] ||
        fail "$key differs after the resume: $(field "$WORK/full.json" $key) vs $(field "$WORK/r.json" $key)"
    done
    ls "$WORK"/s.tmp 2>/dev/null && fail "a temporary state file was left"
    ;;
  signal)
    # SIGINT with --state: the running batch finishes and is written, exit 130 with one line saying where it
    # stopped, no temporary file; the same command resumes to an uninterrupted run's result.
    ONE=(--attacks apgd-ce,square --apgd-steps 20 --square-queries 200 --batch-size 1)
    expect_rc 0 "$WORK/full.log" "$BIN" --model "$M" --data "$P" --eps 0.05 "${ONE[@]}" --quiet --out "$WORK/full.json"
    "$BIN" --model "$M" --data "$P" --eps 0.05 "${ONE[@]}" --quiet --state "$WORK/s" --out "$WORK/r.json" > "$WORK/i.log" 2>&1 &
    pid=$!
    for _ in $(seq 400); do [ -e "$WORK/s" ] && break; sleep 0.01; done
    [ -e "$WORK/s" ] || fail "no state file was written"
    kill -INT "$pid"
    rc=0
    wait "$pid" || rc=$?
    [ "$rc" = 130 ] || { cat "$WORK/i.log"; fail "SIGINT: expected exit 130, got $rc"; }
    expect_in "$WORK/i.log" "iat-eval: stopped by SIGINT after apgd-ce batch"
    [ ! -e "$WORK/r.json" ] || fail "a stopped run wrote a report"
    ls "$WORK"/s.tmp 2>/dev/null && fail "SIGINT left a temporary state file"
    expect_rc 0 "$WORK/r.log" "$BIN" --model "$M" --data "$P" --eps 0.05 "${ONE[@]}" --state "$WORK/s" --out "$WORK/r.json"
    expect_in "$WORK/r.log" "resumed from"
    for key in robust_flags robust_flags_rechecked robust_accuracy robust_accuracy_rechecked max_perturbation; do
      [ "$(field "$WORK/full.json" $key)" = "$(field "$WORK/r.json" $key)" ] ||
        fail "$key differs after the resume: $(field "$WORK/full.json" $key) vs $(field "$WORK/r.json" $key)"
    done
    ;;
  nonfinite)
    expect_rc 2 "$WORK/a.log" "$BIN" --model "$WORK/nan_model.pt" --data "$P" --eps 0.05 "${QUICK[@]}" --out "$WORK/a.json"
    expect_in "$WORK/a.log" "non-finite logits"
    expect_in "$WORK/a.log" "16 of 32"
    [ ! -e "$WORK/a.json" ] || fail "a run stopped for NaN logits wrote a report"
    expect_rc 0 "$WORK/b.log" "$BIN" --model "$WORK/nan_model.pt" --data "$P" --eps 0.05 "${QUICK[@]}" --nonfinite-as-broken --out "$WORK/b.json"
    [ "$(field "$WORK/b.json" nonfinite_points)" = 16 ] || fail "nonfinite_points: $(field "$WORK/b.json" nonfinite_points)"
    "$PY" - "$WORK/b.json" <<'EOF' || fail "the NaN points count as robust"
import json, sys
r = json.load(open(sys.argv[1]))
flags = r["robust_flags"]
assert all(flags[i] == 0 for i in range(0, 32, 2)), flags
assert r["robust_accuracy"] <= 0.5, r["robust_accuracy"]
EOF
    ;;
  badinput)
    expect_rc 2 "$WORK/a.log" "$BIN" --model "$WORK/rgb_model.pt" --data "$P" --eps 0.05 "${QUICK[@]}"
    expect_in "$WORK/a.log" "iat-eval: error: the model fails on inputs of shape"
    expect_rc 2 "$WORK/b.log" "$BIN" --model "$M" --data "$WORK/empty.pt" --eps 0.05 "${QUICK[@]}"
    expect_in "$WORK/b.log" "0 points"
    expect_rc 2 "$WORK/c.log" "$BIN" --model "$M" --data "$P" --n -1
    expect_in "$WORK/c.log" "--n must be >= 1"
    expect_rc 2 "$WORK/d.log" "$BIN" --model "$M" --data "$P" --batch-size many
    expect_rc 2 "$WORK/e.log" "$BIN" --model "$M" --data "$P" --no-such-flag
    expect_rc 2 "$WORK/f.log" "$BIN" --model "$WORK/absent.pt" --data "$P"
    expect_in "$WORK/f.log" "absent.pt"
    for log in a b c d e f; do
      grep -q "terminate called\|Aborted\|core dumped" "$WORK/$log.log" && fail "$log: an abort"
      [ "$(grep -c . "$WORK/$log.log")" -le 3 ] || { cat "$WORK/$log.log"; fail "$log: more than a short message"; }
    done
    ;;
  out)
    start=$(date +%s)
    expect_rc 2 "$WORK/a.log" "$BIN" --model "$M" --data "$P" --eps 0.05 --out "$WORK/no/such/folder/r.json"
    expect_in "$WORK/a.log" "--out"
    mkdir "$WORK/folder"
    expect_rc 2 "$WORK/b.log" "$BIN" --model "$M" --data "$P" --eps 0.05 --out "$WORK/folder"
    expect_in "$WORK/b.log" "is a folder"
    expect_rc 2 "$WORK/c.log" "$BIN" --model "$M" --data "$P" --eps 0.05 --save-adv "$WORK/no/adv.pt"
    expect_in "$WORK/c.log" "--save-adv"
    # Refused before any attack ran: the standard evaluation would take far longer than this.
    [ $(( $(date +%s) - start )) -lt 20 ] || fail "the unwritable outputs were found only after the evaluation"
    # A refused run leaves an existing report as it was.
    echo '{"kept": true}' > "$WORK/r.json"
    expect_rc 2 "$WORK/d.log" "$BIN" --model "$WORK/rgb_model.pt" --data "$P" --eps 0.05 --out "$WORK/r.json"
    [ "$(cat "$WORK/r.json")" = '{"kept": true}' ] || fail "a failed run changed the existing report"
    # --save-adv is read by torch.load with its defaults (weights_only in PyTorch 2.6+).
    expect_rc 0 "$WORK/e.log" "$BIN" --model "$M" --data "$P" --eps 0.05 "${QUICK[@]}" --save-adv "$WORK/adv.pt"
    "$PY" -c 'import sys, torch; d = torch.load(sys.argv[1]); assert d["x_adv"].shape == (32, 1, 8, 8), d["x_adv"].shape' "$WORK/adv.pt" ||
      fail "--save-adv is not readable by torch.load"
    ;;
  *) fail "unknown case $CASE" ;;
esac
echo "ok: $CASE"
