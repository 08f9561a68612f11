#!/usr/bin/python3
"""Tests of the report tool (scripts/report.py): every picture is checked for what it draws (the line and bar
data, titles, axis labels, legends, captions), not only for being written; bad input exits 2 naming the file.

    /usr/bin/python3 tests/test_report.py [path/to/scripts/report.py]
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(HERE, "..", "scripts", "report.py")
spec = importlib.util.spec_from_file_location("report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)
plt = report.import_pyplot()


def write_jsonl(path, rows, last_newline=True):
    with open(path, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + ("\n" if last_newline else ""))


def make_run(folder, epochs=2, rows_per_epoch=4, uiat=True, ema=False):
    """A run folder as iat-train writes it, with known numbers."""
    os.makedirs(folder, exist_ok=True)
    progress = []
    for e in range(epochs):
        for k in range(1, rows_per_epoch + 1):
            t = e + k / rows_per_epoch
            progress.append({"epoch": t, "step": int(10 * t), "train_loss": 2.0 / (1 + t),
                             "train_adv_acc": 0.1 + 0.2 * t, "lr": 0.1, "examples": 64.0})
    write_jsonl(os.path.join(folder, "progress.jsonl"), progress)
    metrics = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "step": 10 * e, "train_loss": 1.5 / e, "train_adv_acc": 0.2 * e, "lr": 0.1,
               "natural_acc": 0.5 + 0.1 * e, "pgd10_acc": 0.2 + 0.05 * e, "seconds": 1.0, "images_per_second": 9.0}
        if ema:
            row.update({"ema_natural_acc": 0.55 + 0.1 * e, "ema_pgd10_acc": 0.25 + 0.05 * e})
        metrics.append(row)
    write_jsonl(os.path.join(folder, "metrics.jsonl"), metrics)
    config = {"method": "uiat" if uiat else "pgd-at", "dataset": "fashion-mnist", "model": "cnn", "eps": 0.1,
              "epochs": epochs}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    n = 3
    rng = np.random.default_rng(0)
    arrays = {"labels": np.array([0, 1, 9], dtype=np.int64),
              "natural": rng.random((n, 1, 8, 8), dtype=np.float32),
              "natural_p_y": np.array([0.5, 0.25, 0.125], dtype=np.float32),
              "inverse": rng.random((n, 1, 8, 8), dtype=np.float32),
              "inverse_p_y": np.array([0.75, 0.5, 0.25], dtype=np.float32)}
    if uiat:
        arrays.update({"universal": rng.random((n, 1, 8, 8), dtype=np.float32),
                       "universal_p_y": np.array([0.625, 0.375, 0.875], dtype=np.float32),
                       "delta": (rng.random((n, 1, 8, 8), dtype=np.float32) - 0.5) * 0.02})
    np.savez(os.path.join(folder, "figure1.npz"), **arrays)
    return progress, metrics, arrays


def eval_report(clean=0.9, steps=((("apgd-ce", 0.5, 50, 1.5)), ("apgd-t", 0.4, 40, 2.5)), also=None):
    """An iat-eval --out report with the keys report.py reads."""
    ev = {"tool": "iat-eval", "model": "runs/x/checkpoint.pt", "num_points": 100, "norm": "Linf", "eps": 0.1,
          "eps_text": "0.1", "version": "standard", "clean_accuracy": clean, "clean_correct": int(100 * clean),
          "steps": [{"attack": a, "robust_accuracy": r, "robust": n, "seconds": s} for a, r, n, s in steps],
          "robust_accuracy": steps[-1][1], "total_seconds": 4.0, "also": also or {},
          "test_examples": 1000, "clean_acc": clean - 0.01, "autoattack_acc": steps[-1][1], "autoattack_examples": 100}
    for name, e in (also or {}).items():
        ev["pgd20_acc" if name == "pgd20" else "cw_acc"] = e["accuracy"]
    return ev


def run_cli(*args, python=sys.executable, env=None):
    return subprocess.run([python, SCRIPT, *args], capture_output=True, text=True, env=env)


class Curves(unittest.TestCase):
    def test_lines_are_the_records(self):
        with tempfile.TemporaryDirectory() as d:
            progress, metrics, _ = make_run(d, ema=True)
            fig = report.draw_curves(plt, [report.Run(d)], "title")
            ax_loss, ax_acc = fig.axes
            self.assertEqual(ax_loss.get_title(), "training loss")
            self.assertEqual((ax_loss.get_xlabel(), ax_loss.get_ylabel()), ("epoch", "loss"))
            self.assertEqual(ax_acc.get_ylabel(), "accuracy (%)")
            # Finer than an epoch: one point per progress row, at its fractional epoch.
            (loss,) = ax_loss.lines
            np.testing.assert_allclose(loss.get_xdata(), [r["epoch"] for r in progress])
            np.testing.assert_allclose(loss.get_ydata(), [r["train_loss"] for r in progress])
            self.assertEqual(len(loss.get_xdata()), 8)
            by_label = {l.get_label(): l for l in ax_acc.lines}
            self.assertEqual(set(by_label), {"train (adversarial, running)", "natural (test)", "PGD-10 (test)",
                                             "EMA natural (test)", "EMA PGD (test)"})
            np.testing.assert_allclose(by_label["train (adversarial, running)"].get_ydata(),
                                       [100 * r["train_adv_acc"] for r in progress])
            np.testing.assert_allclose(by_label["natural (test)"].get_xdata(), [1, 2])
            np.testing.assert_allclose(by_label["natural (test)"].get_ydata(), [60, 70])
            np.testing.assert_allclose(by_label["PGD-10 (test)"].get_ydata(), [25, 30])
            np.testing.assert_allclose(by_label["EMA PGD (test)"].get_ydata(), [30, 35])
            self.assertEqual([t.get_text() for t in ax_acc.get_legend().get_texts()],
                             [l.get_label() for l in ax_acc.lines])
            self.assertEqual(fig._suptitle.get_text(), "title")
            plt.close(fig)

    def test_without_progress_the_epoch_means(self):
        with tempfile.TemporaryDirectory() as d:
            _, metrics, _ = make_run(d)
            os.remove(os.path.join(d, "progress.jsonl"))
            fig = report.draw_curves(plt, [report.Run(d)], "t")
            np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [r["train_loss"] for r in metrics])
            plt.close(fig)

    def test_several_runs_share_the_axes(self):
        with tempfile.TemporaryDirectory() as d:
            make_run(os.path.join(d, "pgd-at"), uiat=False)
            make_run(os.path.join(d, "uiat"))
            runs = [report.Run(os.path.join(d, m)) for m in ("pgd-at", "uiat")]
            fig = report.draw_curves(plt, runs, "t")
            self.assertEqual(len(fig.axes), 2)
            labels = [l.get_label() for l in fig.axes[1].lines]
            self.assertIn("pgd-at: natural (test)", labels)
            self.assertIn("uiat: PGD-10 (test)", labels)
            # Each run keeps one colour over its lines.
            colours = {l.get_label(): l.get_color() for l in fig.axes[1].lines}
            self.assertEqual(colours["uiat: natural (test)"], colours["uiat: PGD-10 (test)"])
            self.assertNotEqual(colours["uiat: natural (test)"], colours["pgd-at: natural (test)"])
            plt.close(fig)

    def test_a_row_being_appended_is_left_out(self):
        with tempfile.TemporaryDirectory() as d:
            progress, _, _ = make_run(d)
            path = os.path.join(d, "progress.jsonl")
            with open(path, "a") as f:
                f.write('{"epoch": 2.1, "ste')  # cut short
            self.assertEqual(len(report.read_jsonl(path)), len(progress))
            with open(path, "a") as f:
                f.write('\n{"epoch": 3}\n')  # a broken line that is not the last: bad input
            with self.assertRaisesRegex(report.BadInput, "progress.jsonl' line 9 is not JSON"):
                report.read_jsonl(path)


class Figure1(unittest.TestCase):
    def test_rows_images_titles_captions(self):
        with tempfile.TemporaryDirectory() as d:
            _, _, arrays = make_run(d)
            data = report.read_figure_data(os.path.join(d, "figure1.npz"))
            fig = report.draw_figure1(plt, data, "Figure 1", report.CLASS_NAMES["fashion-mnist"])
            axes = np.array(fig.axes).reshape(4, 3)
            self.assertEqual([a.get_title() for a in axes[0]], ["T-shirt/top", "Trouser", "Ankle boot"])
            self.assertEqual([a.get_ylabel() for a in axes[:, 0]],
                             ["natural", "inverse adversarial", "universal inverse", r"$\delta_y$ $\times$10"])
            self.assertEqual([a.get_xlabel() for a in axes[1]], ["$p_y$ = 0.75", "$p_y$ = 0.50", "$p_y$ = 0.25"])
            self.assertEqual([a.get_xlabel() for a in axes[2]], ["$p_y$ = 0.62", "$p_y$ = 0.38", "$p_y$ = 0.88"])
            self.assertEqual(axes[3][0].get_xlabel(), "")
            np.testing.assert_allclose(axes[0][2].images[0].get_array(), arrays["natural"][2, 0])
            np.testing.assert_allclose(axes[3][1].images[0].get_array(),
                                       np.clip(0.5 + 10 * arrays["delta"][1, 0], 0, 1), rtol=1e-6)
            plt.close(fig)

    def test_pgd_at_has_two_rows_and_colour_images_stay_rgb(self):
        with tempfile.TemporaryDirectory() as d:
            make_run(d, uiat=False)
            data = report.read_figure_data(os.path.join(d, "figure1.npz"))
            data["natural"] = np.random.default_rng(1).random((3, 3, 4, 4), dtype=np.float32)
            data["inverse"] = data["natural"]
            fig = report.draw_figure1(plt, data, "t", None)
            self.assertEqual(len(fig.axes), 6)
            self.assertEqual(fig.axes[0].images[0].get_array().shape, (4, 4, 3))
            self.assertEqual(fig.axes[0].get_title(), "class 0")
            plt.close(fig)

    def test_bad_archives_are_named(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "figure1.npz")
            np.savez(path, labels=np.zeros(2, np.int64), natural=np.zeros((2, 1, 2, 2), np.float32))
            with self.assertRaisesRegex(report.BadInput, "figure1.npz' has no array 'natural_p_y'"):
                report.read_figure_data(path)
            np.savez(path, labels=np.zeros(2, np.int64), natural=np.zeros((3, 1, 2, 2)), natural_p_y=np.zeros(2),
                     inverse=np.zeros((2, 1, 2, 2)), inverse_p_y=np.zeros(2))
            with self.assertRaisesRegex(report.BadInput, "array 'natural' has shape"):
                report.read_figure_data(path)
            with open(path, "w") as f:
                f.write("not a zip")
            with self.assertRaisesRegex(report.BadInput, "not a readable .npz"):
                report.read_figure_data(path)


class Bars(unittest.TestCase):
    def test_autoattack_breakdown(self):
        ev = eval_report(also={"pgd20": {"accuracy": 0.6, "correct": 600}, "cw": {"accuracy": 0.55, "correct": 550}})
        fig = report.draw_eval(plt, ev, "model")
        ax = fig.axes[0]
        np.testing.assert_allclose([b.get_height() for b in ax.patches], [90, 50, 40, 55, 60])
        self.assertEqual([t.get_text() for t in ax.get_xticklabels()], ["clean", "after apgd-ce", "after apgd-t", "CW-inf", "PGD-20"])
        self.assertEqual([t.get_text() for t in ax.get_legend().get_texts()],
                         ["clean (first 100 points)", "robust after each attack, in AutoAttack's order",
                          "--also attacks (all 1000 points)"])
        notes = [t.get_text() for t in ax.texts]
        self.assertEqual(notes[0], "90.00%\n90 pts")
        self.assertEqual(notes[2], "40.00%\n40 pts, 2.5 s")
        self.assertIn("robust 40.00% of 100 points, Linf eps = 0.1", ax.get_title())
        self.assertEqual(ax.get_ylabel(), "accuracy (%)")
        plt.close(fig)

    def test_comparison_bars_and_table(self):
        with tempfile.TemporaryDirectory() as d:
            runs = []
            for m, (clean, pgd, cw, aa) in (("pgd-at", (0.8, 0.4, 0.35, 0.3)), ("uiat", (0.85, 0.45, 0.4, 0.33))):
                folder = os.path.join(d, m)
                make_run(folder, uiat=m == "uiat")
                ev = eval_report(clean=clean + 0.01, steps=(("apgd-ce", aa + 0.05, 1, 1.0), ("square", aa, 1, 1.0)),
                                 also={"pgd20": {"accuracy": pgd, "correct": 1}, "cw": {"accuracy": cw, "correct": 1}})
                with open(os.path.join(folder, "eval.json"), "w") as f:
                    json.dump(ev, f)
                with open(os.path.join(folder, "summary.json"), "w") as f:
                    json.dump({"config": {"epochs": 2, "dataset": "fashion-mnist", "model": "cnn", "eps": 0.1},
                               "train_seconds": 12.5, "train_examples": 600}, f)
                runs.append(report.Run(folder))
            fig = report.draw_accuracy_bars(plt, runs, "t")
            ax = fig.axes[0]
            heights = [b.get_height() for b in ax.patches]
            np.testing.assert_allclose(heights, [80, 40, 35, 30, 85, 45, 40, 33])
            self.assertEqual([t.get_text() for t in ax.get_legend().get_texts()], ["pgd-at", "uiat"])
            self.assertEqual([t.get_text() for t in ax.get_xticklabels()],
                             ["clean\n(1000 pts)", "PGD-20\n(1000 pts)", "CW∞\n(1000 pts)", "AutoAttack\n(100 pts)"])
            plt.close(fig)
            out = os.path.join(d, "cmp")
            r = run_cli("--compare", out, os.path.join(d, "pgd-at"), os.path.join(d, "uiat"))
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(out, "report.json")) as f:
                table = json.load(f)
            self.assertEqual(table["methods"]["uiat"]["autoattack_acc"], 0.33)
            self.assertEqual(table["methods"]["pgd-at"]["pgd20_acc"], 0.4)
            self.assertEqual(table["methods"]["uiat"]["train_seconds"], 12.5)
            with open(os.path.join(out, "report.md")) as f:
                md = f.read()
            self.assertIn("| uiat | 85.00 | 45.00 | 40.00 | 33.00 | 12 | 2 | 600 | 1000 |", md)
            for name in ("curves.png", "curves.svg", "accuracy.png", "accuracy.svg"):
                self.assertTrue(os.path.getsize(os.path.join(out, name)) > 1000, name)
            for m in ("pgd-at", "uiat"):
                for name in ("curves.png", "figure1.svg", "eval.png"):
                    self.assertTrue(os.path.exists(os.path.join(d, m, name)), (m, name))


def make_sweep(folder, evaluated=("base", "beta=0", "gamma=0.5")):
    """A sweep folder as scripts/sweep.py writes it: beta over 0, 1 (the base run) and 2 (not evaluated
    yet); gamma over 0.5 and the preset's 0.9 (the base run, added)."""
    panels = [{"flag": "beta", "values": ["0", "1", "2"], "runs": ["beta=0", "base", "beta=2"], "method": "uiat",
               "base_value": "1.0"},
              {"flag": "gamma", "values": ["0.5", "0.9"], "runs": ["gamma=0.5", "base"], "method": "uiat",
               "base_value": "0.9"}]
    runs = {"base": [], "beta=0": ["--beta", "0"], "beta=2": ["--beta", "2"], "gamma=0.5": ["--gamma", "0.5"]}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "sweep.json"), "w") as f:
        json.dump({"tool": "iat-sweep", "preset": "fashion-uiat-cnn", "train_args": ["--epochs", "4"],
                   "panels": panels, "runs": runs}, f)
    numbers = {"base": (0.8, 0.4), "beta=0": (0.85, 0.3), "gamma=0.5": (0.75, 0.35)}
    for name in runs:
        os.makedirs(os.path.join(folder, name))
        if name in evaluated:
            with open(os.path.join(folder, name, "eval.json"), "w") as f:
                json.dump({"tool": "iat-eval", "clean_acc": numbers[name][0], "autoattack_acc": numbers[name][1],
                           "test_examples": 1000, "autoattack_examples": 100}, f)
            with open(os.path.join(folder, name, "summary.json"), "w") as f:
                json.dump({"train_seconds": 60.0}, f)
    return numbers


