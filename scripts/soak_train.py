#!/usr/bin/env python3
"""Kill -9 soak of iat-train: a small CPU run is killed with SIGKILL at N seeded random moments and resumed
with --resume after each kill until it finishes; the result must be the uninterrupted run's.

    scripts/soak_train.py --bin build/examples/iat-train                 # 20 kills, a random seed (printed)
    scripts/soak_train.py --bin build/examples/iat-train --kills 3 --seed 7   # the short version ctest runs

The moments, drawn from --seed (so a failure is reproduced by rerunning with the printed seed):
  random   a delay after the process starts, uniform over the time a fresh run needs to commit its second
           checkpoint (measured on the uninterrupted run): start-up, loading, training, evaluation, writes;
  during   right after checkpoint.pt.tmp appears (the k-th time in that process, k = 1 or 2), plus a random
           delay of up to 0.4 ms: inside the checkpoint's write/fsync/rename;
  after    right after checkpoint.pt.tmp is renamed over checkpoint.pt (before metrics.jsonl is rewritten);
  finish   (the last kill, with 4 or more kills) when model.pt's temporary file appears at the end of the run.
The moments are found with inotify on the output folder. Whether a kill landed inside a checkpoint write is
not assumed from the aim: it is read off the folder (a checkpoint.pt.tmp that the killed process wrote is
still there after the kill).

Checks (any failure: exit 1, with what failed):
  - no process exits on its own with an error; the last one (not killed) exits 0;
  - model.pt, model_ema.pt, figure1.npz and progress.jsonl are bit-identical (byte comparison) to an
    uninterrupted run's with the same settings, and so is every tensor record of checkpoint.pt (model,
    optimiser, EMA, universal perturbations, RNG state);
  - metrics.jsonl has exactly one row per epoch, equal to the uninterrupted run's but for the timings, and
    after every kill it holds rows 1..k without a duplicate;
  - every distinct checkpoint.pt seen after a kill loads: `iat-train --resume --stop-after-steps 1` on a copy
    reports "resumed from", and the checkpoints never go back in steps;
  - no temporary file (*.tmp*, the write probe) is left in the output folder.
Needs Linux (inotify) and Python 3 alone. CPU use: one iat-train process at a time, --threads 1.
"""
import argparse
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import zipfile

from soak_common import IN_CREATE, IN_MOVED_FROM, Soak, files_equal, leftovers, run_once, tail, written_by_last

TIMING_KEYS = ("seconds", "images_per_second")
PROBES = (".iat-train-write-test",)


def run_train(cmd, out, log_path, plan=None):
    """Runs iat-train once; with a plan, kills it at the planned moment. Returns (rc, killed, commit_times):
    commit_times are the seconds after the start at which checkpoint.pt.tmp was renamed over checkpoint.pt."""
    hit, delay, spin_s = None, None, 0.0
    if plan is not None:
        mode, seen = plan["mode"], {"creates": 0, "commits": 0}
        if mode == "random":
            delay = plan["delay"]
        if mode == "during":
            spin_s = plan["delay"]

        def hit(mask, name):
            if name == "checkpoint.pt.tmp" and mask & IN_CREATE:
                seen["creates"] += 1
            if name == "checkpoint.pt.tmp" and mask & IN_MOVED_FROM:
                seen["commits"] += 1
            if mode == "during":
                return name == "checkpoint.pt.tmp" and bool(mask & IN_CREATE) and seen["creates"] == plan["k"]
            if mode == "after":
                return name == "checkpoint.pt.tmp" and bool(mask & IN_MOVED_FROM) and seen["commits"] == plan["k"]
            if mode == "finish":
                return name.startswith("model.pt.tmp") and bool(mask & IN_CREATE)
            return False
    run = run_once(cmd, out, log_path, delay=delay, hit=hit, spin_s=spin_s)
    return run.rc, run.signalled, run.times("checkpoint.pt.tmp", IN_MOVED_FROM)


