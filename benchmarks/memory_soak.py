#!/usr/bin/python3
"""Resident memory of a long run, sampled from the outside: runs a command, reads its VmRSS from
/proc/PID/status every --interval seconds until it exits, and prints the trace and whether it grew.

    benchmarks/memory_soak.py [--interval 0.5] [--json FILE] -- COMMAND...
    benchmarks/memory_soak.py -- build/benchmarks/bench_step_cost --model cnn --batch 32 --reps 1000 \\
        --only "UIAT (fused, beta=1)"                      # 1 000 UIAT training steps (docs/benchmarks.md)

The first quarter of the samples is the warm-up (the allocator's pools, LibTorch's caches and the first
graphs fill it); "growth" is the resident memory at the end against the end of the warm-up, and "slope" a
least-squares line through the samples after it, in MiB per minute. A run whose memory is flat shows both
near zero; a leak of one tensor per step shows a steady slope. Exit status: the command's.
"""
import argparse
import json
import subprocess
import sys
import time


def rss_kib(pid):
    """The process's resident set (VmRSS) in KiB, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slope(points):
    """Least-squares slope of (t, y) points, y per second."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mt) * (y - my) for t, y in points) / var


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        print("memory_soak.py: give the command after --", file=sys.stderr)
        return 2
    i = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples (default 0.5)")
    parser.add_argument("--json", default="", help="also write the trace and the summary here")
    a = parser.parse_args(argv[:i])
    cmd = argv[i + 1:]
    if not cmd or a.interval <= 0:
        print("memory_soak.py: a command after -- and an --interval > 0 are needed", file=sys.stderr)
        return 2
    start = time.monotonic()
    proc = subprocess.Popen(cmd)
    trace = []
    while proc.poll() is None:
        r = rss_kib(proc.pid)
        if r is not None and r > 0:
            trace.append((time.monotonic() - start, r / 1024.0))
        time.sleep(a.interval)
    rc = proc.returncode
    if len(trace) < 8:
        print(f"memory_soak.py: only {len(trace)} samples: run something longer or sample more often",
              file=sys.stderr)
        return rc or 2
    warm = len(trace) // 4
    after = trace[warm:]
    summary = {"command": cmd, "seconds": trace[-1][0], "samples": len(trace), "peak_mib": max(y for _, y in trace),
               "warmup_end_mib": after[0][1], "end_mib": trace[-1][1], "growth_mib": trace[-1][1] - after[0][1],
               "max_after_warmup_mib": max(y for _, y in after),
               "slope_mib_per_min": 60 * slope(after), "exit_status": rc}
    print(f"\nmemory_soak.py: {summary['samples']} samples over {summary['seconds']:.0f} s")
    print("| at | RSS MiB |\n|---|---|")
    for q in (0.0, 0.25, 0.5, 0.75, 1.0):
        t, y = trace[min(len(trace) - 1, int(q * (len(trace) - 1)))]
        print(f"| {t:.0f} s ({int(100 * q)} %) | {y:.1f} |")
    print(f"peak {summary['peak_mib']:.1f} MiB; after the warm-up: {summary['warmup_end_mib']:.1f} -> "
          f"{summary['end_mib']:.1f} MiB (growth {summary['growth_mib']:+.1f} MiB, max "
          f"{summary['max_after_warmup_mib']:.1f}), slope {summary['slope_mib_per_min']:+.2f} MiB/min")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary, trace=trace), f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