class Sweep(unittest.TestCase):
    def test_panels_lines_and_table(self):
        with tempfile.TemporaryDirectory() as d:
            make_sweep(d)
            sweep, panels = report.read_sweep(d)
            fig = report.draw_sweep(plt, sweep, panels)
            beta, gamma = fig.axes
            self.assertEqual(beta.get_title(), "(a) β")
            self.assertEqual(gamma.get_title(), "(b) γ")
            self.assertEqual(beta.get_xlabel(), "β, the regulariser's weight in the inverse loss")
            self.assertEqual(beta.get_ylabel(), "accuracy (%)")
            lines = {l.get_label(): l for l in beta.get_lines()}
            # beta = 2 is not evaluated yet: left out; the points in the order of the values.
            self.assertEqual(list(lines["natural"].get_xdata()), [0.0, 1.0])
            self.assertEqual([round(y, 6) for y in lines["natural"].get_ydata()], [85.0, 80.0])
            self.assertEqual([round(y, 6) for y in lines["AutoAttack"].get_ydata()], [30.0, 40.0])
            self.assertEqual(list(lines["preset (β = 1.0)"].get_xdata()), [1.0, 1.0])
            g = {l.get_label(): l for l in gamma.get_lines()}
            self.assertEqual(list(g["natural"].get_xdata()), [0.5, 0.9])
            self.assertEqual([round(y, 6) for y in g["AutoAttack"].get_ydata()], [35.0, 40.0])
            self.assertIn("natural on 1000, AutoAttack on 100 test points", fig._suptitle.get_text())
            self.assertEqual(sorted(t.get_text() for t in beta.texts), ["30.0", "40.0", "80.0", "85.0"])
            plt.close(fig)
            r = run_cli("--sweep", d, "--quiet")
            self.assertEqual(r.returncode, 0, r.stderr)
            for name in ("figure2.png", "figure2.svg"):
                self.assertTrue(os.path.getsize(os.path.join(d, name)) > 1000, name)
            with open(os.path.join(d, "report.md")) as f:
                md = f.read()
            self.assertIn("| 0 | beta=0 | 85.00 | 30.00 | 60 |", md)
            self.assertIn("| 2 | beta=2 | not evaluated yet | not evaluated yet | — |", md)
            self.assertIn("| 0.9 | base | 80.00 | 40.00 | 60 |", md)
            with open(os.path.join(d, "report.json")) as f:
                table = json.load(f)
            self.assertEqual([r["run"] for r in table["panels"][0]["rows"]], ["beta=0", "base", "beta=2"])
            self.assertIsNone(table["panels"][0]["rows"][2]["autoattack_acc"])

    def test_not_a_sweep_is_named(self):
        with tempfile.TemporaryDirectory() as d:
            r = run_cli("--sweep", d)
            self.assertEqual(r.returncode, 2)
            self.assertIn("sweep.json", r.stderr)
            with open(os.path.join(d, "sweep.json"), "w") as f:
                json.dump({"tool": "something else"}, f)
            r = run_cli("--sweep", d)
            self.assertEqual(r.returncode, 2)
            self.assertIn("is not a sweep", r.stderr)


