#!/usr/bin/env python3
"""Interrupt soak of iat-eval --state: a small AutoAttack evaluation is stopped with SIGKILL or SIGINT at N
seeded random moments and started again with the same command after each, until it completes; the result
must be the uninterrupted run's.

    scripts/soak_eval.py --bin build/examples/iat-eval                       # 20 interrupts, a random seed
    scripts/soak_eval.py --bin build/examples/iat-eval --interrupts 4 --resume-each quick   # what ctest runs

The job: the tiny TorchScript CNN and the 32 points of tests/eval/make_fixtures.py (made with --python, a
Python with torch), AutoAttack's apgd-ce, apgd-t, fab-t and square with small budgets, one point a batch
(--batch-size 1), --threads 1, with --state, --out and --save-adv in one folder: about a hundred state writes.
Half of the interrupts (rounded up) are SIGKILL, half SIGINT, shuffled by the seed. The moments, drawn from
--seed (a failure is replayed with the printed seed):
  random   a delay uniform over the time a fresh process needs to commit the state of its first few batches
           (measured on the uninterrupted run), counted from the process's start (start-up, loading, the
           clean pass, attacks, writes) or, for about half, from its first file event (its command line read,
           its signal handler installed);
  during   right after eval.state.tmp appears (the k-th time in that process, k = 1, 3 or 4: 1 and 2 are the
           writability probes, iat-eval's and AutoAttack's, 3 the state written after the clean pass, 4 the
           first batch's), plus up to 0.4 ms: inside a probe or the state's write/fsync/rename;
  after    right after eval.state.tmp is renamed over eval.state (k = 1 or 2);
  finish   (the last interrupt, with 4 or more) when adv.pt's or report.json's temporary file is first written
           at the end of the run (before its fsync and rename).
The moments are found with inotify on the folder. Whether an interrupt landed inside a state write or a
probe is not assumed from the aim: after a SIGKILL it is read off the folder (the eval.state.tmp that the
killed process created or wrote is still there), after a SIGINT off the folder's events (eval.state.tmp
created or written before the signal, renamed or removed after it).

Checks (any failure: exit 1, with what failed):
  - no process exits with an error; the last one (not interrupted) exits 0;
  - SIGINT: the process exits with status 130 (docs/evaluation.md, "Stopping and resuming") saying where it
    stopped, leaves no temporary file, and its state file holds the batch that was running (it changed); it
    may end from the signal itself only before its first file event (start-up, before its handler exists),
    and exit 0 only when the signal came while the outputs were being written (the report is then complete);
  - the final report has the uninterrupted run's per-point robust flags (counted and re-checked, after each
    attack and at the end), robust accuracy, re-checked accuracy, clean accuracy, counts and maximal
    perturbation, and adv.pt (--save-adv) is bit-identical to the uninterrupted run's;
  - every distinct state file seen after an interrupt is accepted on resume ("resumed from", on a copy):
    --resume-each full runs each to the end and compares its flags and adv.pt too; quick stops each with
    SIGINT once it has resumed (exit 130, or 0 when nothing was left to do);
  - a report.json seen after an interrupt is complete; no temporary file (*.tmp*) is left in the folder.
Needs Linux (inotify); Python 3 alone but for the fixtures. CPU use: one iat-eval process at a time.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys

from soak_common import (IN_CREATE, IN_DELETE, IN_MODIFY, IN_MOVED_FROM, Soak, files_equal, leftovers, run_once, tail,
                         written_by_last)

STATE, REPORT, ADV = "eval.state", "report.json", "adv.pt"
# The report's keys that an interrupted run must share with the uninterrupted one (timings and "resumed" aside).
RESULT_KEYS = ("num_points", "clean_accuracy", "clean_correct", "robust_accuracy", "robust_count",
               "robust_accuracy_rechecked", "robust_count_rechecked", "max_perturbation", "robust_flags",
               "robust_flags_rechecked", "nonfinite_points", "attacks", "standard_budgets", "state_mismatch",
               "warnings")
STEP_KEYS = ("attack", "attacked", "robust", "robust_accuracy", "robust_flags")
SIGNAME = {signal.SIGKILL: "KILL", signal.SIGINT: "INT"}


def run_eval(cmd, folder, log_path, plan=None):
    """Runs iat-eval once; with a plan, sends its signal at the planned moment. Returns a soak_common.Run."""
    if plan is None:
        return run_once(cmd, folder, log_path)
    mode, seen = plan["mode"], {}

    def hit(mask, name):
        key = (name, mask & (IN_CREATE | IN_MODIFY | IN_MOVED_FROM))
        seen[key] = seen.get(key, 0) + 1
        if mode == "during":
            return key == (STATE + ".tmp", IN_CREATE) and seen[key] == plan["k"]
        if mode == "after":
            return key == (STATE + ".tmp", IN_MOVED_FROM) and seen[key] == plan["k"]
        if mode == "finish":  # the output's first write (a writability probe writes nothing)
            return key == (plan["file"] + ".tmp", IN_MODIFY) and seen[key] == 1
        return False

    if mode == "random":
        return run_once(cmd, folder, log_path, sig=plan["signal"], delay=plan["delay"],
                        from_first_event=plan["origin"] == "event")
    return run_once(cmd, folder, log_path, sig=plan["signal"], hit=hit,
                    spin_s=plan["delay"] if mode == "during" else 0.0)


def landed_in(run, before, left):
    """Which use of eval.state.tmp the signal of `run` landed in: "state" (a write of the state: from the
    temporary file's creation or first write to its rename), "probe" (one of the two writability probes,
    iat-eval's and AutoAttack's, each creating the file and removing it at once, before any write) or None.
    After a SIGKILL this is read off the folder: the temporary file that the process created or wrote is still
    there; it is a probe's when it was the process's first or second creation of it and nothing followed (a
    probe finds a file left by an earlier kill there and leaves it, so then it is a write's). After a SIGINT,
    which lets the process go on, it is read off the events: the signal was sent between the start and the end
    of one, as inotify read them (a little after they happened)."""
    tmp = STATE + ".tmp"
    if run.rc == -signal.SIGKILL:
        if tmp not in left:
            return None
        mine = [m for _, m, name in run.events if name == tmp]
        probe = tmp not in before and mine and mine[-1] & IN_CREATE and len(run.times(tmp, IN_CREATE)) <= 2
        return "probe" if probe else "state"
    start, kind = None, None
    for t, mask, name in run.events:
        if name != tmp:
            continue
        if mask & (IN_CREATE | IN_MODIFY) and start is None:
            start, kind = t, "probe"
        if mask & IN_MODIFY:
            kind = "state"
        if mask & (IN_MOVED_FROM | IN_DELETE) and start is not None:
            if start <= run.sent_at <= t:
                return kind
            start = None
    return None


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def result_differences(ref, got):
    """The result keys in which report `got` differs from `ref`."""
    out = [k for k in RESULT_KEYS if ref.get(k) != got.get(k)]
    steps = lambda r: [{k: s.get(k) for k in STEP_KEYS} for s in r.get("steps", [])]  # noqa: E731
    if steps(ref) != steps(got):
        out.append("steps")
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the iat-eval binary")
    ap.add_argument("--python", default=sys.executable, help="a Python with torch, for the fixtures "
                    "(default: this one)")
    ap.add_argument("--interrupts", type=int, default=20, help="interrupts to deliver, half SIGKILL (rounded up), "
                    "half SIGINT (default 20)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the moments (default: random, printed)")
    ap.add_argument("--resume-each", choices=("full", "quick"), default="full",
                    help="how each state file seen after an interrupt is resumed: to the end, comparing the result "
                    "(full, the default), or until it has resumed (quick)")
    ap.add_argument("--work", default=None, help="working folder (default: a new temporary one, removed on success)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    if args.interrupts < 1:
        ap.error("--interrupts must be >= 1")
    soak_run = Soak("soak_eval", args.seed, args.work, args.keep)
    seed, rng, work, finish = soak_run.seed, soak_run.rng, soak_run.work, soak_run.finish
    n = args.interrupts
    soak_run.say(f"seed {seed} (rerun with --seed {seed}), {n} interrupts")
    fixtures, ref, soak, snaps, scratch = soak_run.fresh("fixtures", "ref", "soak", "states", "scratch")
    rc = subprocess.call([args.python, os.path.join(here, "..", "tests", "eval", "make_fixtures.py"), fixtures])
    if rc != 0:
        soak_run.say(f"the fixtures could not be made with {args.python} (exit {rc}; it needs torch: --python)")
        finish(1)
    base = [args.bin, "--model", os.path.join(fixtures, "model.pt"), "--data", os.path.join(fixtures, "points.pt"),
            "--eps", "0.05", "--attacks", "apgd-ce,apgd-t,fab-t,square", "--apgd-steps", "10", "--fab-steps", "10",
            "--square-queries", "100", "--n-targets", "3", "--batch-size", "1", "--threads", "1", "--seed", "0",
            "--no-report"]

    def cmd_in(folder):
        return base + ["--state", os.path.join(folder, STATE), "--out", os.path.join(folder, REPORT),
                       "--save-adv", os.path.join(folder, ADV)]

    failures = []

    # 1. The uninterrupted run; its state commit times size the plan.
    ref_run = run_eval(cmd_in(ref), ref, os.path.join(work, "ref.log"))
    commits = ref_run.times(STATE + ".tmp", IN_MOVED_FROM)
    if ref_run.rc != 0 or len(commits) < 4 * n + 2:
        print(tail(os.path.join(work, "ref.log")))
        soak_run.say(f"the uninterrupted run failed or is too short for {n} interrupts (exit {ref_run.rc}, "
                     f"{len(commits)} state writes, {4 * n + 2} needed)")
        finish(1)
    ref_report = read_json(os.path.join(ref, REPORT))

    # 2. The plan: kinds of moments in fixed proportions, shuffled; signals half and half, shuffled apart.
    n_finish = 1 if n >= 4 else 0
    n_during = max(1, round(0.35 * n))
    n_after = max(1 if n >= 3 else 0, round(0.25 * n))
    n_random = max(0, n - n_finish - n_during - n_after)
    # The evaluation must outlast the interrupts: one aimed at a write costs it at most 2 batches (a SIGINT
    # finishes the batch that is running), one at a random moment at most j + 1, where the random delays reach
    # the state commit of a fresh process's j-th batch (after start-up, the clean pass and the first write).
    # (A resumed process is no faster: it loads the state too, and the later attacks' batches take longer.)
    j = max(3, min(len(commits) // 2, (len(commits) - 10 - 2 * n) // max(1, n_random) - 1))
    first_event = ref_run.events[0][0]
    window = commits[j]
    soak_run.say(f"uninterrupted run: {len(commits)} state writes in {ref_run.seconds:.2f} s (start-up "
                 f"{first_event:.2f} s), robust accuracy {ref_report['robust_accuracy']:.4f} (re-checked "
                 f"{ref_report['robust_accuracy_rechecked']:.4f}); random delays over 0-{window:.2f} s from the "
                 f"start or 0-{window - first_event:.2f} s from the first file event")

    modes = (["during"] * n_during + ["after"] * n_after + ["random"] * n_random)[:n - n_finish]
    rng.shuffle(modes)
    modes += ["finish"] * n_finish
    signals = [signal.SIGKILL] * ((n + 1) // 2) + [signal.SIGINT] * (n // 2)
    rng.shuffle(signals)
    plans = []
    for mode, sig in zip(modes, signals):
        plan = {"mode": mode, "signal": sig}
        if mode == "random":
            plan["origin"] = rng.choice(("start", "event"))
            plan["delay"] = rng.uniform(0, window - (first_event if plan["origin"] == "event" else 0))
        elif mode == "during":
            plan.update(k=rng.choice((1, 3, 4)), delay=rng.uniform(0, 0.0004))
        elif mode == "after":
            plan["k"] = rng.choice((1, 2))
        else:
            plan["file"] = rng.choice((ADV, REPORT))
        plans.append(plan)

    # 3. The soak.
    state = os.path.join(soak, STATE)
    counts = {"landed_state": 0, "landed_probe": 0, "landed_other": [], "done": 0, "int_130": 0, "int_early": 0,
              "int_0": 0, "kill": 0, "int": 0}
    last_snapshot, snapshots, completed = None, [], False
    log_path = os.path.join(work, "soak.log")
    for i, plan in enumerate(plans, 1):
        before = leftovers(soak)
        state_before = read_bytes(state) if os.path.exists(state) else None
        run = run_eval(cmd_in(soak), soak, log_path, plan)
        sig = plan["signal"]
        what = f"SIG{SIGNAME[sig]} {plan['mode']}" + (f" k={plan['k']}" if "k" in plan else "") + (
            f" +{plan['delay'] * 1000:.2f} ms" if plan["mode"] == "during" else
            f" {plan['delay']:.3f} s from the {plan['origin']}" if plan["mode"] == "random" else
            f" {plan['file']}" if plan["mode"] == "finish" else "")
        if not run.signalled:
            if run.rc != 0:
                print(tail(log_path))
                failures.append(f"interrupt {i}: the process exited {run.rc} on its own before the signal")
            else:
                failures.append(f"interrupt {i} ({what}): the run completed before the signal")
            break
        counts["done"] += 1
        counts["kill" if sig == signal.SIGKILL else "int"] += 1
        left, stale = written_by_last(before, leftovers(soak))
        log = tail(log_path, 1000)
        landed = landed_in(run, before, left)
        counts["landed_state"] += landed == "state"
        counts["landed_probe"] += landed == "probe"
        others = [f for f in left if f != STATE + ".tmp"]
        counts["landed_other"] += others
        outcome = f"exit {run.rc}" if run.rc >= 0 else f"ended by SIG{SIGNAME.get(-run.rc, -run.rc)}"
        if sig == signal.SIGKILL:
            if run.rc != -signal.SIGKILL:
                failures.append(f"interrupt {i} ({what}): SIGKILL sent, but {outcome}")
        elif run.rc == 130:
            counts["int_130"] += 1
            if "iat-eval: stopped by SIGINT after" not in log and "iat-eval: stopped by a signal after" not in log:
                failures.append(f"interrupt {i} ({what}): exit 130 without saying where it stopped")
            if left:
                failures.append(f"interrupt {i} ({what}): SIGINT left temporary files {left}")
            if not os.path.exists(state):
                failures.append(f"interrupt {i} ({what}): SIGINT left no state file")
            elif "after AutoAttack" not in log and read_bytes(state) == state_before:
                failures.append(f"interrupt {i} ({what}): the state file after SIGINT does not hold the batch "
                                "that was running (unchanged)")
        elif run.rc == -signal.SIGINT:
            counts["int_early"] += 1
            if [e for e in run.events if e[0] <= run.sent_at]:
                failures.append(f"interrupt {i} ({what}): ended by SIGINT itself after it had started writing "
                                "(expected exit 130)")
        elif run.rc == 0:
            counts["int_0"] += 1
            completed, expect_resumed = True, state_before is not None
            # Exit 0 only for a signal during the outputs' writes: none while the state was still being
            # written (a commit read well after the signal happened after it: event times are read times).
            late = [t for t in run.times(STATE + ".tmp", IN_MOVED_FROM) if t > run.sent_at + 0.02]
            if late:
                failures.append(f"interrupt {i} ({what}): exit 0 although the state was still written "
                                f"{late[-1] - run.sent_at:.3f} s after the SIGINT (expected 130)")
        else:
            print(tail(log_path))
            failures.append(f"interrupt {i} ({what}): SIGINT sent, but {outcome} (expected 130)")
        if os.path.exists(os.path.join(soak, REPORT)):
            try:
                got = read_json(os.path.join(soak, REPORT))
                if "robust_flags_rechecked" not in got:
                    failures.append(f"interrupt {i} ({what}): report.json is incomplete")
            except ValueError as e:
                failures.append(f"interrupt {i} ({what}): report.json does not parse: {e}")
        print(f"  {i:2d}: {what:<40} {outcome:<19} in the middle of writing "
              f"{ {'state': 'the state', 'probe': 'the probe', None: '-'}[landed]}{' ' + str(others) if others else ''}"
              f"{f' (left by an earlier one: {stale})' if stale else ''}", flush=True)
        if os.path.exists(state):
            data = read_bytes(state)
            if data != last_snapshot:
                last_snapshot = data
                snap = os.path.join(snaps, f"after_{i:02d}.state")
                with open(snap, "wb") as f:
                    f.write(data)
                snapshots.append(snap)
        if completed and i < len(plans):
            failures.append(f"interrupt {i} ({what}): the run completed with {len(plans) - i} interrupts to go")
            break

    # 4. To the end, without a signal.
    if not completed:
        expect_resumed = os.path.exists(state)
    if not failures and not completed:
        run = run_eval(cmd_in(soak), soak, log_path)
        completed = run.rc == 0
        if run.rc != 0:
            print(tail(log_path))
            failures.append(f"the final run exited {run.rc}")

    # 5. Every state seen after an interrupt is accepted on resume (on a copy).
    for snap in snapshots:
        for f in os.listdir(scratch):
            os.remove(os.path.join(scratch, f))
        shutil.copy(snap, os.path.join(scratch, STATE))
        check_log = os.path.join(work, "check.log")
        if args.resume_each == "full":
            run = run_eval(cmd_in(scratch), scratch, check_log)
        else:  # SIGINT once it has resumed: it rewrites the state after comparing it with this run
            run = run_eval(cmd_in(scratch), scratch, check_log,
                           {"mode": "after", "k": 1, "signal": signal.SIGINT})
        name = os.path.basename(snap)
        accepted = (0,) if args.resume_each == "full" else (0, 130)
        if "resumed from" not in tail(check_log, 1000) or run.rc not in accepted:
            print(tail(check_log))
            failures.append(f"{name} is not resumed (exit {run.rc})")
        elif args.resume_each == "full":
            differ = result_differences(ref_report, read_json(os.path.join(scratch, REPORT)))
            if differ:
                failures.append(f"{name} resumed to the end differs from the uninterrupted run in {differ}")
            if not files_equal(os.path.join(ref, ADV), os.path.join(scratch, ADV)):
                failures.append(f"{name} resumed to the end: adv.pt differs from the uninterrupted run's")

    # 6. The result against the uninterrupted run.
    if completed:
        got = read_json(os.path.join(soak, REPORT))
        differ = result_differences(ref_report, got)
        if differ:
            failures.append(f"the report differs from the uninterrupted run's in {differ}")
        if bool(got.get("resumed")) != expect_resumed:
            failures.append(f"the final report says resumed: {got.get('resumed')}")
        if not files_equal(os.path.join(ref, ADV), os.path.join(soak, ADV)):
            failures.append("adv.pt differs from the uninterrupted run's")
    left = sorted(leftovers(soak))
    if left:
        failures.append(f"temporary files left in the output folder: {left}")

    aimed = sum(p["mode"] == "during" for p in plans[:counts["done"]])
    other = sorted(set(counts["landed_other"]))
    soak_run.say(f"{counts['done']} of {n} interrupts done ({counts['kill']} SIGKILL, {counts['int']} SIGINT: "
                 f"{counts['int_130']} exit 130, {counts['int_early']} before the handler, {counts['int_0']} during "
                 f"the outputs' writes); {counts['landed_state']} landed during a state write, "
                 f"{counts['landed_probe']} during the state's writability probe ({aimed} aimed at one of these), "
                 f"{len(counts['landed_other'])} during another file's write {other or ''}")
    soak_run.say(f"{len(snapshots)} distinct state files seen after interrupts, each resumed "
                 f"({args.resume_each}); {soak_run.machine()}")
    for f in failures:
        soak_run.say(f"FAILED: {f}")
    if not failures:
        soak_run.say(f"final robust flags (counted, re-checked, per attack), robust accuracy "
                     f"{got['robust_accuracy']:.4f}, re-checked {got['robust_accuracy_rechecked']:.4f} and adv.pt "
                     "identical to the uninterrupted run's; no temporary files left")
    finish(1 if failures else 0)


if __name__ == "__main__":
    main()
