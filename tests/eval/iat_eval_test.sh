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
# never an abort), out (an unwritable --out is refused before the evaluation, an existing report is kept, the
# report's picture is drawn beside it, or the command to draw it is printed),
# torchrun (2 ranks write the report of 1 process; they resume from one process's --state and one process from
# theirs; what is refused; other points on one rank; a killed rank).
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
QUICK=(--attacks apgd-ce,square --apgd-steps 20 --square-queries 200 --batch-size 8 --quiet --no-report)

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
    ONE=(--attacks apgd-ce,square --apgd-steps 20 --square-queries 200 --batch-size 1 --no-report)
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
    # The clean accuracy over all points counts a NaN row as wrong, whether AutoAttack's clean pass saw the
    # point or (past --autoattack-n) the count after it. On these points the NaN rows are labelled 0, the class
    # argmax gives a row of NaNs: counting argmax == y alone would call them correct.
    "$PY" -c 'import sys, torch; p = torch.load(sys.argv[1]); p["y"][0::2] = 0; torch.save(p, sys.argv[2])' "$P" "$WORK/zeros.pt"
    for n in 32 8; do
      expect_rc 0 "$WORK/c$n.log" "$BIN" --model "$WORK/nan_model.pt" --data "$WORK/zeros.pt" --eps 0.05 "${QUICK[@]}" \
        --nonfinite-as-broken --autoattack-n $n --also pgd20 --out "$WORK/c$n.json"
    done
    "$PY" - "$WORK/nan_model.pt" "$WORK/zeros.pt" "$WORK/c32.json" "$WORK/c8.json" <<'EOF' || fail "clean accuracy over all points"
import json, sys, torch
model, points = torch.jit.load(sys.argv[1]), torch.load(sys.argv[2])
with torch.no_grad():
    logits = model(points["x"])