def metrics_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


class _Record:
    """A TorchScript object of the archive's pickle: its attributes."""

    def __setstate__(self, state):
        self.state = state


class _ArchiveUnpickler(pickle.Unpickler):
    """Reads an archive's data.pkl without torch: objects become _Record, tensors (storage, offset, shape)."""

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            return _Record
        if name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, stride, *rest: ("tensor", storage, offset, tuple(size), tuple(stride))
        if module == "torch" and name.endswith("Storage"):
            return name  # the storage's dtype, inside persistent ids
        if (module, name) == ("collections", "OrderedDict"):
            return dict  # a tensor's (empty) backward hooks
        if (module, name) == ("torch.jit._pickle", "build_doublelist"):
            return list  # a typed list of floats (the model_spec record's mean and std)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        return ("storage", pid[1], pid[2])  # dtype, key


def checkpoint_state(path):
    """Every value of an iat-train checkpoint by its path ("model/net/conv1/weight"), tensors as their dtype,
    shape, stride and bytes. The optimiser's state is keyed by parameter addresses of the process that wrote
    it; they are replaced by the parameter's index, so two processes' checkpoints compare."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        root = names[0].split("/", 1)[0]
        tree = _ArchiveUnpickler(io.BytesIO(z.read(f"{root}/data.pkl"))).load()
        flat = {}

        def walk(node, at):
            if isinstance(node, _Record):
                for k, v in node.state.items():
                    walk(v, f"{at}/{k}" if at else k)
            elif isinstance(node, tuple) and node and node[0] == "tensor":
                _, (_, dtype, key), offset, size, stride = node
                flat[at] = (str(dtype), offset, size, stride, z.read(f"{root}/data/{key}"))
            else:
                flat[at] = node

        walk(tree, "")
    params = {v: k.rsplit("/", 1)[1] for k, v in flat.items()
              if re.fullmatch(r"optimizer/param_groups/param_groups/\d+/params/\d+", k)}
    out = {}
    for k, v in flat.items():
        m = re.fullmatch(r"optimizer/state/([^/]+)/(.*)", k)
        if m:
            k = f"optimizer/state/param {params.get(m.group(1), m.group(1))}/{m.group(2)}"
        elif isinstance(v, str) and v in params:
            v = f"param {params[v]}"
        out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the iat-train binary")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver (default 20)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: random, printed)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the run (default: 2 x kills + 2, so that "
                    "the run outlasts the kills)")
    ap.add_argument("--work", default=None, help="working folder (default: a new temporary one, removed on success)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    if args.kills < 1:
        ap.error("--kills must be >= 1")
    soak_run = Soak("soak_train", args.seed, args.work, args.keep)
    seed, rng, work, finish = soak_run.seed, soak_run.rng, soak_run.work, soak_run.finish
    epochs = args.epochs or 2 * args.kills + 2
    soak_run.say(f"seed {seed} (rerun with --seed {seed}), {args.kills} kills, {epochs} epochs")
    ref, soak, snaps = soak_run.fresh("ref", "soak", "checkpoints")
    # The tests' tiny synthetic set-up (tests/train/iat_train_test.sh): 4 batches an epoch, with universal
    # inverse perturbations, momentum from epoch 2 and weight averaging, so every part of the state travels.
    base = [args.bin, "--data", "synthetic", "--model", "small-cnn", "--train-subset", "128", "--test-subset", "32",
            "--batch-size", "32", "--eps", "0.1", "--step-size", "0.025", "--steps", "2", "--inv-eps", "0.05",
            "--inv-steps", "2", "--momentum-epoch", "1", "--eval-pgd-steps", "2", "--method", "uiat",
            "--ema-decay", "0.9", "--epochs", str(epochs), "--device", "cpu", "--threads", "1", "--plain-progress",
            "--no-report"]
    failures = []

    # 1. The uninterrupted run; its checkpoint commit times size the random delays.
    rc, _, commits = run_train(base + ["--out", ref], ref, os.path.join(work, "ref.log"))
    if rc != 0 or len(commits) < 2:
        print(tail(os.path.join(work, "ref.log")))
        print(f"soak_train: the uninterrupted run failed (exit {rc}, {len(commits)} checkpoints)")
        finish(1)
    window = commits[1]  # a fresh process's start to its second committed checkpoint
    print(f"soak_train: uninterrupted run: {len(commits)} checkpoints, random delays over 0-{window:.2f} s", flush=True)

    # 2. The plan: kinds of moments in fixed proportions, shuffled by the seed; the last kill at the end.
    n = args.kills
    n_finish = 1 if n >= 4 else 0  # the short version ctest runs has 4 kills: one of each kind
    n_during = max(1, round(0.35 * n))
    n_after = max(1 if n >= 3 else 0, round(0.25 * n))
    n_random = max(0, n - n_finish - n_during - n_after)
    modes = ["during"] * n_during + ["after"] * n_after + ["random"] * n_random
    modes = modes[:n - n_finish]
    rng.shuffle(modes)
    modes += ["finish"] * n_finish
    plans = []
    for mode in modes:
        if mode == "random":
            plans.append({"mode": mode, "delay": rng.uniform(0, window)})
        elif mode == "during":
            plans.append({"mode": mode, "k": rng.choice((1, 2)), "delay": rng.uniform(0, 0.0004)})
        else:
            plans.append({"mode": mode, "k": 1})

    # 3. The soak.
    landed_ckpt, landed_other, kills, last_snapshot, snapshots = 0, [], 0, None, []
    log_path = os.path.join(work, "soak.log")
    for i, plan in enumerate(plans, 1):
        cmd = base + ["--out", soak] + (["--resume"] if os.path.exists(os.path.join(soak, "checkpoint.pt")) else [])
        before = leftovers(soak, PROBES)
        rc, killed, _ = run_train(cmd, soak, log_path, plan)
        if not killed:
            if rc != 0:
                print(tail(log_path))
                failures.append(f"kill {i}: the process exited {rc} on its own before the kill")
            else:
                failures.append(f"kill {i}: the run finished before the kill ({plan['mode']}); raise --epochs")
            break
        kills += 1
        # Written (created, truncated or written to) by the killed process: the kill landed in that write.
        left, stale = written_by_last(before, leftovers(soak, PROBES))
        landed_ckpt += "checkpoint.pt.tmp" in left
        landed_other += [f for f in left if f != "checkpoint.pt.tmp"]
        what = plan["mode"] + (f" k={plan['k']}" if "k" in plan else "") + (
            f" +{plan['delay'] * 1000:.2f} ms" if plan["mode"] == "during" else
            f" {plan['delay']:.3f} s" if plan["mode"] == "random" else "")
        rows = None
        try:
            rows = metrics_rows(os.path.join(soak, "metrics.jsonl"))
            if [r["epoch"] for r in rows] != list(range(1, len(rows) + 1)):
                failures.append(f"kill {i}: metrics.jsonl epochs {[r['epoch'] for r in rows]}")
            if os.path.exists(os.path.join(soak, "config.json")):
                with open(os.path.join(soak, "config.json")) as f:
                    json.load(f)
        except (ValueError, KeyError) as e:
            failures.append(f"kill {i}: an output file does not parse after the kill: {e}")
        print(f"  kill {i:2d}: {what:<22} in the middle of writing {left or '-'}"
              f"{f' (left by an earlier kill: {stale})' if stale else ''}; "
              f"metrics rows {len(rows) if rows is not None else '?'}", flush=True)
        ckpt = os.path.join(soak, "checkpoint.pt")
        if os.path.exists(ckpt):
            with open(ckpt, "rb") as f:
                data = f.read()
            if data != last_snapshot:
                last_snapshot = data
                snap = os.path.join(snaps, f"after_kill_{i:02d}.pt")
                with open(snap, "wb") as f:
                    f.write(data)
                snapshots.append(snap)

    # 4. To the end, without a kill.
    if not failures:
        rc, _, _ = run_train(base + ["--out", soak, "--resume"], soak, log_path)
        if rc != 0:
            print(tail(log_path))
            failures.append(f"the final resumed run exited {rc}")

    # 5. Every checkpoint seen after a kill loads and resumes; the checkpoints move forward only.
    last_step = -1
    scratch = os.path.join(work, "scratch")
    for snap in snapshots:
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch)
        shutil.copy(snap, os.path.join(scratch, "checkpoint.pt"))
        check_log = os.path.join(work, "check.log")
        with open(check_log, "w") as log:
            rc = subprocess.call(base + ["--out", scratch, "--resume", "--stop-after-steps", "1"], stdout=log,
                                 stderr=subprocess.STDOUT)
        m = re.search(r"resumed from .* at epoch (\d+), batch (\d+), step (\d+)", tail(check_log, 1000))
        if rc not in (0, 130) or not m:
            print(tail(check_log))
            failures.append(f"{os.path.basename(snap)} does not load (exit {rc})")
            continue
        step = int(m.group(3))
        if step < last_step:
            failures.append(f"{os.path.basename(snap)} went back to step {step} from {last_step}")
        last_step = step
    shutil.rmtree(scratch, ignore_errors=True)

    # 6. The result against the uninterrupted run.
    if not failures:
        for name in ("model.pt", "model_ema.pt", "figure1.npz", "progress.jsonl"):
            if not files_equal(os.path.join(ref, name), os.path.join(soak, name)):
                failures.append(f"{name} differs from the uninterrupted run's")
        # Everything but the timings (train_seconds; the metrics' timings are compared just below).
        a, b = (checkpoint_state(os.path.join(d, "checkpoint.pt")) for d in (ref, soak))
        differ = sorted(k for k in set(a) | set(b) if k not in ("train_seconds", "metrics") and a.get(k) != b.get(k))
        tensors = sum(isinstance(v, tuple) for v in a.values())
        if differ or tensors < 10:
            failures.append(f"checkpoint.pt differs from the uninterrupted run's in {differ} ({tensors} tensors)")
        rows_ref = metrics_rows(os.path.join(ref, "metrics.jsonl"))
        rows = metrics_rows(os.path.join(soak, "metrics.jsonl"))
        if [r["epoch"] for r in rows] != list(range(1, epochs + 1)):
            failures.append(f"metrics.jsonl epochs {[r['epoch'] for r in rows]}, expected 1..{epochs}")
        drop = lambda r: {k: v for k, v in r.items() if k not in TIMING_KEYS}  # noqa: E731
        if [drop(r) for r in rows] != [drop(r) for r in rows_ref]:
            failures.append("metrics.jsonl differs from the uninterrupted run's (timings aside)")
    left = sorted(leftovers(soak, PROBES))
    if left:
        failures.append(f"temporary files left in the output folder: {left}")

    aimed = sum(p["mode"] == "during" for p in plans[:kills])
    print(f"soak_train: {kills} of {n} kills done; {landed_ckpt} landed during a checkpoint write "
          f"({aimed} aimed at one), {len(landed_other)} during another file's write {sorted(set(landed_other)) or ''}")
    print(f"soak_train: {len(snapshots)} distinct checkpoints seen after kills, each resumed; {soak_run.machine()}")
    for f in failures:
        print(f"soak_train: FAILED: {f}")
    if not failures:
        print(f"soak_train: final model.pt, model_ema.pt, figure1.npz, progress.jsonl and checkpoint tensors identical to "
              f"the uninterrupted run's; metrics.jsonl {epochs} rows; no temporary files left")
    finish(1 if failures else 0)


if __name__ == "__main__":
    main()
