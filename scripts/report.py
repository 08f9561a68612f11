#!/usr/bin/python3
"""iat's report tool: every picture of iat-train, iat-eval and the demo, drawn with matplotlib from the data
the programs write. No number is typed by hand: each comes from the files named below.

    scripts/report.py RUN_DIR                  # an iat-train run: curves.png/.svg, figure1.png/.svg
    scripts/report.py eval.json                # an iat-eval report: eval.png/.svg (AutoAttack, attack by attack)
    scripts/report.py --compare OUT RUN_DIR... # several runs on shared axes: OUT/curves, OUT/accuracy,
                                               # OUT/report.md and OUT/report.json (the demo's report)
    scripts/report.py --sweep OUT              # a sweep of scripts/sweep.py: OUT/figure2 (natural and
                                               # AutoAttack accuracy against each parameter), OUT/report.md/.json

What it reads:
  RUN_DIR/progress.jsonl  the running training loss and adversarial accuracy, twenty rows an epoch
                          (epoch as a fraction, step, train_loss, train_adv_acc, lr, examples)
  RUN_DIR/metrics.jsonl   one row per epoch (natural and PGD-k accuracy on the test subset, EMA's if kept)
  RUN_DIR/config.json     the run's settings (dataset, model, method, eps)
  RUN_DIR/figure1.npz     the supplement's Figure 1 data: natural, inverse, universal (UIAT), delta (UIAT),
                          each [n, C, H, W] in [0, 1] with its p_y, and the labels
  RUN_DIR/summary.json    written at the end of training (--compare reads train_seconds from it)
  RUN_DIR/eval.json       iat-eval's --out report (--compare reads clean / PGD-20 / CW / AutoAttack from it)
  OUT/sweep.json          scripts/sweep.py's record of a sweep: its parameters, values and run folders (each
                          run's eval.json gives the natural and AutoAttack accuracy; a run not evaluated yet
                          is left out of the picture and marked in the table)

Every picture is written as PNG and SVG (--formats png,svg), replaced whole (temporary file + rename).
Exit status: 0 done, 2 bad arguments or unreadable input (the message names the file), 3 matplotlib missing.
"""
import argparse
import json
import math
import os
import sys
import zipfile

EXIT_BAD_INPUT = 2
EXIT_NO_MATPLOTLIB = 3

# The datasets' class names, in label order (iat::data's loaders use the datasets' own label order).
CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "svhn": [str(d) for d in range(10)],
    "mnist": [str(d) for d in range(10)],
}
for alias, name in (("fashion_mnist", "fashion-mnist"), ("fmnist", "fashion-mnist"), ("cifar-10", "cifar10")):
    CLASS_NAMES[alias] = CLASS_NAMES[name]


class BadInput(Exception):
    """An input file that is missing or not what the programs write; the message names it."""


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise BadInput(f"cannot read '{path}': {e.strerror}")
    except json.JSONDecodeError as e:
        raise BadInput(f"'{path}' is not JSON: {e}")


def read_jsonl(path):
    """The rows of a JSON-lines file ([] when it does not exist). A last line without its newline is a row
    being appended (iat-train writes progress.jsonl as it goes): it is left out when it does not parse."""
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read '{path}': {e}")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines):  # no newline after it: cut short by a kill, or still being written
                break
            raise BadInput(f"'{path}' line {n} is not JSON: {e}")
    return rows


def pgd_key(row):
    """The name of the per-epoch PGD accuracy column ('pgd10_acc', ...) and its step count, or (None, None)."""
    for k in row:
        if k.startswith("pgd") and k.endswith("_acc") and k[3:-4].isdigit():
            return k, int(k[3:-4])
    return None, None


class Run:
    """What one iat-train run folder holds."""

    def __init__(self, folder):
        self.folder = folder
        self.label = os.path.basename(os.path.normpath(folder))
        if not os.path.isdir(folder):
            raise BadInput(f"'{folder}' is not a folder (expected an iat-train --out folder)")
        self.metrics = read_jsonl(os.path.join(folder, "metrics.jsonl"))
        self.progress = read_jsonl(os.path.join(folder, "progress.jsonl"))
        if not self.metrics and not self.progress:
            raise BadInput(f"'{folder}' holds neither metrics.jsonl nor progress.jsonl: not an iat-train run")
        config = os.path.join(folder, "config.json")
        self.config = read_json(config) if os.path.exists(config) else {}
        summary = os.path.join(folder, "summary.json")
        self.summary = read_json(summary) if os.path.exists(summary) else None
        ev = os.path.join(folder, "eval.json")
        self.eval = read_json(ev) if os.path.exists(ev) else None

    def title(self):
        c = self.config
        parts = [c.get("method", self.label)]
        if "dataset" in c:
            parts.append(f"on {c['dataset']}")
        if "model" in c:
            parts.append(f"({c['model']})")
        return " ".join(str(p) for p in parts)


