#!/usr/bin/env python3
"""Runs the reference AutoAttack (fra31/auto-attack) on a TorchScript model and a points file, and writes
robust accuracy after each attack, the robust flags after each attack and the timing as JSON, in the
same layout as iat-eval's report (the fields compare_reports.py reads).

    python3 run_reference.py --ref /path/to/auto-attack --model model.pt --data points.pt \
        --eps 0.1 --seed 0 --bs 250 --out ref.json [--apgd-steps 100 --fab-steps 100 --square-queries 5000]
        [--n-targets 9]

--ref (or the environment variable AUTOATTACK_REF) is a checkout of https://github.com/fra31/auto-attack
(the check was written against commit a392200, the one RobustBench uses); it is imported from there and
not modified. Per-attack robust flags are captured by wrapping EvaluationState.add_run_attack, which the
reference calls after each attack.
"""
import argparse
import json
import os
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=os.environ.get("AUTOATTACK_REF"), help="fra31/auto-attack checkout")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--eps", type=float, required=True)
    ap.add_argument("--norm", default="Linf")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bs", type=int, default=250)
    ap.add_argument("--n", type=int, default=-1)
    ap.add_argument("--attacks", default="standard", help="standard or a comma list (a subset, standard settings)")
    ap.add_argument("--apgd-steps", type=int, default=100)
    ap.add_argument("--fab-steps", type=int, default=100)
    ap.add_argument("--square-queries", type=int, default=5000)
    ap.add_argument("--n-targets", type=int, default=9, help="target classes of APGD-T and FAB-T")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where the model and the attacks run (cpu, cuda)")
    ap.add_argument("--jit-optimize", action="store_true", help="keep TorchScript graph optimisations on "
                    "(off by default, as in iat-eval, so that both compute eager-mode gradients)")
    ap.add_argument("--save-adv", help="also torch.save({'x_adv', 'robust'}) here")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not args.ref or not os.path.isdir(os.path.join(args.ref, "autoattack")):
        sys.exit("run_reference.py: give a checkout of fra31/auto-attack with --ref or AUTOATTACK_REF "
                 "(git clone https://github.com/fra31/auto-attack; git -C auto-attack checkout a392200)")
    sys.path.insert(0, args.ref)
    from autoattack import AutoAttack  # noqa: E402
    from autoattack import state as aa_state  # noqa: E402

    torch.set_num_threads(args.threads)
    torch._C._set_graph_executor_optimize(args.jit_optimize)
    model = torch.jit.load(args.model, map_location=args.device)
    model.eval()
    points = torch.load(args.data)
    x, y = points["x"].float().to(args.device), points["y"].long().to(args.device)
    if args.n > 0:
        x, y = x[:args.n], y[:args.n]

    # Record the robust flags when the reference marks an attack as done.
    per_attack = []
    original_add = aa_state.EvaluationState.add_run_attack

    def add_run_attack(self, attack):
        per_attack.append((attack, self.robust_flags.clone().cpu(), time.time()))
        return original_add(self, attack)

    aa_state.EvaluationState.add_run_attack = add_run_attack

    adversary = AutoAttack(model, norm=args.norm, eps=args.eps, version="standard", seed=args.seed, device=args.device)
    if args.attacks != "standard":
        adversary.attacks_to_run = args.attacks.split(",")
    adversary.apgd.n_iter = args.apgd_steps
    adversary.apgd_targeted.n_iter = args.apgd_steps
    for a in (adversary.apgd, adversary.apgd_targeted):  # the checkpoint schedule is computed in __init__
        a.n_iter_2 = max(int(0.22 * a.n_iter), 1)
        a.n_iter_min = max(int(0.06 * a.n_iter), 1)
        a.size_decr = max(int(0.03 * a.n_iter), 1)
        a.n_iter_orig = a.n_iter
    adversary.fab.n_iter = args.fab_steps
    adversary.square.n_queries = args.square_queries
    adversary.apgd_targeted.n_target_classes = args.n_targets
    adversary.fab.n_target_classes = args.n_targets

    start = time.time()
    with torch.no_grad():
        clean = torch.cat([model(x[i:i + args.bs]).argmax(1) for i in range(0, x.shape[0], args.bs)]) == y
    t0 = time.time()
    x_adv = adversary.run_standard_evaluation(x, y, bs=args.bs)
    total = time.time() - start
    with torch.no_grad():
        rechecked = torch.cat([model(x_adv[i:i + args.bs]).argmax(1) for i in range(0, x.shape[0], args.bs)]) == y

    n = x.shape[0]
    steps, last = [], t0
    for attack, flags, t in per_attack:
        steps.append({"attack": attack, "robust": int(flags.sum()), "robust_accuracy": flags.sum().item() / n,
                      "seconds": t - last, "robust_flags": [int(v) for v in flags.tolist()]})
        last = t
    final = per_attack[-1][1] if per_attack else clean
    report = {
        "tool": "fra31/auto-attack", "model": args.model, "data": args.data, "num_points": n, "norm": args.norm,
        "eps": args.eps, "seed": args.seed, "batch_size": args.bs, "threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "device": args.device,
        "budgets": {"apgd_steps": args.apgd_steps, "fab_steps": args.fab_steps,
                    "square_queries": args.square_queries, "n_targets": args.n_targets},
        "attacks": adversary.attacks_to_run,
        "clean_accuracy": clean.float().mean().item(), "clean_correct": int(clean.sum()),
        "steps": steps,
        "robust_accuracy": final.float().mean().item(), "robust_count": int(final.sum()),
        "robust_accuracy_rechecked": rechecked.float().mean().item(),
        "robust_count_rechecked": int(rechecked.sum()),
        "max_perturbation": (x_adv - x).abs().reshape(n, -1).max(1)[0].max().item() if args.norm == "Linf"
        else ((x_adv - x) ** 2).reshape(n, -1).sum(-1).sqrt().max().item(),
        "total_seconds": total,
        "robust_flags": [int(v) for v in final.tolist()],
    }
    if args.save_adv:
        torch.save({"x_adv": x_adv, "robust": final}, args.save_adv)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"reference: robust accuracy {report['robust_accuracy']:.4f} in {total:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
