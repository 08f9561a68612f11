#!/usr/bin/python3
"""iat's sweep tool: one iat-train run per value of a hyper-parameter, each evaluated by iat-eval (natural
accuracy and AutoAttack), in one output folder, resumable run by run; scripts/report.py draws the sweep.

    scripts/sweep.py OUT --preset fashion-uiat-cnn --param beta=0,0.5,1,2,4
    scripts/sweep.py OUT --preset cifar10-uiat-prn18 --figure2 --data-dir DATA/cifar-10-batches-bin
    scripts/sweep.py OUT --preset fashion-uiat-cnn --figure2 gamma -- --epochs 4 --train-subset 15000
    scripts/sweep.py OUT --preset P --param beta=0,2 -- --epochs 3      # flags after -- go to every run

Each parameter is varied alone around the preset (the other settings stay the preset's), as in the
supplement's Figure 2. A value that gives the preset's own settings is the run "base", trained once and
shared by every parameter's panel; any other run is the folder OUT/<flag>=<value>. --figure2 sweeps the four
parameters of Figure 2: beta (the weight of the regulariser in the inverse loss), gamma (the inverse
momentum), momentum-epoch (T, the epoch the momentum starts) and one-off-epoch (T', with the uiat-one-off
method, the only one that uses T'); their values are listed in docs/sweeps.md.

Resuming: run the same command again. A run with its eval.json is kept; a run whose training finished
(summary.json) is only evaluated; a run with a checkpoint continues with iat-train --resume; a run stopped
before its first checkpoint starts over. An evaluation keeps an AutoAttack state file (RUN/eval.state), so a
stopped evaluation continues too. OUT/sweep.json records what the sweep is; a different sweep is refused.

What it writes: OUT/sweep.json; per run OUT/RUN/ (iat-train's folder, train.log, eval.json, eval.log); at the
end scripts/report.py --sweep OUT draws OUT/figure2.png/.svg and writes OUT/report.md and OUT/report.json.
Exit status: 0 every run trained and evaluated; 1 a run failed (its log is named; the others still run);
2 bad arguments, a parameter that changes nothing for the method, or OUT holding another sweep; 130 stopped
by SIGINT / SIGTERM (the running iat-train and iat-eval keep what they did; run the command again).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 130

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The supplement's Figure 2 (UIAT, ResNet-18, CIFAR-10): the parameters and the values swept here. The
# figure's own grid is in its picture, not its text, so these are iat's choice (docs/sweeps.md): values
# around the paper's defaults (beta = 1, gamma = 0.9, T = 75 and T' = 80 of 100 epochs). T and T' are given
# as fractions of the preset's epochs, rounded down and kept below the last epoch, repeats dropped.
FIGURE2 = [
    ("beta", ["0", "0.5", "1", "2", "4"]),
    ("gamma", ["0.5", "0.7", "0.9", "0.99"]),
    ("momentum-epoch", [0.0, 0.25, 0.5, 0.75, 0.9]),
    ("one-off-epoch", [0.2, 0.4, 0.6, 0.8, 0.9]),
]
# The methods a parameter changes anything for (examples/train/methods.hpp reads it only for them): a sweep of
# it under another method would train identical runs, so it is refused.
UIP_METHODS = {"uiat", "uiat-one-off", "fgsm-rs-uiat", "n-fgsm-uiat", "gradalign-uiat"}
USED_BY = {
    "beta": {"iat", "uiat", "uiat-one-off"},
    "gamma": UIP_METHODS,
    "momentum-epoch": UIP_METHODS,
    "one-off-epoch": {"uiat-one-off"},
}
# iat-train's flags that are about the running of a run, not its settings: a sweep sets them itself.
RESERVED = {"--out", "--resume", "--resume-force", "--overwrite", "--preset", "--print-config", "--list-presets",
            "--no-report", "--plain-progress", "--threads"}


class Usage(Exception):
    """A bad command line or an OUT that holds another sweep: exit 2 with the message."""


def find_program(name, given):
    if given:
        return given
    env = os.environ.get({"iat-train": "IAT_TRAIN", "iat-eval": "IAT_EVAL"}[name])
    if env:
        return env
    for build in ("build-demo", "build"):
        p = os.path.join(ROOT, build, "examples", name)
        if os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    if found:
        return found
    raise Usage(f"cannot find {name}: build it (scripts/demo.sh does) or pass --{name.replace('iat-', '')} PATH")


def fraction_epochs(fractions, epochs):
    """Fractions of the run's epochs as epoch numbers: rounded down, below the last epoch, no repeats."""
    values = []
    for f in fractions:
        e = min(int(f * epochs), max(0, epochs - 1))
        if str(e) not in values:
            values.append(str(e))
    return values