def import_pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # The same inputs give the same files: no dates in the metadata, fixed SVG ids.
    matplotlib.rcParams["svg.hashsalt"] = "iat"
    matplotlib.rcParams["figure.dpi"] = 100
    matplotlib.rcParams["axes.grid"] = True
    matplotlib.rcParams["grid.alpha"] = 0.3
    return plt


def save(fig, stem, formats):
    """Writes the figure as stem.<format> for each format, each replaced whole; returns the paths."""
    written = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        tmp = f"{stem}.tmp.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        try:
            fig.savefig(tmp, format=fmt, metadata=metadata, bbox_inches="tight", dpi=150 if fmt == "png" else None)
            os.replace(tmp, path)
        except OSError as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise BadInput(f"cannot write '{path}': {e.strerror}")
        written.append(path)
    return written


# ---- training curves --------------------------------------------------------------------------------------
def curve_series(run):
    """The series of one run: {name: (x, y)} in epochs and loss / percent."""
    s = {}
    if run.progress:
        s["loss"] = ([r["epoch"] for r in run.progress], [r["train_loss"] for r in run.progress])
        s["train_adv"] = ([r["epoch"] for r in run.progress], [100 * r["train_adv_acc"] for r in run.progress])
    else:  # a run of an iat older than progress.jsonl: the per-epoch means
        s["loss"] = ([r["epoch"] for r in run.metrics], [r["train_loss"] for r in run.metrics])
        s["train_adv"] = ([r["epoch"] for r in run.metrics], [100 * r["train_adv_acc"] for r in run.metrics])
    if run.metrics:
        ep = [r["epoch"] for r in run.metrics]
        s["natural"] = (ep, [100 * r["natural_acc"] for r in run.metrics])
        key, steps = pgd_key(run.metrics[0])
        if key:
            s["pgd"] = (ep, [100 * r[key] for r in run.metrics])
            s["pgd_steps"] = steps
        if "ema_natural_acc" in run.metrics[0]:
            s["ema_natural"] = (ep, [100 * r["ema_natural_acc"] for r in run.metrics])
            if key:
                s["ema_pgd"] = (ep, [100 * r["ema_" + key] for r in run.metrics])
    return s