assert (logits[0::2].argmax(1) == 0).all()  # what makes the check below able to fail
want = ((logits.argmax(1) == points["y"]) & torch.isfinite(logits).all(1)).float().mean().item()
for path in sys.argv[3:]:
    r = json.load(open(path))
    assert abs(r["clean_acc"] - want) < 1e-12, (path, r["clean_acc"], want)
    # --also pgd20 counts the NaN rows as wrong too (its count read them as class 0, robust).
    assert r["pgd20_acc"] <= want + 1e-12, (path, r["pgd20_acc"], want)
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
    # A path the report cannot record (not UTF-8) is refused before the evaluation, not after it (where
    # writing the report failed and the result was lost).
    ln -s "$M" "$WORK/$(printf 'm\301.pt')"
    expect_rc 2 "$WORK/g.log" "$BIN" --model "$WORK/$(printf 'm\301.pt')" --data "$P" --eps 0.05 "${QUICK[@]}" --out "$WORK/g.json"
    expect_in "$WORK/g.log" "--model: must be UTF-8 text"
    [ ! -e "$WORK/g.json" ] || fail "a report was written for a refused model path"
    # NaN in the points is refused as values outside [0, 1] (NaN passed the range check), also past --autoattack-n.
    "$PY" -c 'import sys, torch; p = torch.load(sys.argv[1]); p["x"][20, 0, 0, 0] = float("nan"); torch.save(p, sys.argv[2])' "$P" "$WORK/nan_points.pt"
    expect_rc 2 "$WORK/h.log" "$BIN" --model "$M" --data "$WORK/nan_points.pt" --eps 0.05 "${QUICK[@]}" --autoattack-n 8
    expect_in "$WORK/h.log" "x must lie in \[0, 1\]"
    # A version name given to --attacks is the version (it failed with "unknown attack 'standard'").
    expect_rc 0 "$WORK/i.log" "$BIN" --model "$M" --data "$P" --eps 0.05 --attacks standard --n 2 --batch-size 2 --quiet --no-report --out "$WORK/i.json"
    [ "$(field "$WORK/i.json" version)" = '"standard"' ] || fail "version: $(field "$WORK/i.json" version)"
    [ "$(field "$WORK/i.json" attacks)" = '["apgd-ce", "apgd-t", "fab-t", "square"]' ] || fail "attacks: $(field "$WORK/i.json" attacks)"
    for log in a b c d e f g h; do
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
    # The report's picture (the AutoAttack breakdown) beside it, drawn by scripts/report.py at the end.
    quick_drawn=("${QUICK[@]}")
    unset 'quick_drawn[${#quick_drawn[@]}-1]'  # without --no-report
    expect_rc 0 "$WORK/f.log" "$BIN" --model "$M" --data "$P" --eps 0.05 "${quick_drawn[@]}" \
      --also pgd20 --out "$WORK/drawn.json"
    [ -s "$WORK/drawn.png" ] && [ -s "$WORK/drawn.svg" ] || { cat "$WORK/f.log"; fail "no picture beside the --out report"; }
    expect_in "$WORK/f.log" "report.py: wrote $WORK/drawn.svg"
    # Without a usable report tool: the same exit status, and the command that draws it later.
    IAT_REPORT_SCRIPT=$WORK/none.py expect_rc 0 "$WORK/g.log" "$BIN" --model "$M" --data "$P" --eps 0.05 \
      "${quick_drawn[@]}" --out "$WORK/undrawn.json"
    expect_in "$WORK/g.log" "iat-eval: warning: no pictures drawn (no report tool at '$WORK/none.py'); draw them later with: .* $WORK/none.py $WORK/undrawn.json"
    [ -s "$WORK/undrawn.json" ] && [ ! -e "$WORK/undrawn.png" ] || fail "expected the report without its picture"
    ;;
  torchrun)
    # Under torchrun (docs/distributed.md, "iat-eval on several processes"): 2 ranks share the batches and
    # rank 0 writes the one-process report, flag for flag and x_adv bit for bit; they resume from a state file
    # of one process killed mid-run and one process from theirs, with the same report; one process resumes
    # within an attack from the state file of 2 ranks killed in it; a seed from the clock
    # is refused; ranks given other points, another --eps or --batch-size stop, naming it; a killed rank stops the other.
    if [ -x "$(dirname "$PY")/torchrun" ]; then LAUNCH=("$(dirname "$PY")/torchrun"); else LAUNCH=("$PY" -m torch.distributed.run); fi
    LAUNCH+=(--redirects 2 --tee 2)  # Debian's 1.13 launcher on Python 3.11 needs them (docs/distributed.md)
    free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    RUN=(--model "$M" --data "$P" --eps 0.05 --attacks apgd-ce,apgd-t,square --apgd-steps 20 --square-queries 200
         --n-targets 3 --batch-size 8 --also pgd20 --dist-timeout 30 --no-report)
    expect_rc 0 "$WORK/one.log" "$BIN" "${RUN[@]}" --out "$WORK/one.json" --save-adv "$WORK/one_adv.pt"
    expect_rc 0 "$WORK/two.log" "${LAUNCH[@]}" --nproc_per_node 2 --master_port "$(free_port)" --no_python "$BIN" \
      "${RUN[@]}" --out "$WORK/two.json" --save-adv "$WORK/two_adv.pt"
    same_report() {  # same_report ONE.json ONE_adv.pt OTHER.json OTHER_adv.pt: flags, accuracies and x_adv equal
    "$PY" - "$1" "$3" "$2" "$4" <<'PY'
import json, sys, torch
one, two = (json.load(open(p)) for p in sys.argv[1:3])
for key in ("robust_flags", "robust_flags_rechecked", "robust_accuracy", "robust_accuracy_rechecked", "clean_accuracy",
            "max_perturbation", "also", "num_points"):
    assert one[key] == two[key], (key, one[key], two[key])
for a, b in zip(one["steps"], two["steps"]):
    assert (a["attack"], a["robust_flags"], a["attacked"]) == (b["attack"], b["robust_flags"], b["attacked"]), (a, b)
# Not a trivial comparison: some points fall to the attacks and some survive.
assert 0 < one["robust_accuracy"] < one["clean_accuracy"], (one["robust_accuracy"], one["clean_accuracy"])
x1, x2 = (torch.load(p)["x_adv"] for p in sys.argv[3:5])
assert torch.equal(x1, x2), (x1 - x2).abs().max()
print("robust", one["robust_accuracy"], "pgd20", one["also"]["pgd20"]["accuracy"])
PY
    }
    same_report "$WORK/one.json" "$WORK/one_adv.pt" "$WORK/two.json" "$WORK/two_adv.pt" || fail "2 processes differ from 1"
    [ "$(field "$WORK/one.json" distributed)" = '{"backend": "none", "world_size": 1}' ] || fail "one process: $(field "$WORK/one.json" distributed)"
    [ "$(field "$WORK/two.json" distributed)" = '{"backend": "gloo", "world_size": 2}' ] || fail "two: $(field "$WORK/two.json" distributed)"
    [ "$(grep -c "AutoAttack (counted)" "$WORK/two.log")" = 1 ] || { cat "$WORK/two.log"; fail "not rank 0 alone printed the table"; }
    # (the launcher exits 1 when a rank fails; each rank's own status 2 is in its "exitcode" line)
    # --state: one process killed with SIGKILL once its state file holds something, 2 ranks resuming from it,
    # then one process resuming from the file rank 0 wrote (every attack done): the uninterrupted report.
    "$BIN" "${RUN[@]}" --state "$WORK/state" > "$WORK/s1.log" 2>&1 &
    s1=$!
    for _ in $(seq 200); do [ -e "$WORK/state" ] && break; sleep 0.05; done
    kill -9 $s1 2>/dev/null || true
    wait $s1 2>/dev/null || true
    [ -e "$WORK/state" ] || { cat "$WORK/s1.log"; fail "no state file was written"; }
    expect_rc 0 "$WORK/s2.log" "${LAUNCH[@]}" --nproc_per_node 2 --master_port "$(free_port)" --no_python "$BIN" \
      "${RUN[@]}" --state "$WORK/state" --out "$WORK/s2.json" --save-adv "$WORK/s2_adv.pt"
    expect_in "$WORK/s2.log" "resumed from"
    same_report "$WORK/one.json" "$WORK/one_adv.pt" "$WORK/s2.json" "$WORK/s2_adv.pt" || fail "2 processes resumed differ"
    expect_rc 0 "$WORK/s3.log" "$BIN" "${RUN[@]}" --state "$WORK/state" --out "$WORK/s3.json" --save-adv "$WORK/s3_adv.pt"
    expect_in "$WORK/s3.log" "resumed from .*done apgd-ce,apgd-t,square"
    same_report "$WORK/one.json" "$WORK/one_adv.pt" "$WORK/s3.json" "$WORK/s3_adv.pt" || fail "1 process resumed differs"
    # 2 ranks killed with SIGKILL within APGD-CE (8 batches of 4 points, 0.7 s each; rank 0 has logged batch
    # 3, so the state file holds at least the first round of 2 batches): one process resumes within APGD-CE,
    # from the last round the file holds, and ends with the uninterrupted report.
    SLOW=(--model "$M" --data "$P" --eps 0.05 --attacks apgd-ce,square --apgd-steps 3000 --square-queries 200
          --batch-size 4 --also pgd20 --dist-timeout 30 --no-report)
    expect_rc 0 "$WORK/u.log" "$BIN" "${SLOW[@]}" --out "$WORK/u.json" --save-adv "$WORK/u_adv.pt"
    port=$(free_port)
    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$BIN" "${SLOW[@]}" --state "$WORK/round" > "$WORK/w0.log" 2>&1 &
    w0=$!
    RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$BIN" "${SLOW[@]}" --state "$WORK/round" > /dev/null 2>&1 &
    w1=$!
    for _ in $(seq 600); do grep -q "apgd-ce - 3/8" "$WORK/w0.log" && break; sleep 0.05; done
    kill -9 $w0 $w1 2>/dev/null || true
    wait $w0 $w1 2>/dev/null || true
    expect_in "$WORK/w0.log" "apgd-ce - 3/8"
    expect_rc 0 "$WORK/w.log" "$BIN" "${SLOW[@]}" --state "$WORK/round" --out "$WORK/w.json" --save-adv "$WORK/w_adv.pt"
    expect_in "$WORK/w.log" "resumed from .*apgd-ce after [246] batch(es)"
    same_report "$WORK/u.json" "$WORK/u_adv.pt" "$WORK/w.json" "$WORK/w_adv.pt" || fail "resumed within an attack: differs"
    expect_rc 1 "$WORK/seed.log" "${LAUNCH[@]}" --nproc_per_node 2 --master_port "$(free_port)" --no_python "$BIN" \
      "${RUN[@]}" --seed -1
    expect_in "$WORK/seed.log" "--seed must be >= 0 under torchrun"
    # Rank 1 evaluating other points (--n), or with another --eps or --batch-size: both stop before any attack,
    # naming what differs (another eps would be merged into one report, another batch size hang).
    mismatch() {  # mismatch WHAT RANK1-FLAGS...: rank 1 runs with these flags, both ranks exit 2 naming WHAT
      local what=$1 port rc m0
      shift
      port=$(free_port)
      RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$BIN" "${RUN[@]}" > "$WORK/m0.log" 2>&1 &
      m0=$!
      rc=0
      RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$BIN" "$@" > "$WORK/m1.log" 2>&1 || rc=$?
      [ $rc = 2 ] || { cat "$WORK/m1.log"; fail "rank 1 with other $what: expected exit 2, got $rc"; }
      rc=0
      wait $m0 || rc=$?
      [ $rc = 2 ] || { cat "$WORK/m0.log"; fail "rank 0 beside other $what: expected exit 2, got $rc"; }
      expect_in "$WORK/m0.log" "under torchrun: rank 1 differs from rank 0 in $what"
      expect_in "$WORK/m1.log" "under torchrun: rank 1 differs from rank 0 in $what"
    }
    mismatch "points" "${RUN[@]}" --n 16
    mismatch "--eps" "${RUN[@]/0.05/0.04}"
    mismatch "--batch-size" "${RUN[@]/#8/4}"
    # A rank killed mid-evaluation: the other exits 2 naming the lost rank. It notices at its next exchange
    # (after its share of the attack: a few seconds here, about 6 s of APGD for the 32 points in one process)
    # and at once then, since Gloo sees the connection close; a rank that hangs is waited for --dist-timeout.
    LONG=(--model "$M" --data "$P" --eps 0.05 --attacks apgd-ce --apgd-steps 3000 --batch-size 8 --dist-timeout 20)
    port=$(free_port)
    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$BIN" "${LONG[@]}" > "$WORK/k0.log" 2>&1 &
    k0=$!
    RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$BIN" "${LONG[@]}" > /dev/null 2>&1 &
    k1=$!
    for _ in $(seq 100); do grep -q "AutoAttack on" "$WORK/k0.log" && break; sleep 0.1; done
    sleep 0.5
    kill -9 $k1
    rc=0
    wait $k0 || rc=$?
    [ $rc = 2 ] || { cat "$WORK/k0.log"; fail "rank 0 must exit 2 when rank 1 dies, got $rc"; }
    expect_in "$WORK/k0.log" "rank 0 of 2 lost the other ranks"
    ;;
  *) fail "unknown case $CASE" ;;
esac
echo "ok: $CASE"