class CommandLine(unittest.TestCase):
    def test_run_folder_and_eval_report(self):
        with tempfile.TemporaryDirectory() as d:
            make_run(d)
            ev = os.path.join(d, "aa.json")
            with open(ev, "w") as f:
                json.dump(eval_report(), f)
            r = run_cli(d, ev)
            self.assertEqual(r.returncode, 0, r.stderr)
            for name in ("curves", "figure1", "aa"):
                with open(os.path.join(d, name + ".png"), "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
                with open(os.path.join(d, name + ".svg")) as f:
                    self.assertIn("<svg", f.read(2000))
            self.assertIn(f"report.py: wrote {os.path.join(d, 'figure1.svg')}", r.stdout)
            self.assertFalse([n for n in os.listdir(d) if ".tmp" in n])
            # The same inputs give the same files.
            with open(os.path.join(d, "curves.svg")) as f:
                first = f.read()
            self.assertEqual(run_cli(d, "--formats", "svg", "--quiet").stdout, "")
            with open(os.path.join(d, "curves.svg")) as f:
                self.assertEqual(f.read(), first)

    def test_bad_input_exits_2_naming_it(self):
        with tempfile.TemporaryDirectory() as d:
            r = run_cli(os.path.join(d, "nope"))
            self.assertEqual(r.returncode, 2)
            self.assertIn("nope' does not exist", r.stderr)
            r = run_cli(d)
            self.assertEqual(r.returncode, 2)
            self.assertIn("holds neither metrics.jsonl nor progress.jsonl", r.stderr)
            bad = os.path.join(d, "x.json")
            with open(bad, "w") as f:
                json.dump({"tool": "other"}, f)
            r = run_cli(bad)
            self.assertEqual(r.returncode, 2)
            self.assertIn("is not an iat-eval report", r.stderr)
            with open(bad, "w") as f:
                json.dump({"tool": "iat-eval"}, f)
            r = run_cli(bad)
            self.assertEqual(r.returncode, 2)
            self.assertIn("not what iat's programs write", r.stderr)
            make_run(os.path.join(d, "run"))
            r = run_cli("--compare", os.path.join(d, "cmp"), os.path.join(d, "run"))
            self.assertEqual(r.returncode, 2)
            self.assertIn("summary.json' is missing", r.stderr)
            r = run_cli(os.path.join(d, "run"), "--formats", "gif")
            self.assertEqual(r.returncode, 2)
            self.assertIn("'gif' is not one of png, svg, pdf", r.stderr)

    def test_without_matplotlib_exits_3(self):
        code = ("import sys, runpy; sys.modules['matplotlib'] = None; sys.argv = ['report.py', '.']; "
                f"runpy.run_path({SCRIPT!r}, run_name='__main__')")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertEqual(r.returncode, 3)
        self.assertIn("matplotlib is not installed", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=1)