def draw_curves(plt, runs, title):
    """Training loss (left) and accuracy (right) against epochs, every run on the same axes: the running
    training values as lines, the per-epoch test-subset evaluations as markers joined by lines."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    several = len(runs) > 1
    for i, run in enumerate(runs):
        s = curve_series(run)
        c = colours[i % len(colours)]
        prefix = f"{run.label}: " if several else ""
        ax_loss.plot(*s["loss"], color=c, lw=1.4, label=f"{prefix}train loss (running)")
        ax_acc.plot(*s["train_adv"], color=c, lw=1.0, alpha=0.55, label=f"{prefix}train (adversarial, running)")
        if "natural" in s:
            ax_acc.plot(*s["natural"], color=c, ls="-", marker="o", ms=5, lw=1.6, label=f"{prefix}natural (test)")
        if "pgd" in s:
            ax_acc.plot(*s["pgd"], color=c, ls="--", marker="s", ms=5, lw=1.6,
                        label=f"{prefix}PGD-{s['pgd_steps']} (test)")
        if "ema_natural" in s:
            ax_acc.plot(*s["ema_natural"], color=c, ls=":", marker="^", ms=5, label=f"{prefix}EMA natural (test)")
        if "ema_pgd" in s:
            ax_acc.plot(*s["ema_pgd"], color=c, ls=":", marker="v", ms=5, label=f"{prefix}EMA PGD (test)")
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(left=0)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- Figure 1 ----------------------------------------------------------------------------------------------
def read_figure_data(path):
    """The arrays of figure1.npz (numpy), checked for the keys and shapes iat-train writes."""
    import numpy as np
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise BadInput(f"'{path}' is not a readable .npz archive: {e}")
    for k in ("labels", "natural", "natural_p_y", "inverse", "inverse_p_y"):
        if k not in data:
            raise BadInput(f"'{path}' has no array '{k}' (arrays: {', '.join(sorted(data))})")
    n = data["labels"].shape[0]
    for k, v in data.items():
        if v.shape[:1] != (n,):
            raise BadInput(f"'{path}' array '{k}' has shape {v.shape}, expected {n} rows like 'labels'")
    return data


def image_rows(data):
    """(row title, images [n, H, W(, C)] in [0, 1], captions or None) of Figure 1, top to bottom."""
    import numpy as np

    def hwc(x):
        x = np.clip(x.astype(np.float32), 0, 1).transpose(0, 2, 3, 1)
        return x[..., 0] if x.shape[-1] == 1 else x

    def captions(p):
        return [f"$p_y$ = {v:.2f}" for v in p]

    rows = [("natural", hwc(data["natural"]), captions(data["natural_p_y"])),
            ("inverse adversarial", hwc(data["inverse"]), captions(data["inverse_p_y"]))]
    if "universal" in data:
        rows.append(("universal inverse", hwc(data["universal"]), captions(data["universal_p_y"])))
    if "delta" in data:
        # delta_y amplified ten times around grey: brighter is positive, darker negative.
        rows.append((r"$\delta_y$ $\times$10", hwc(0.5 + 10 * data["delta"]), None))
    return rows


def draw_figure1(plt, data, title, class_names):
    rows = image_rows(data)
    labels = [int(v) for v in data["labels"]]
    n = len(labels)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.35 * n + 1.4, 1.75 * len(rows) + 0.6), squeeze=False)
    for r, (name, images, caps) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(images[i], cmap="gray" if images.ndim == 3 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if r == 0:
                y = labels[i]
                ax.set_title(class_names[y] if class_names and y < len(class_names) else f"class {y}", fontsize=9)
            if caps:
                ax.set_xlabel(caps[i], fontsize=8)
            if i == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- AutoAttack breakdown ----------------------------------------------------------------------------------
def draw_eval(plt, ev, title):
    """Robust accuracy after each attack of AutoAttack's sequence (bars, with the points left and the
    seconds each attack took), after the clean accuracy; the other attacks of --also beside them."""
    from matplotlib.patches import Patch
    n_all = ev.get("test_examples", ev["num_points"])
    names = ["clean"] + [f"after {s['attack']}" for s in ev["steps"]]
    acc = [100 * ev["clean_accuracy"]] + [100 * s["robust_accuracy"] for s in ev["steps"]]
    notes = [f"{ev['clean_correct']} pts"] + [f"{s['robust']} pts, {s['seconds']:.1f} s" for s in ev["steps"]]
    colours = ["#4c72b0"] + ["#dd8452"] * len(ev["steps"])
    for name, e in sorted(ev.get("also", {}).items()):
        names.append("PGD-20" if name == "pgd20" else ("CW-inf" if name == "cw" else name))
        acc.append(100 * e["accuracy"])
        notes.append(f"{e['correct']} pts")
        colours.append("#55a868")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.6))
    bars = ax.bar(range(len(names)), acc, color=colours)
    for b, a, note in zip(bars, acc, notes):
        ax.annotate(f"{a:.2f}%\n{note}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20 if len(names) > 6 else 0)
    ax.set_ylim(0, 118)
    ax.set_ylabel("accuracy (%)")
    legend = [Patch(color="#4c72b0", label=f"clean (first {ev['num_points']} points)"),
              Patch(color="#dd8452", label="robust after each attack, in AutoAttack's order")]
    if ev.get("also"):
        legend.append(Patch(color="#55a868", label=f"--also attacks (all {n_all} points)"))
    ax.legend(handles=legend, fontsize=8, loc="upper right")
    ax.set_title(f"AutoAttack {ev.get('version', '')}: robust {100 * ev['robust_accuracy']:.2f}% of "
                 f"{ev['num_points']} points, {ev['norm']} eps = {ev.get('eps_text', ev['eps'])}, "
                 f"{ev['total_seconds']:.0f} s", fontsize=10)
    ax.grid(axis="x", visible=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ---- several runs: the demo's report -----------------------------------------------------------------------
# (column, key in eval.json, label) of the comparison's accuracy bars and table.
ACCURACY_COLUMNS = [("clean", "clean_acc", "clean"), ("pgd20", "pgd20_acc", "PGD-20"), ("cw", "cw_acc", "CW∞"),
                    ("autoattack", "autoattack_acc", "AutoAttack")]


def draw_accuracy_bars(plt, runs, title):
    """Clean / PGD-20 / CW-inf / AutoAttack accuracy of each run, grouped by measure."""
    measures = [(key, label) for _, key, label in ACCURACY_COLUMNS
                if any(r.eval and r.eval.get(key) is not None for r in runs)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(measures) * max(1, len(runs)) / 2 + 2), 4.4))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        vals = [100 * run.eval[k] if run.eval and run.eval.get(k) is not None else math.nan for k, _ in measures]
        xs = [m + (i - (len(runs) - 1) / 2) * width for m in range(len(measures))]
        bars = ax.bar(xs, vals, width, label=run.label)
        for b, v in zip(bars, vals):
            if not math.isnan(v):
                ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8,
                            xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(measures)))
    labels = []
    for k, label in measures:
        n = next((r.eval.get("autoattack_examples") for r in runs if r.eval), None) if k == "autoattack_acc" else \
            next((r.eval.get("test_examples") for r in runs if r.eval), None)
        labels.append(f"{label}\n({n} pts)" if n else label)
    ax.set_xticklabels(labels)
    ax.set_ylim(0, 110)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="x", visible=False)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def comparison_table(runs):
    """report.json's content: one row per run, every number read from its summary.json and eval.json."""
    out = {"methods": {}}
    for run in runs:
        if run.summary is None or run.eval is None:
            missing = "summary.json" if run.summary is None else "eval.json"
            raise BadInput(f"'{os.path.join(run.folder, missing)}' is missing: --compare needs finished and "
                           f"evaluated runs")
        c = run.summary["config"]
        row = {key: run.eval.get(key) for _, key, _ in ACCURACY_COLUMNS}
        row.update({"autoattack_examples": run.eval.get("autoattack_examples"),
                    "test_examples": run.eval["test_examples"], "train_seconds": run.summary["train_seconds"],
                    "epochs": c["epochs"], "train_examples": run.summary["train_examples"],
                    "dataset": c["dataset"], "model": c["model"], "eps": c["eps"]})
        out["methods"][run.label] = row
    return out


