#!/usr/bin/python3
"""Assembles the demo's report from what the runs measured: runs/demo/<method>/summary.json (iat-train)
and runs/demo/<method>/eval.json (iat-eval). Writes report.json and report.md in the demo folder and prints
the table. No number here is typed by hand: each comes from those files.

    scripts/demo_report.py runs/demo pgd-at uiat
"""
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: demo_report.py DEMO_DIR METHOD [METHOD ...]")
    root, methods = sys.argv[1], sys.argv[2:]
    report = {"methods": {}}
    for m in methods:
        summary = load(os.path.join(root, m, "summary.json"))
        ev = load(os.path.join(root, m, "eval.json"))
        row = {
            "clean_acc": ev["clean_acc"],
            "pgd20_acc": ev.get("pgd20_acc"),
            "cw_acc": ev.get("cw_acc"),
            "train_seconds": summary["train_seconds"],
            "epochs": summary["config"]["epochs"],
            "train_examples": summary["train_examples"],
            "test_examples": ev["test_examples"],
        }
        if ev.get("autoattack_acc") is not None:
            row["autoattack_acc"] = ev["autoattack_acc"]
            row["autoattack_examples"] = ev.get("autoattack_examples")
        row["dataset"] = summary["config"]["dataset"]
        row["model"] = summary["config"]["model"]
        row["eps"] = summary["config"]["eps"]
        report["methods"][m] = row
    with open(os.path.join(root, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    def pct(v):
        return "—" if v is None else f"{100 * v:.2f}"

    first = report["methods"][methods[0]]
    aa_n = first.get("autoattack_examples")
    lines = [
        f"# iat demo: {', '.join(methods)} on {first['dataset']} ({first['model']}, eps = {first['eps']:.4g})",
        "",
        f"| method | clean % | PGD-20 % | CW∞ % | AutoAttack %{f' ({aa_n} pts)' if aa_n else ''} | train s | epochs | train examples | test examples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        r = report["methods"][m]
        lines.append(
            f"| {m} | {pct(r['clean_acc'])} | {pct(r['pgd20_acc'])} | {pct(r.get('cw_acc'))} | "
            f"{pct(r.get('autoattack_acc'))} | {r['train_seconds']:.0f} | {r['epochs']} | {r['train_examples']} | "
            f"{r['test_examples']} |")
    lines += ["", "Pictures:", ""]
    for m in methods:
        lines.append(f"- {m}: [training curves]({m}/curves.png), [Figure 1: inverse adversaries]({m}/figure1.png)")
    lines += ["", "Produced by `scripts/demo.sh`; the numbers come from `*/summary.json` and `*/eval.json`."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(root, "report.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
