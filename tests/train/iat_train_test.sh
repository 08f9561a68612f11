#!/usr/bin/env bash
# End-to-end checks of iat-train on tiny synthetic data, one ctest entry per case:
#   iat_train_test.sh <iat-train binary> <case> [method]
# Cases: method (a two-epoch run of one method), resume (kill-and-resume equals an uninterrupted run, bit
# for bit), signal (SIGINT writes a checkpoint that resumes), mismatch (a checkpoint of another
# configuration is refused), nan (a NaN loss stops the run and leaves the last checkpoint intact), metrics
# (metrics.jsonl parses and holds every field), presets (every preset parses).
set -euo pipefail
BIN=$1
CASE=$2
METHOD=${3:-uiat}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iat_train_test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

TINY=(--data synthetic --model small-cnn --train-subset 128 --test-subset 32 --batch-size 32 --eps 0.1
      --step-size 0.025 --steps 2 --inv-eps 0.05 --inv-steps 2 --momentum-epoch 1 --one-off-epoch 1
      --eval-pgd-steps 2 --plain-progress)

case "$CASE" in
  method)
    "$BIN" "${TINY[@]}" --method "$METHOD" --epochs 2 --out "$WORK/run" > "$WORK/log" 2>&1 || { cat "$WORK/log"; fail "$METHOD run failed"; }
    for f in checkpoint.pt metrics.jsonl model.pt summary.json curves.png figure1.png config.json; do
      [ -s "$WORK/run/$f" ] || fail "$METHOD: $f missing"
    done
    [ "$(wc -l < "$WORK/run/metrics.jsonl")" = 2 ] || fail "$METHOD: expected 2 metric rows"
    grep -q '^epoch 2/2: loss [0-9.]*, natural' "$WORK/log" || fail "$METHOD: no epoch summary line"
    ;;
  resume)
    "$BIN" "${TINY[@]}" --method "$METHOD" --epochs 2 --out "$WORK/full" > /dev/null
    set +e
    "$BIN" "${TINY[@]}" --method "$METHOD" --epochs 2 --out "$WORK/cut" --stop-after-steps 3 > "$WORK/log1"
    rc=$?
    set -e
    [ $rc = 130 ] || fail "a stopped run must exit 130, got $rc"
    grep -q "continue with --resume" "$WORK/log1" || fail "no resume hint"
    "$BIN" "${TINY[@]}" --method "$METHOD" --epochs 2 --out "$WORK/cut" --resume > "$WORK/log2"
    grep -q "resumed from" "$WORK/log2" || fail "resume not reported"
    cmp "$WORK/full/model.pt" "$WORK/cut/model.pt" || fail "$METHOD: resumed weights differ from the uninterrupted run"
    # The per-epoch metrics agree too (the interrupted epoch's running sums travel in the checkpoint).
    /usr/bin/python3 - "$WORK/full/metrics.jsonl" "$WORK/cut/metrics.jsonl" <<'PY' || fail "$METHOD: resumed metrics differ"