def comparison_markdown(table, pictures):
    def pct(v):
        return "—" if v is None else f"{100 * v:.2f}"

    rows = table["methods"]
    first = next(iter(rows.values()))
    aa_n = first.get("autoattack_examples")
    lines = [f"# iat: {', '.join(rows)} on {first['dataset']} ({first['model']}, eps = {first['eps']:.4g})", "",
             f"| method | clean % | PGD-20 % | CW∞ % | AutoAttack %{f' ({aa_n} pts)' if aa_n else ''} | train s | "
             f"epochs | train examples | test examples |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        lines.append(f"| {m} | {pct(r['clean_acc'])} | {pct(r['pgd20_acc'])} | {pct(r['cw_acc'])} | "
                     f"{pct(r['autoattack_acc'])} | {r['train_seconds']:.0f} | {r['epochs']} | {r['train_examples']} | "
                     f"{r['test_examples']} |")
    lines.append("")
    if pictures:
        lines += [f"![{name}]({path})" for name, path in pictures]
        lines.append("")
    for m in rows:
        lines.append(f"- {m}: [training curves]({m}/curves.png), [Figure 1: inverse adversaries]({m}/figure1.png), "
                     f"[AutoAttack by attack]({m}/eval.png)")
    lines.append("")
    return "\n".join(lines)


def write_text(path, text):
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise BadInput(f"cannot write '{path}': {e.strerror}")


# ---- a sweep: the supplement's Figure 2 ---------------------------------------------------------------------
# How each swept iat-train flag is named on the figure (the paper's symbols for Figure 2's four).
PARAM_LABELS = {"beta": ("β", "β, the regulariser's weight in the inverse loss"),
                "gamma": ("γ", "γ, the inverse momentum"),
                "momentum-epoch": ("T", "T, the epoch the momentum starts"),
                "one-off-epoch": ("T′", "T′, the one-off epoch (uiat-one-off)"),
                "lambda": ("λ", "λ, the alignment weight")}