_CONFIGS = {}


def print_config(train, args):
    """iat-train's resolved settings for these flags (iat-train checks every value; its message is shown)."""
    key = (train,) + tuple(args)
    if key not in _CONFIGS:
        _CONFIGS[key] = _print_config(train, args)
    return _CONFIGS[key]


def _print_config(train, args):
    cmd = [train] + args + ["--print-config"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise Usage(f"cannot run '{train}': {e.strerror}")
    if p.returncode != 0:
        raise Usage(f"iat-train refused {' '.join(args)}:\n{(p.stderr or p.stdout).strip()}")
    return json.loads(p.stdout)


def plan(a, train):
    """The sweep: its panels (a parameter and its runs) and its runs (folder name -> iat-train flags)."""
    base_args = ["--preset", a.preset] + a.train_args
    for arg in a.train_args:
        if arg.split("=")[0] in RESERVED:
            raise Usage(f"'{arg}' after -- is set by the sweep itself (each run's --out, --resume, ...); leave it out")
    base = print_config(train, base_args)
    params = []
    if a.figure2:
        wanted = [f for f, _ in FIGURE2] if a.figure2 == "all" else [f.strip() for f in a.figure2.split(",")]
        for f in wanted:
            if f not in [g for g, _ in FIGURE2]:
                raise Usage(f"--figure2 '{a.figure2}': '{f}' is not one of Figure 2's parameters "
                            f"({', '.join(g for g, _ in FIGURE2)})")
        for flag, values in FIGURE2:
            if flag not in wanted:
                continue
            if flag in ("momentum-epoch", "one-off-epoch"):
                values = fraction_epochs(values, int(base["epochs"]))
            params.append((flag, values))
    for p in a.param:
        flag, sep, values = p.partition("=")
        flag = flag.strip().lstrip("-")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not flag or not vals:
            raise Usage(f"--param '{p}': expected FLAG=V1,V2,... (an iat-train flag without its dashes)")
        if len(set(vals)) != len(vals):
            raise Usage(f"--param '{p}': a value is repeated")
        if any(flag == f for f, _ in params):
            raise Usage(f"--param '{p}': {flag} is swept twice")
        params.append((flag, vals))
    if not params:
        raise Usage("nothing to sweep: give --param FLAG=V1,V2,... or --figure2")

    runs = {"base": base_args}
    configs = {json.dumps(base, sort_keys=True): "base"}
    panels = []
    for flag, values in params:
        if "--" + flag in RESERVED:
            raise Usage(f"--param {flag}: the sweep sets --{flag} itself")
        extra = []
        method = base["method"]
        if flag in USED_BY and method not in USED_BY[flag]:
            if a.figure2 and flag == "one-off-epoch":
                extra = ["--method", "uiat-one-off"]  # T' is the one-off strategy's epoch
                method = "uiat-one-off"
            else:
                raise Usage(f"--param {flag}: iat-train's method {method} does not use --{flag} (it changes "
                            f"something for {', '.join(sorted(USED_BY[flag]))} only); every run would be the same")
        panel = {"flag": flag, "values": values, "runs": [], "method": method}
        for v in values:
            args = base_args + extra + ["--" + flag, v]
            cfg = print_config(train, args)
            key = json.dumps(cfg, sort_keys=True)
            name = configs.get(key)
            if name is None:
                name = (f"method={method}," if extra else "") + f"{flag}={v}"
                configs[key] = name
                runs[name] = args
            panel["runs"].append(name)
        # The panel's reference point: the preset's value (under the method the panel needs). Its run is in
        # every panel, also where the values leave it out: it is trained anyway (or once more for T').
        ref_args = base_args + extra
        ref_cfg = print_config(train, ref_args) if extra else base
        key = flag.replace("-", "_")
        if key not in ref_cfg:
            raise Usage(f"--param {flag}: iat-train's settings (--print-config) have no '{key}'")
        panel["base_value"] = str(ref_cfg[key])
        ref_key = json.dumps(ref_cfg, sort_keys=True)
        if ref_key not in [json.dumps(print_config(train, runs[r]), sort_keys=True) for r in set(panel["runs"])]:
            name = configs.get(ref_key)
            if name is None:
                name = f"method={method}" if extra else "base"
                configs[ref_key] = name
                runs[name] = ref_args
            panel["values"] = panel["values"] + [panel["base_value"]]
            panel["runs"].append(name)
        panels.append(panel)
    return {"tool": "iat-sweep", "preset": a.preset, "train_args": a.train_args,
            "eval": {"n": a.eval_n, "autoattack_n": a.autoattack_n, "args": a.eval_args},
            "data_dir": a.data_dir, "panels": panels, "runs": runs}


def check_manifest(out, sweep, overwrite):
    """Writes OUT/sweep.json, or checks it records this same sweep."""
    path = os.path.join(out, "sweep.json")
    if os.path.exists(path) and not overwrite:
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise Usage(f"'{path}' cannot be read ({e}); it is not a sweep this tool wrote")
        if old != sweep:
            diff = [k for k in sorted(set(old) | set(sweep)) if old.get(k) != sweep.get(k)]
            raise Usage(f"'{out}' holds another sweep ({', '.join(diff)} differ from '{path}'): use another OUT, "
                        f"or --overwrite to start this one there (its runs are trained again)")
        return
    if os.path.exists(path) and overwrite:
        for name in json.load(open(path)).get("runs", {}):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(sweep, indent=2) + "\n")
    os.replace(tmp, path)


