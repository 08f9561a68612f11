#!/usr/bin/env python3
"""Compares an iat-eval report with a reference report (run_reference.py): robust accuracy after each
attack, the per-point robust flags after each attack and at the end, and the adversarial examples
themselves when both --adv files are given. Prints a summary line per attack; exit status 1 on any
disagreement in the flags.

    python3 compare_reports.py --iat iat.json --ref ref.json [--iat-adv iat_adv.pt --ref-adv ref_adv.pt]
        [--label standard-linf] [--summary summary.jsonl]
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iat", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--iat-adv")
    ap.add_argument("--ref-adv")
    ap.add_argument("--label", default="")
    ap.add_argument("--summary", help="append one JSON line with the comparison here")
    args = ap.parse_args()
    a = json.load(open(args.iat))
    r = json.load(open(args.ref))
    n = a["num_points"]
    assert n == r["num_points"], f"different numbers of points: iat {n}, reference {r['num_points']}"

    out = {"label": args.label, "num_points": n, "clean_iat": a["clean_correct"], "clean_ref": r["clean_correct"],
           "steps": [], "time_iat": a["total_seconds"], "time_ref": r["total_seconds"]}
    ok = a["clean_correct"] == r["clean_correct"]
    print(f"[{args.label}] {n} points; clean correct: iat {a['clean_correct']}, reference {r['clean_correct']}")
    ref_steps = {s["attack"]: s for s in r["steps"]}
    for s in a["steps"]:
        t = ref_steps.get(s["attack"])
        if t is None:
            print(f"  {s['attack']:9s} not run by the reference")
            ok = False
            continue
        diff = [i for i, (u, v) in enumerate(zip(s["robust_flags"], t["robust_flags"])) if u != v]
        ok = ok and not diff
        out["steps"].append({"attack": s["attack"], "robust_iat": s["robust"], "robust_ref": t["robust"],
                             "flags_differ": len(diff), "differing_points": diff[:20],
                             "seconds_iat": s["seconds"], "seconds_ref": t["seconds"]})
        print(f"  after {s['attack']:9s} robust: iat {s['robust']:4d} ({100 * s['robust_accuracy']:6.2f}%), "
              f"reference {t['robust']:4d} ({100 * t['robust_accuracy']:6.2f}%); points with different flags: "
              f"{len(diff)}{' ' + str(diff[:20]) if diff else ''}; time iat {s['seconds']:.1f} s, "
              f"reference {t['seconds']:.1f} s")
    diff = [i for i, (u, v) in enumerate(zip(a["robust_flags"], r["robust_flags"])) if u != v]
    ok = ok and not diff
    out.update({"robust_iat": a["robust_count"], "robust_ref": r["robust_count"],
                "robust_rechecked_iat": a["robust_count_rechecked"], "robust_rechecked_ref": r["robust_count_rechecked"],
                "final_flags_differ": len(diff)})
    print(f"  final robust: iat {a['robust_count']} (re-checked {a['robust_count_rechecked']}), reference "
          f"{r['robust_count']} (re-checked {r['robust_count_rechecked']}); points with different flags: {len(diff)}")
    if args.iat_adv and args.ref_adv:
        import torch
        xa = torch.load(args.iat_adv)["x_adv"]
        xr = torch.load(args.ref_adv)["x_adv"]
        d = (xa - xr).abs().reshape(n, -1).max(1)[0]
        out["adv_identical_points"] = int((d == 0).sum())
        out["adv_max_abs_diff"] = d.max().item()
        print(f"  adversarial examples bit-identical for {int((d == 0).sum())}/{n} points "
              f"(largest difference {d.max().item():.3g})")
    print(f"  total time: iat {a['total_seconds']:.1f} s, reference {r['total_seconds']:.1f} s, ratio "
          f"reference/iat {r['total_seconds'] / max(a['total_seconds'], 1e-9):.2f}")
    out["agree"] = ok
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(json.dumps(out) + "\n")
    print(f"  -> {'AGREE' if ok else 'DISAGREE'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