def read_sweep(out):
    """OUT/sweep.json (scripts/sweep.py) with each run's results: [panel] with natural and autoattack lists
    (None for a run not evaluated yet)."""
    sweep = read_json(os.path.join(out, "sweep.json"))
    if not isinstance(sweep, dict) or sweep.get("tool") != "iat-sweep":
        raise BadInput(f"'{os.path.join(out, 'sweep.json')}' is not a sweep (no \"tool\": \"iat-sweep\")")
    results = {}
    for name in sweep["runs"]:
        ev_path = os.path.join(out, name, "eval.json")
        ev = read_json(ev_path) if os.path.exists(ev_path) else None
        sm_path = os.path.join(out, name, "summary.json")
        sm = read_json(sm_path) if os.path.exists(sm_path) else None
        results[name] = {"clean_acc": ev.get("clean_acc") if ev else None,
                         "autoattack_acc": ev.get("autoattack_acc") if ev else None,
                         "test_examples": ev.get("test_examples") if ev else None,
                         "autoattack_examples": ev.get("autoattack_examples") if ev else None,
                         "train_seconds": sm.get("train_seconds") if sm else None}
    panels = []
    for p in sweep["panels"]:
        rows = sorted((dict(results[r], run=r, value=v) for v, r in zip(p["values"], p["runs"])),
                      key=lambda row: float(row["value"]))
        panels.append({"flag": p["flag"], "method": p.get("method"), "base_value": p["base_value"], "rows": rows})
    return sweep, panels


