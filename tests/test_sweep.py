#!/usr/bin/python3
"""ctest sweep_tool: scripts/sweep.py end to end with the real iat-train and iat-eval on a tiny Fashion-MNIST
setting (64 training images, one epoch; 16 test points, AutoAttack with 2 iterations on 8):

    test_sweep.py SWEEP_PY IAT_TRAIN IAT_EVAL [CASE...]

Cases: plan (the runs a sweep makes: values, the shared base run, T and T' from the epochs, T' under
uiat-one-off), refusals (a parameter the method ignores, an unknown flag, a flag the sweep sets, another sweep
in the same folder, bad numbers), sweep (every run trained with its value, evaluated, and reported with
eval.json's numbers), resume (a finished run is kept, a run missing its evaluation is only evaluated, one with
a checkpoint resumes, one stopped before its first checkpoint starts over), failure (a failing run is named,
the others still run, exit 1), signal (SIGINT stops the sweep with 130 and the same command finishes it).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SWEEP, TRAIN, EVAL = sys.argv[1:4]
CASES = sys.argv[4:] or ["plan", "refusals", "sweep", "resume", "failure", "signal"]
PYTHON = sys.executable
# Batches of 16: 4 steps, so that steps after UIAT's first delta update train (one-cycle step s runs at
# t = (s + 1) / S: of 2 steps only the first, before any delta update, would move the weights).
TINY = ["--epochs", "1", "--train-subset", "64", "--test-subset", "16", "--batch-size", "16", "--steps", "1",
        "--inv-steps", "1", "--eval-pgd-steps", "1"]
EVAL_TINY = ["--eval-n", "16", "--autoattack-n", "8", "--eval-args", "--apgd-steps 2 --fab-steps 2 --square-queries 10"]
failures = []


def sweep(out, *args, train_args=(), evaluate=EVAL, check=None):
    cmd = [PYTHON, SWEEP, out, "--train", TRAIN, "--eval", evaluate, "--jobs", "1", "--threads", "1"] + list(args)
    cmd += ["--"] + list(train_args) if train_args else []
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check is not None and p.returncode != check:
        raise AssertionError(f"expected exit {check}, got {p.returncode}: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p


def read(path):
    with open(path) as f:
        return json.load(f)


def case_plan(work):
    p = sweep(os.path.join(work, "plan"), "--preset", "fashion-uiat-cnn", "--figure2", "--dry-run",
              train_args=["--epochs", "10", "--momentum-epoch", "5"], check=0)
    lines = dict(line.split(" (preset: ", 1) for line in p.stdout.splitlines() if " (preset: " in line)
    assert lines["beta"] == "1.0): 0 -> beta=0, 0.5 -> beta=0.5, 1 -> base, 2 -> beta=2, 4 -> beta=4", lines
    assert lines["gamma"] == "0.9): 0.5 -> gamma=0.5, 0.7 -> gamma=0.7, 0.9 -> base, 0.99 -> gamma=0.99", lines
    # T at 0, 1/4, 1/2, 3/4, 9/10 of 10 epochs; 5 is this command's T, the base run.
    assert lines["momentum-epoch"] == ("5): 0 -> momentum-epoch=0, 2 -> momentum-epoch=2, 5 -> base, "
                                       "7 -> momentum-epoch=7, 9 -> momentum-epoch=9"), lines
    # T' needs the one-off method; the preset's T' (1) is not on the grid, so its run is added.
    assert lines["one-off-epoch"].startswith("1): 2 -> method=uiat-one-off,one-off-epoch=2, "), lines
    assert lines["one-off-epoch"].endswith(", 9 -> method=uiat-one-off,one-off-epoch=9, 1 -> method=uiat-one-off"), lines
    assert "method=uiat-one-off: iat-train --preset fashion-uiat-cnn --epochs 10 --momentum-epoch 5 --method " \
           "uiat-one-off --out" in p.stdout, p.stdout
    # Fractions of a 2-epoch run collapse: T in {0, 1}, no repeats.
    p = sweep(os.path.join(work, "plan"), "--preset", "fashion-uiat-cnn", "--param", "momentum-epoch=0,1",
              "--param", "beta=1,3", "--dry-run", check=0)
    assert "momentum-epoch (preset: 1): 0 -> momentum-epoch=0, 1 -> base" in p.stdout, p.stdout
    assert "beta (preset: 1.0): 1 -> base, 3 -> beta=3" in p.stdout, p.stdout
    # One parameter of the grid.
    p = sweep(os.path.join(work, "plan"), "--preset", "fashion-uiat-cnn", "--figure2", "gamma", "--dry-run", check=0)
    assert [line.split(" ")[0] for line in p.stdout.splitlines() if " (preset: " in line] == ["gamma"], p.stdout
    p = sweep(os.path.join(work, "plan"), "--preset", "fashion-uiat-cnn", "--figure2", "delta", "--dry-run", check=2)
    assert "'delta' is not one of Figure 2's parameters" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(work, "plan")), "--dry-run wrote something"


def case_refusals(work):
    out = os.path.join(work, "refusals")
    checks = [
        (["--preset", "fashion-pgd-at-cnn", "--param", "gamma=0.5,0.7"], [],
         "method pgd-at does not use --gamma"),
        (["--preset", "fashion-uiat-cnn", "--param", "one-off-epoch=0,1"], [],
         "method uiat does not use --one-off-epoch"),
        (["--preset", "fashion-uiat-cnn", "--param", "betta=0.5"], [], "iat-train refused"),
        (["--preset", "fashion-uiat-cnn", "--param", "beta=-1"], [], "iat-train refused"),
        (["--preset", "fashion-uiat-cnn", "--param", "beta"], [], "expected FLAG=V1,V2"),
        (["--preset", "fashion-uiat-cnn", "--param", "beta=1,1"], [], "a value is repeated"),
        (["--preset", "fashion-uiat-cnn", "--param", "out=a,b"], [], "sets --out itself"),
        (["--preset", "fashion-uiat-cnn", "--param", "beta=0"], ["--out", "x"], "set by the sweep itself"),
        (["--preset", "fashion-uiat-cnn"], [], "nothing to sweep"),
        (["--preset", "fashion-uiat-cnn", "--param", "beta=0", "--jobs", "0"], [], "--jobs must be at least 1"),
        (["--preset", "fashion-uiat-cnn", "--param", "beta=0", "--eval-n", "4", "--autoattack-n", "8"], [],
         "--autoattack-n between 0 and it"),
        (["--preset", "no-such-preset", "--param", "beta=0"], [], "iat-train refused"),
    ]
    for args, train_args, message in checks:
        p = sweep(out, *args, train_args=train_args, check=2)
        assert message in p.stderr, f"{args}: expected '{message}' in:\n{p.stderr}"
    assert not os.path.exists(out), "a refused sweep wrote its folder"
    # A folder that holds another sweep is refused, naming what differs.
    os.makedirs(out)
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"tool": "iat-sweep", "preset": "fashion-uiat-cnn", "panels": [], "runs": {}}, f)
    p = sweep(out, "--preset", "fashion-uiat-cnn", "--param", "beta=0", check=2)
    assert "holds another sweep" in p.stderr and "panels" in p.stderr, p.stderr


def finished_sweep(work, name="sweep"):
    out = os.path.join(work, name)
    p = sweep(out, "--preset", "fashion-uiat-cnn", "--param", "beta=0,1", "--param", "gamma=0.5", *EVAL_TINY,
              train_args=TINY, check=0)
    return out, p


def case_sweep(work):
    out, p = finished_sweep(work)
    runs = sorted(d for d in os.listdir(out) if os.path.isdir(os.path.join(out, d)))
    assert runs == ["base", "beta=0", "gamma=0.5"], runs  # beta=1 is the preset's value: the base run
    manifest = read(os.path.join(out, "sweep.json"))
    assert manifest["panels"][0]["runs"] == ["beta=0", "base"], manifest
    assert manifest["panels"][1]["runs"] == ["gamma=0.5", "base"], manifest  # the preset's gamma added
    assert manifest["panels"][1]["values"] == ["0.5", "0.9"], manifest
    for run, beta, gamma in (("base", 1.0, 0.9), ("beta=0", 0.0, 0.9), ("gamma=0.5", 1.0, 0.5)):
        cfg = read(os.path.join(out, run, "config.json"))
        assert (cfg["beta"], cfg["gamma"], cfg["epochs"], cfg["train_subset"]) == (beta, gamma, 1, 64), (run, cfg)
        ev = read(os.path.join(out, run, "eval.json"))
        assert ev["test_examples"] == 16 and ev["autoattack_examples"] == 8, ev
        assert not os.path.exists(os.path.join(out, run, "eval.state")), "the finished evaluation's state was kept"
    report = read(os.path.join(out, "report.json"))
    for panel in report["panels"]:
        for row in panel["rows"]:
            ev = read(os.path.join(out, row["run"], "eval.json"))
            assert row["clean_acc"] == ev["clean_acc"] and row["autoattack_acc"] == ev["autoattack_acc"], row
    assert [r["value"] for r in report["panels"][0]["rows"]] == ["0", "1"], report
    for f in ("figure2.png", "figure2.svg", "report.md"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    text = open(os.path.join(out, "report.md")).read()
    ev = read(os.path.join(out, "beta=0", "eval.json"))
    assert f"| 0 | beta=0 | {100 * ev['clean_acc']:.2f} | {100 * ev['autoattack_acc']:.2f} |" in text, text
    # Training and evaluation are different runs: the three trained models differ.
    assert open(os.path.join(out, "base", "model.pt"), "rb").read() != \
        open(os.path.join(out, "beta=0", "model.pt"), "rb").read(), "beta changed nothing"


def case_resume(work):
    out, _ = finished_sweep(work, "resume")
    mtime = {r: os.path.getmtime(os.path.join(out, r, "checkpoint.pt")) for r in ("base", "beta=0", "gamma=0.5")}
    kept_eval = open(os.path.join(out, "base", "eval.json")).read()
    os.remove(os.path.join(out, "beta=0", "eval.json"))                 # evaluation lost: evaluated again
    for f in ("summary.json", "eval.json"):                              # training not finished: resumed
        os.remove(os.path.join(out, "gamma=0.5", f))
    time.sleep(1.1)
    p = sweep(out, "--preset", "fashion-uiat-cnn", "--param", "beta=0,1", "--param", "gamma=0.5", *EVAL_TINY,
              train_args=TINY, check=0)
    assert "base: trained and evaluated" in p.stdout, p.stdout
    assert "beta=0: evaluating" in p.stdout and "beta=0: training" not in p.stdout, p.stdout
    assert "gamma=0.5: resuming" in p.stdout, p.stdout
    assert os.path.getmtime(os.path.join(out, "base", "checkpoint.pt")) == mtime["base"]
    assert os.path.getmtime(os.path.join(out, "beta=0", "checkpoint.pt")) == mtime["beta=0"]
    assert open(os.path.join(out, "base", "eval.json")).read() == kept_eval
    for r in ("beta=0", "gamma=0.5"):
        assert read(os.path.join(out, r, "eval.json"))["tool"] == "iat-eval"
    assert os.path.exists(os.path.join(out, "gamma=0.5", "summary.json"))
    # Stopped before its first checkpoint: started over.
    for f in ("checkpoint.pt", "summary.json", "eval.json"):
        os.remove(os.path.join(out, "beta=0", f))
    p = sweep(out, "--preset", "fashion-uiat-cnn", "--param", "beta=0,1", "--param", "gamma=0.5", *EVAL_TINY,
              train_args=TINY, check=0)
    assert "beta=0: starting over" in p.stdout, p.stdout
    assert read(os.path.join(out, "beta=0", "config.json"))["beta"] == 0.0


def case_failure(work):
    out = os.path.join(work, "failure")
    p = sweep(out, "--preset", "fashion-uiat-cnn", "--param", "beta=0", *EVAL_TINY, train_args=TINY,
              evaluate="/bin/false", check=1)
    assert "base: evaluation failed (exit 1)" in p.stdout and "beta=0: evaluation failed (exit 1)" in p.stdout, p.stdout
    assert "2 run(s) failed: base, beta=0" in p.stderr, p.stderr
    # Both were trained all the same; with a working iat-eval the same command only evaluates.
    p = sweep(out, "--preset", "fashion-uiat-cnn", "--param", "beta=0", *EVAL_TINY, train_args=TINY, check=0)
    assert "training" not in p.stdout and p.stdout.count(": evaluating") == 2, p.stdout


def case_signal(work):
    out = os.path.join(work, "signal")
    cmd = [PYTHON, SWEEP, out, "--train", TRAIN, "--eval", EVAL, "--jobs", "1", "--threads", "1", "--preset",
           "fashion-uiat-cnn", "--param", "beta=0"] + EVAL_TINY + ["--"] + TINY
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(out, "base", "train.log")
    for _ in range(600):
        if os.path.exists(log):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, stdout, stderr)
    assert "stopped by a signal" in stderr, stderr
    assert not os.path.exists(os.path.join(out, "beta=0", "eval.json")), "the sweep went on after the signal"
    sweep(out, "--preset", "fashion-uiat-cnn", "--param", "beta=0", *EVAL_TINY, train_args=TINY, check=0)
    for r in ("base", "beta=0"):
        assert read(os.path.join(out, r, "eval.json"))["tool"] == "iat-eval", r


work = tempfile.mkdtemp(prefix="iat_sweep_test.")
try:
    for case in CASES:
        try:
            globals()["case_" + case](work)
            print(f"ok: {case}")
        except AssertionError as e:
            failures.append(case)
            print(f"FAIL: {case}: {e}")
finally:
    shutil.rmtree(work, ignore_errors=True)
sys.exit(1 if failures else 0)