import json, sys
full, cut = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
drop = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
assert [drop(r) for r in full] == [drop(r) for r in cut], (full, cut)
PY
    ;;
  signal)
    "$BIN" "${TINY[@]}" --method pgd-at --epochs 200 --out "$WORK/run" > "$WORK/log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do [ -s "$WORK/run/metrics.jsonl" ] && break; sleep 0.1; done
    kill -INT $pid
    set +e
    wait $pid
    rc=$?
    set -e
    [ $rc = 130 ] || { cat "$WORK/log"; fail "SIGINT must end the run with 130, got $rc"; }
    grep -q "checkpoint written" "$WORK/log" || fail "no checkpoint message after SIGINT"
    "$BIN" "${TINY[@]}" --method pgd-at --epochs 200 --out "$WORK/run" --resume --stop-after-steps 1 > "$WORK/log2" || [ $? = 130 ]
    grep -q "resumed from" "$WORK/log2" || fail "the checkpoint written on SIGINT does not resume"
    ;;
  mismatch)
    "$BIN" "${TINY[@]}" --method pgd-at --epochs 1 --out "$WORK/run" > /dev/null
    set +e
    "$BIN" "${TINY[@]}" --method pgd-at --model prn18 --epochs 2 --out "$WORK/run" --resume > "$WORK/log" 2>&1
    rc=$?
    set -e
    [ $rc = 1 ] || fail "a mismatched checkpoint must be refused with exit 1, got $rc"
    grep -q "written for model = \"small-cnn\", but this run has model = \"prn18\"; refusing" "$WORK/log" || { cat "$WORK/log"; fail "unclear refusal"; }
    set +e
    "$BIN" "${TINY[@]}" --method pgd-at --epochs 2 --out "$WORK/none" --resume > "$WORK/log" 2>&1
    rc=$?
    set -e
    [ $rc = 1 ] && grep -q "no checkpoint at" "$WORK/log" || fail "resume without a checkpoint must say so"
    ;;
  nan)
    # 4 batches per epoch: step 6 is in the second epoch, after the first epoch's checkpoint.
    set +e
    "$BIN" "${TINY[@]}" --method uiat --epochs 3 --out "$WORK/run" --inject-nan-at-step 6 > "$WORK/log" 2>&1
    rc=$?
    set -e
    [ $rc = 3 ] || { cat "$WORK/log"; fail "a NaN loss must stop the run with 3, got $rc"; }
    grep -q "non-finite loss (nan) at step 6" "$WORK/log" || { cat "$WORK/log"; fail "the message must name the step"; }
    [ "$(wc -l < "$WORK/run/metrics.jsonl")" = 1 ] || fail "expected exactly the first epoch's metrics"
    "$BIN" "${TINY[@]}" --method uiat --epochs 3 --out "$WORK/run" --resume --stop-after-steps 5 > "$WORK/log2" || [ $? = 130 ]
    grep -q "resumed from .* at epoch 2, batch 0, step 4" "$WORK/log2" || { cat "$WORK/log2"; fail "the last good checkpoint (end of epoch 1) is not intact"; }
    ;;
  metrics)
    "$BIN" "${TINY[@]}" --method uiat --epochs 2 --ema-decay 0.9 --out "$WORK/run" > /dev/null
    /usr/bin/python3 - "$WORK/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["epoch"] for r in rows] == [1, 2], rows
for r in rows:
    for k in ("step", "train_loss", "train_adv_acc", "lr", "natural_acc", "pgd2_acc", "seconds", "images_per_second",
              "ema_natural_acc", "ema_pgd2_acc"):
        assert k in r, (k, r)
    assert 0 <= r["natural_acc"] <= 1 and 0 <= r["pgd2_acc"] <= r["natural_acc"] + 1e-9, r
assert rows[1]["step"] == 8, rows
PY
    ;;
  presets)
    "$BIN" --list-presets > "$WORK/list" || fail "--list-presets found an inconsistent preset"
    n=$(grep -c '^[a-z]' "$WORK/list")
    [ "$n" -gt 80 ] || fail "expected the paper's presets, got $n"
    for p in cifar10-uiat-prn18 svhn-uiat-wrn34 cifar100-ddpm-uiat-wrn28 fashion-uiat-cnn; do
      grep -qx "$p" "$WORK/list" || fail "preset $p missing"
    done
    # A preset sets its values and a flag overrides one of them.
    "$BIN" --preset svhn-uiat-wrn34 --epochs 7 --print-config > "$WORK/cfg.json"
    /usr/bin/python3 - "$WORK/cfg.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["dataset"] == "svhn" and c["model"] == "wrn-34-10" and c["method"] == "uiat", c
assert abs(c["step_size"] - 1 / 255) < 1e-12 and c["lambda"] == 3.0 and c["augment"] is False, c
assert c["epochs"] == 7, c  # the flag wins over the preset's 30
PY
    set +e
    "$BIN" --preset no-such-preset > "$WORK/log" 2>&1
    rc=$?
    set -e
    [ $rc = 2 ] && grep -q "unknown preset 'no-such-preset'" "$WORK/log" || fail "unknown presets must be refused"
    ;;
  *) fail "unknown case $CASE" ;;
esac
echo "PASS: $CASE $METHOD"