def draw_sweep(plt, sweep, panels):
    """One panel per parameter: natural and AutoAttack accuracy against its value, the preset's value marked."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.6, 4.2), squeeze=False)
    for i, (ax, p) in enumerate(zip(axes[0], panels)):
        symbol, long_name = PARAM_LABELS.get(p["flag"], (p["flag"], p["flag"]))
        xs = [float(r["value"]) for r in p["rows"]]
        for key, label, style in (("clean_acc", "natural", "o-"), ("autoattack_acc", "AutoAttack", "s--")):
            pts = [(x, 100 * r[key]) for x, r in zip(xs, p["rows"]) if r[key] is not None]
            if pts:
                line, = ax.plot(*zip(*pts), style, ms=6, lw=1.6, label=label)
                for x, y in pts:
                    ax.annotate(f"{y:.1f}", (x, y), xytext=(0, 5), textcoords="offset points", ha="center",
                                fontsize=8, color=line.get_color())
        ax.axvline(float(p["base_value"]), color="grey", ls=":", lw=1.2, label=f"preset ({symbol} = {p['base_value']})")
        if all(x.is_integer() for x in xs):
            ax.set_xticks(xs)
        ax.set_title(f"({chr(ord('a') + i)}) {symbol}")
        ax.set_xlabel(long_name)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=8, loc="best")
        ax.margins(y=0.15)
    first = next((r for p in panels for r in p["rows"] if r["test_examples"]), None)
    counts = f": natural on {first['test_examples']}, AutoAttack on {first['autoattack_examples']} test points" \
        if first else ""
    fig.suptitle(f"hyper-parameter sensitivity, preset {sweep['preset']}{counts}")
    fig.tight_layout()
    return fig


def sweep_markdown(sweep, panels):
    def pct(v):
        return "not evaluated yet" if v is None else f"{100 * v:.2f}"

    extra = " ".join(sweep.get("train_args", []))
    lines = [f"# iat: hyper-parameter sweep of {sweep['preset']}{f' ({extra})' if extra else ''}", "",
             "![Figure 2](figure2.png)", ""]
    for p in panels:
        symbol, long_name = PARAM_LABELS.get(p["flag"], (p["flag"], p["flag"]))
        lines += [f"## {long_name} (--{p['flag']}; the preset's value: {p['base_value']})", "",
                  f"| {symbol} | run | natural % | AutoAttack % | train s |", "|---|---|---|---|---|"]
        for r in p["rows"]:
            t = "—" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
            lines.append(f"| {r['value']} | {r['run']} | {pct(r['clean_acc'])} | {pct(r['autoattack_acc'])} | {t} |")
        lines.append("")
    return "\n".join(lines)


def report_sweep(plt, out, formats):
    sweep, panels = read_sweep(out)
    fig = draw_sweep(plt, sweep, panels)
    written = save(fig, os.path.join(out, "figure2"), formats)
    plt.close(fig)
    table = {"preset": sweep["preset"], "train_args": sweep.get("train_args", []), "panels": panels}
    write_text(os.path.join(out, "report.json"), json.dumps(table, indent=2) + "\n")
    text = sweep_markdown(sweep, panels)
    write_text(os.path.join(out, "report.md"), text)
    return written + [os.path.join(out, "report.json"), os.path.join(out, "report.md")]


# ---- the command line --------------------------------------------------------------------------------------
def report_run(plt, run, formats):
    written = []
    fig = draw_curves(plt, [run], run.title())
    written += save(fig, os.path.join(run.folder, "curves"), formats)
    plt.close(fig)
    npz = os.path.join(run.folder, "figure1.npz")
    if os.path.exists(npz):
        data = read_figure_data(npz)
        dataset = run.config.get("dataset", "")
        fig = draw_figure1(plt, data, f"Figure 1: {run.title()}", CLASS_NAMES.get(dataset))
        written += save(fig, os.path.join(run.folder, "figure1"), formats)
        plt.close(fig)
    return written


def report_eval(plt, path, formats):
    ev = read_json(path)
    if not isinstance(ev, dict) or ev.get("tool") != "iat-eval":
        raise BadInput(f"'{path}' is not an iat-eval report (no \"tool\": \"iat-eval\")")
    fig = draw_eval(plt, ev, str(ev.get("model", path)))
    stem = os.path.splitext(path)[0]
    written = save(fig, stem, formats)
    plt.close(fig)
    return written


def report_compare(plt, out, runs, formats):
    os.makedirs(out, exist_ok=True)
    table = comparison_table(runs)
    first = next(iter(table["methods"].values()))
    what = f"{first['dataset']}, {first['model']}, eps = {first['eps']:.4g}"
    written = []
    fig = draw_curves(plt, runs, f"training: {', '.join(r.label for r in runs)} ({what})")
    written += save(fig, os.path.join(out, "curves"), formats)
    plt.close(fig)
    fig = draw_accuracy_bars(plt, runs, f"test accuracy ({what})")
    written += save(fig, os.path.join(out, "accuracy"), formats)
    plt.close(fig)
    write_text(os.path.join(out, "report.json"), json.dumps(table, indent=2) + "\n")
    pictures = [("training curves", "curves.png"), ("accuracy", "accuracy.png")]
    text = comparison_markdown(table, pictures)
    write_text(os.path.join(out, "report.md"), text)
    written += [os.path.join(out, "report.json"), os.path.join(out, "report.md")]
    print(text)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="iat-train run folders and iat-eval JSON reports")
    parser.add_argument("--compare", metavar="OUT", help="also draw the runs on shared axes into OUT, with the table")
    parser.add_argument("--sweep", metavar="OUT", help="draw the sweep in OUT (scripts/sweep.py): OUT/figure2")
    parser.add_argument("--formats", default="png,svg", help="picture formats (default png,svg)")
    parser.add_argument("--quiet", action="store_true", help="do not list the files written")
    args = parser.parse_args(argv)
    if not args.paths and not args.sweep:
        parser.error("give a run folder, an iat-eval report, or --sweep OUT")
    formats = [f for f in args.formats.split(",") if f]
    for f in formats:
        if f not in ("png", "svg", "pdf"):
            parser.error(f"--formats: '{f}' is not one of png, svg, pdf")
    plt = import_pyplot()
    if plt is None:
        print(f"report.py: matplotlib is not installed for {sys.executable} (Debian: apt-get install "
              f"python3-matplotlib; PyPI: pip install matplotlib)", file=sys.stderr)
        return EXIT_NO_MATPLOTLIB
    written = []
    try:
        runs = []
        for p in args.paths:
            if os.path.isdir(p):
                run = Run(p)
                runs.append(run)
                written += report_run(plt, run, formats)
                if run.eval is not None:
                    written += report_eval(plt, os.path.join(p, "eval.json"), formats)
            elif os.path.isfile(p):
                written += report_eval(plt, p, formats)
            else:
                raise BadInput(f"'{p}' does not exist (expected an iat-train run folder or an iat-eval report)")
        if args.compare:
            if not runs:
                raise BadInput("--compare needs at least one iat-train run folder")
            written += report_compare(plt, args.compare, runs, formats)
        if args.sweep:
            written += report_sweep(plt, args.sweep, formats)
    except BadInput as e:
        print(f"report.py: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyError, TypeError, ValueError) as e:
        print(f"report.py: an input is not what iat's programs write ({type(e).__name__}: {e})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.quiet:
        for w in written:
            print(f"report.py: wrote {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