def finished_eval(path):
    try:
        with open(path) as f:
            return json.load(f).get("tool") == "iat-eval"
    except (OSError, ValueError, AttributeError):
        return False


class Runner:
    """Runs the sweep's runs, `jobs` at a time; remembers the failures and stops on a signal."""

    def __init__(self, a, train, evaluate, sweep):
        self.a, self.train, self.evaluate, self.sweep = a, train, evaluate, sweep
        self.lock = threading.Lock()
        self.failed = []
        self.stopped = False
        self.children = set()

    def call(self, cmd, log):
        """Runs cmd with its output appended to log; its exit status (or None when stopped)."""
        with self.lock:
            if self.stopped:
                return None
            with open(log, "a") as f:
                f.write("$ " + " ".join(cmd) + "\n")
                f.flush()
                p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            self.children.add(p)
        rc = p.wait()
        with self.lock:
            self.children.discard(p)
            return None if self.stopped else rc

    def stop(self, sig):
        with self.lock:
            self.stopped = True
            for p in self.children:  # they keep what they did (iat-train: a checkpoint; iat-eval: its state)
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass

    def say(self, text):
        with self.lock:
            print(f"sweep.py: {text}", flush=True)

    def fail(self, name, what, log, rc):
        with self.lock:
            self.failed.append(name)
        tail = ""
        try:
            with open(log) as f:
                tail = "".join(f.readlines()[-5:])
        except OSError:
            pass
        self.say(f"{name}: {what} failed (exit {rc}); the end of {log}:\n{tail.rstrip()}")

    def run_one(self, name):
        out = os.path.join(self.a.out, name)
        args = self.sweep["runs"][name]
        data_dir = ["--data-dir", self.a.data_dir] if self.a.data_dir else []
        if not os.path.exists(os.path.join(out, "summary.json")):
            if os.path.exists(os.path.join(out, "checkpoint.pt")):
                how, mode = "resuming", ["--resume"]
            elif os.path.isdir(out):
                how, mode = "starting over (stopped before its first checkpoint)", ["--overwrite"]
            else:
                how, mode = "training", []
            os.makedirs(out, exist_ok=True)
            for stale in ("eval.json", "eval.state"):  # an evaluation of weights this training replaces
                if os.path.exists(os.path.join(out, stale)):
                    os.remove(os.path.join(out, stale))
            self.say(f"{name}: {how}")
            cmd = [self.train] + args + data_dir + ["--out", out, "--threads", str(self.a.threads),
                                                    "--plain-progress", "--no-report"] + mode
            rc = self.call(cmd, os.path.join(out, "train.log"))
            if rc is None:
                return
            if rc != 0:
                return self.fail(name, "training", os.path.join(out, "train.log"), rc)
        if finished_eval(os.path.join(out, "eval.json")):
            self.say(f"{name}: trained and evaluated")
            return
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        self.say(f"{name}: evaluating (natural on {self.a.eval_n} test points, AutoAttack on {self.a.autoattack_n})")
        cmd = [self.evaluate, "--checkpoint", os.path.join(out, "checkpoint.pt"), "--dataset", cfg["dataset"]] + \
            data_dir + ["--n", str(self.a.eval_n), "--autoattack-n", str(self.a.autoattack_n), "--eps", repr(cfg["eps"]),
                        "--threads", str(self.a.threads), "--quiet", "--state", os.path.join(out, "eval.state"),
                        "--out", os.path.join(out, "eval.json"), "--no-report"] + self.a.eval_args
        rc = self.call(cmd, os.path.join(out, "eval.log"))
        if rc is None:
            return
        if rc != 0:
            return self.fail(name, "evaluation", os.path.join(out, "eval.log"), rc)
        if os.path.exists(os.path.join(out, "eval.state")):
            os.remove(os.path.join(out, "eval.state"))  # eval.json holds all of it
        self.say(f"{name}: done")

    def run(self):
        queue = list(self.sweep["runs"])
        def worker():
            while True:
                with self.lock:
                    if not queue or self.stopped:
                        return
                    name = queue.pop(0)
                self.run_one(name)
        threads = [threading.Thread(target=worker) for _ in range(self.a.jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def parse(argv):
    if "--" in argv:
        i = argv.index("--")
        argv, train_args = argv[:i], argv[i + 1:]
    else:
        train_args = []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT", help="the sweep's folder")
    parser.add_argument("--preset", required=True, help="the iat-train preset every run starts from")
    parser.add_argument("--param", action="append", default=[], metavar="FLAG=V1,V2,...",
                        help="an iat-train flag (without --) and its values; repeat for more parameters")
    parser.add_argument("--figure2", nargs="?", const="all", default="", metavar="PARAMS",
                        help="the supplement's Figure 2 grid: all four parameters (beta, gamma, momentum-epoch, "
                             "one-off-epoch), or those named, comma-separated")
    parser.add_argument("--data-dir", default="", help="the dataset's folder, for iat-train and iat-eval")
    parser.add_argument("--eval-n", type=int, default=1000, help="test points for natural accuracy (default 1000)")
    parser.add_argument("--autoattack-n", type=int, default=1000,
                        help="of them, the first N for AutoAttack standard (default 1000)")
    parser.add_argument("--eval-args", default="", help="more iat-eval flags, as one string")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="threads per run (default: cores / jobs)")
    parser.add_argument("--train", default="", help="the iat-train program (default: $IAT_TRAIN, then "
                        "build-demo/examples/, build/examples/, PATH)")
    parser.add_argument("--eval", default="", help="the iat-eval program (default: $IAT_EVAL, then as --train)")
    parser.add_argument("--overwrite", action="store_true", help="OUT holds another sweep: replace it")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their commands, run nothing")
    parser.add_argument("--no-report", action="store_true", help="do not draw the sweep at the end")
    a = parser.parse_args(argv)
    a.train_args = train_args
    a.eval_args = a.eval_args.split()
    if a.jobs < 1:
        raise Usage(f"--jobs must be at least 1, got {a.jobs}")
    if a.eval_n < 1 or a.autoattack_n < 0 or a.autoattack_n > a.eval_n:
        raise Usage(f"--eval-n must be >= 1 and --autoattack-n between 0 and it, got {a.eval_n} and {a.autoattack_n}")
    if a.threads < 0:
        raise Usage(f"--threads must be >= 0, got {a.threads}")
    if a.threads == 0:
        a.threads = max(1, (os.cpu_count() or 1) // a.jobs)
    return a


def main(argv=None):
    try:
        a = parse(sys.argv[1:] if argv is None else argv)
        train = find_program("iat-train", a.train)
        evaluate = find_program("iat-eval", a.eval)
        sweep = plan(a, train)
        if a.dry_run:
            for p in sweep["panels"]:
                print(f"{p['flag']} (preset: {p['base_value']}): " +
                      ", ".join(f"{v} -> {r}" for v, r in zip(p["values"], p["runs"])))
            for name, args in sweep["runs"].items():
                print(f"{name}: iat-train {' '.join(args)} --out {os.path.join(a.out, name)}")
            return 0
        check_manifest(a.out, sweep, a.overwrite)
    except Usage as e:
        print(f"sweep.py: {e}", file=sys.stderr)
        return EXIT_USAGE
    runner = Runner(a, train, evaluate, sweep)
    got = []
    def on_signal(sig, _frame):
        got.append(sig)
        runner.stop(sig)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    runner.say(f"{len(sweep['runs'])} runs in {a.out}, {a.jobs} at a time, {a.threads} thread(s) each")
    runner.run()
    if got:
        print(f"sweep.py: stopped by a signal; run the same command again to go on", file=sys.stderr)
        return EXIT_STOPPED
    if not a.no_report:
        rc = subprocess.call([sys.executable, os.path.join(HERE, "report.py"), "--quiet", "--sweep", a.out])
        if rc != 0:
            print(f"sweep.py: warning: the report was not drawn (report.py exit {rc}); draw it later with: "
                  f"{sys.executable} {os.path.join(HERE, 'report.py')} --sweep {a.out}", file=sys.stderr)
    if runner.failed:
        print(f"sweep.py: {len(runner.failed)} run(s) failed: {', '.join(runner.failed)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
