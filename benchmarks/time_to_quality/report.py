"""RESULTS.md table and the accuracy-against-wall-time PNG of a time-to-quality sweep.

    python benchmarks/time_to_quality/report.py --out DIR [--results RESULTS.md] [--png curves.png]

Reads DIR/<corpus>/<model>/run.json and curve.jsonl as run_ttq.py writes them; any trainer that writes the
same two files (e.g. an HF Trainer run for issue 21) joins the table and the figure:
  run.json     {"model", "corpus", "budget_seconds", "num_train_steps", "final_wall_seconds", ...; optional
               "system", "parameters", "first_step_seconds", "calibration": {"steps_per_second"},
               "not_in_checkout", "eval_masking", "in_run_final_eval", "loadavg_start", "loadavg_end"}
  curve.jsonl  one line per evaluated checkpoint: {"step", "wall_seconds", "mlm_accuracy"; optional
               "cpu_seconds", "mlm_predictions"}, the accuracy on the held-out split under the common masking.
A run.json may say "clock": "cpu" (its budget counts CPU seconds); the fractions and the figure then use
cpu_seconds.
Accuracy "at x% of the budget" is that of the newest checkpoint whose wall time is at most x% of the budget
plus a grace of 2% of the budget (timing noise on a shared machine); no interpolation between checkpoints.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os

import matplotlib

matplotlib.use("Agg")  # files only, as bert_jax/tools/plotting.py

from matplotlib import pyplot as plt  # after choosing the backend

from bert_jax.runtime import atomic

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
GRACE = 0.02


def load_runs(out: str) -> list[dict]:
    """Every run under `out` as its run.json with the curve (sorted by wall time) under "curve"."""
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "*", "*", "run.json"))):
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        with open(os.path.join(os.path.dirname(path), "curve.jsonl"), encoding="utf-8") as f:
            run["curve"] = sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r[seconds_key(run)])
        runs.append(run)
    return runs


def seconds_key(run: dict) -> str:
    """The curve field the run's budget counts: 'wall_seconds' (default) or 'cpu_seconds'."""
    return f"{run.get('clock', 'wall')}_seconds"


def accuracy_at(curve: list[dict], seconds: float, budget: float, key: str = "wall_seconds") -> dict | None:
    """The newest point reached by `seconds` (+ GRACE x budget) on clock `key`, or None if none was."""
    reached = [p for p in curve if p[key] <= seconds + GRACE * budget]
    return reached[-1] if reached else None


def time_to_reach(curve: list[dict], accuracy: float, key: str = "wall_seconds") -> float | None:
    """Seconds (clock `key`) of the first point at or above `accuracy` (None: never)."""
    return next((p[key] for p in curve if p["mlm_accuracy"] >= accuracy), None)


def standard_error(point: dict) -> float | None:
    """Binomial standard error of a point's accuracy (None when the number of predictions is not known)."""
    count = point.get("mlm_predictions")
    return math.sqrt(point["mlm_accuracy"] * (1 - point["mlm_accuracy"]) / count) if count else None


def _fmt(value, pattern="{:.4f}"):
    return "–" if value is None else pattern.format(value)


def table(runs: list[dict]) -> str:
    """The markdown table: one row per run, accuracy at the budget fractions and at the end."""
    head = ["model", "corpus", "parameters", "steps", "compile s", "steps/wall s", "wall s", "CPU s"]
    head += [f"acc @{int(f * 100)}%" for f in FRACTIONS] + ["final acc", "final loss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        budget, curve = run["budget_seconds"], run["curve"]
        at = [accuracy_at(curve, f * budget, budget, seconds_key(run)) for f in FRACTIONS]
        steps_per_second = run["num_train_steps"] / run["final_wall_seconds"] if run["final_wall_seconds"] else None
        cells = [run["model"], run["corpus"], _fmt(run.get("parameters"), "{:,}"), str(run["num_train_steps"]),
                 _fmt(run.get("first_step_seconds"), "{:.1f}"), _fmt(steps_per_second, "{:.2f}"),
                 _fmt(run["final_wall_seconds"], "{:.0f}"), _fmt(run.get("final_cpu_seconds"), "{:.0f}")]
        final = curve[-1] if curve else None
        final_cell = _fmt(final and final["mlm_accuracy"])
        if final and standard_error(final) is not None:
            final_cell += f" +- {standard_error(final):.4f}"
        cells += [_fmt(p and p["mlm_accuracy"]) for p in at] + [final_cell, _fmt(final and final.get("mlm_loss"), "{:.3f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(runs: list[dict]) -> list[str]:
    """Per corpus, for every pair of its runs: who ends higher and by how much, how soon the higher one
    reaches the other's final accuracy, and that time over the time the other took to reach it (the
    time-to-quality ratio: 1/3 = three times faster to the same accuracy)."""
    lines = []
    for corpus in sorted({r["corpus"] for r in runs}):
        ranked = sorted((r for r in runs if r["corpus"] == corpus and r["curve"]),
                        key=lambda r: r["curve"][-1]["mlm_accuracy"], reverse=True)
        lines += [verdict(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:]]
    return lines


def verdict(a: dict, b: dict) -> str:
    """One line: run `a` (the higher final accuracy) against run `b` on the same corpus."""
    final_a, final_b = a["curve"][-1]["mlm_accuracy"], b["curve"][-1]["mlm_accuracy"]
    reach = time_to_reach(a["curve"], final_b, seconds_key(a))
    line = (f"- {a['corpus']}: **{a['model']}** ends higher than {b['model']}, {final_a:.4f} against {final_b:.4f} "
            f"({100 * (final_a - final_b):+.2f} points")
    errors = [standard_error(r["curve"][-1]) for r in (a, b)]
    if None not in errors:
        combined = math.hypot(*errors)
        line += f", {(final_a - final_b) / combined:.1f} standard errors" if combined else ""
    line += ")"
    losses = [r["curve"][-1].get("mlm_loss") for r in (a, b)]
    if None not in losses:
        line += f"; held-out MLM loss {losses[0]:.3f} against {losses[1]:.3f}"
    if reach is not None:
        line += (f"; it reaches {b['model']}'s final accuracy after {reach:.0f} {a.get('clock', 'wall')} s "
                 f"({100 * reach / a['budget_seconds']:.0f}% of the budget)")
        own = time_to_reach(b["curve"], final_b, seconds_key(b))
        if own and a.get("clock", "wall") == b.get("clock", "wall"):
            line += f", {reach / own:.2f}x the {own:.0f} s {b['model']} took to reach it"
        if a.get("clock", "wall") != "wall":
            wall_reach, wall_b = time_to_reach(a["curve"], final_b), b["final_wall_seconds"]
            line += f", {wall_reach:.0f} wall s against {b['model']}'s {wall_b:.0f} wall s for all its steps"
    return line + "."


def time_to_loss(curve: list[dict], loss: float, key: str = "wall_seconds") -> float | None:
    """Seconds (clock `key`) of the first point at or below held-out `loss` (None: never, or no losses)."""
    return next((p[key] for p in curve if p.get("mlm_loss") is not None and p["mlm_loss"] <= loss), None)


def against_baseline(runs: list[dict], baseline: str = "hf_trainer", goal: float = 1 / 3) -> list[str]:
    """Per corpus, for every bert_jax run beside the baseline's: the time it needs to reach the baseline's
    final held-out accuracy (and, the steadier reading, its final held-out loss) over the time the baseline
    needed, on the wall clock and on the CPU clock, against the goal (issue 21: at most a third of the
    baseline's time)."""
    lines = []
    for corpus in sorted({r["corpus"] for r in runs}):
        pair = {r["model"]: r for r in runs if r["corpus"] == corpus and r["curve"]}
        if baseline not in pair:
            continue
        for ours in (m for m in sorted(pair) if m != baseline):
            lines += _against(corpus, ours, pair[ours]["curve"], baseline, pair[baseline]["curve"], goal)
    return lines


def _against(corpus: str, ours: str, a: list[dict], baseline: str, b: list[dict], goal: float) -> list[str]:
    """The lines of against_baseline for one run `ours` (curve `a`) and the baseline's curve `b`."""
    targets = [("accuracy", b[-1]["mlm_accuracy"], time_to_reach)]
    if b[-1].get("mlm_loss") is not None:
        targets.append(("loss", b[-1]["mlm_loss"], time_to_loss))
    lines = []
    for what, target, reach in targets:
        cells = []
        for clock in ("wall", "cpu"):
            key = f"{clock}_seconds"
            if any(p.get(key) is None for p in a + b):
                continue
            mine, theirs = reach(a, target, key), reach(b, target, key)
            if mine is None or not theirs:
                cells.append(f"{clock}: {ours} {'never reaches it' if mine is None else f'{mine:.0f} s'}")
                continue
            ratio = mine / theirs
            cells.append(f"{clock}: {mine:.0f} s against {theirs:.0f} s = **{ratio:.2f}x** "
                         f"({'meets' if ratio <= goal else 'misses'} the goal of {goal:.2f}x)")
        lines.append(f"- {corpus}, {ours}: time to {baseline}'s final held-out {what} ({target:.4f}): "
                     + "; ".join(cells) + ".")
    return lines


def notes(runs: list[dict]) -> list[str]:
    """What a reader must know to trust the rows: missing flags, the masking check, the machine load."""
    lines = []
    for run in runs:
        name = f"{run['corpus']}/{run['model']}"
        if run.get("not_in_checkout"):
            lines.append(f"- {name}: run WITHOUT {', '.join(run['not_in_checkout'])} (not in that checkout).")
        overshoot = run[f"final_{seconds_key(run)}"] / run["budget_seconds"] - 1
        if overshoot > GRACE:
            lines.append(f"- {name}: its {run['num_train_steps']} steps took {100 * overshoot:.0f}% longer than the "
                         "budget (the machine was slower than in its calibration), so its @100% column is from "
                         "before its schedule ended; the final column is at its end.")
        elif overshoot < -0.1:
            lines.append(f"- {name}: its {run['num_train_steps']} steps took {100 * (1 + overshoot):.0f}% of the "
                         "budget (the machine was faster than in its calibration): it left budget unused.")
        own, curve = run.get("in_run_final_eval"), run["curve"]
        if own and curve:
            lines.append(f"- {name}: the run's own final evaluation (its training masking) "
                         f"{own['mlm_accuracy']:.4f}; at the common masking {curve[-1]['mlm_accuracy']:.4f}.")
        if curve and "mlm_accuracy_with_segments" in curve[-1]:
            lines.append(f"- {name}: trained without segment ids, so scored with all of them 0; with the rows' "
                         f"own segment ids (an untrained embedding row for segment B) "
                         f"{curve[-1]['mlm_accuracy_with_segments']:.4f}.")
        if "loadavg_start" in run:
            lines.append(f"- {name}: load average {run['loadavg_start'][0]:.1f} before, "
                         f"{run['loadavg_end'][0]:.1f} after (2 cores, shared).")
    return lines


def plot(runs: list[dict], path: str) -> None:
    """Accuracy against training seconds: one column per corpus, one row per clock the curves have (wall,
    and CPU when every point has it), one line per model; the budget dashed on the clock it counts."""
    corpora = sorted({r["corpus"] for r in runs})
    clocks = ["wall"] + (["cpu"] if all(p.get("cpu_seconds") is not None for r in runs for p in r["curve"]) else [])
    figure, axes = plt.subplots(len(clocks), len(corpora), figsize=(5.5 * len(corpora), 4 * len(clocks)),
                                squeeze=False)
    models = sorted({r["model"] for r in runs})
    for row, clock in enumerate(clocks):
        for ax, corpus in zip(axes[row], corpora, strict=True):
            for run in (r for r in runs if r["corpus"] == corpus):
                xs = [p[f"{clock}_seconds"] for p in run["curve"]]
                ys = [p["mlm_accuracy"] for p in run["curve"]]
                ax.plot(xs, ys, marker="o", markersize=3, color=f"C{models.index(run['model'])}",
                        label=run["model"])
                if run.get("clock", "wall") == clock:
                    ax.axvline(run["budget_seconds"], color="gray", linestyle="--", linewidth=0.8)
            ax.set_title(f"corpus: {corpus}")
            ax.set_xlabel(f"training {clock} seconds after compilation")
            ax.set_ylabel("held-out MLM accuracy (15% masking)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def setup(runs: list[dict]) -> list[str]:
    """What each bert_jax model was (from its run.json overrides), and the corpora."""
    lines = []
    for model in sorted({r["model"] for r in runs}):
        run = next(r for r in runs if r["model"] == model)
        given = run.get("overrides", {})
        if model == "hf_trainer" and "training" in run:
            t, data = run["training"], run.get("data", {})
            lines.append(f"- hf_trainer: {run['system']}: BertForMaskedLM of the bert2018 run's size and vocabulary, "
                         f"DataCollatorForLanguageModeling ({t['mlm_probability']:.0%}, 80/10/10), run_mlm.py's "
                         f"blocks of {data.get('block_size')} tokens from the bert2018 run's training ids, batch "
                         f"{t['batch_size']}, peak lr {t['learning_rate']}, warmup {t['warmup_fraction']:.0%}, AdamW "
                         f"(weight decay {t['weight_decay']}), linear decay, {run.get('threads')} torch threads")
        if run.get("system", "bert_jax") != "bert_jax" or not given:
            continue
        recipe = ", ".join(f"{k}={v}" for k, v in given.items() if k.startswith(("model.", "masking.", "data.pack", "train.schedule",
                                                                               "train.decay", "train.optimizer"))
                           and k not in ("model.vocab_size",))
        lines.append(f"- {model}: configs/bert_{run.get('size', 'mini')}.py, batch {given.get('train.global_batch_size')}, "
                     f"peak lr {given.get('train.learning_rate')}, warmup {given.get('train.warmup_steps')} steps, "
                     f"vocabulary {given.get('model.vocab_size')}; " + (recipe or "BERT's defaults (post-LN, learned "
                                                                        "positions, GELU, 15% masking, linear decay)"))
    for corpus, path in sorted({r["corpus"]: r.get("corpus_path", "") for r in runs}.items()):
        text = "the embedded stdlib-docstring corpus (config.data.corpus empty)" if path == "(default)" else path
        lines.append(f"- corpus {corpus}: {text}; one SentencePiece tokenizer trained on it, given to every run")
    return lines


def results_markdown(runs: list[dict], png_name: str) -> str:
    budgets = sorted({(r["budget_seconds"], r.get("clock", "wall")) for r in runs})
    intro = (f"Budget: {', '.join(f'{b:.0f} {clock}' for b, clock in budgets)} seconds of training per run (after the "
             "first, compiling step; wall: the clock, cpu: the process's CPU time, all threads). Accuracy: held-out MLM accuracy of each checkpoint with the same 15% token masking for every "
             "model (at most 20 predictions per sequence). Columns at x% read the newest checkpoint by x% of the "
             f"budget (+{int(GRACE * 100)}% grace); +- is the binomial standard error over the scored predictions.")
    names = {"bert2018": "BERT-2018", "bert2018_fast": "BERT-2018 with the CPU switches",
             "modern": "the modern encoder block", "hf_trainer": "transformers' Trainer"}
    models = sorted({r["model"] for r in runs}, key=lambda m: list(names).index(m) if m in names else len(names))
    title = " against ".join(names.get(m, m) for m in models)
    parts = [f"# Time to quality: {title}", "", intro, "", *setup(runs), "", table(runs), "",
             *verdicts(runs), ""]
    baseline_lines = against_baseline(runs)
    if baseline_lines:
        lead = ("Against transformers' Trainer (time of each bert_jax run over the Trainer's time, to the Trainer's "
                "final held-out figure; a first crossing, no interpolation; bert2018 is this project's default path):")
        parts += [lead, *baseline_lines, ""]
    parts += [f"![accuracy against wall time]({png_name})", "", "Notes:", *notes(runs), ""]
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder run_ttq.py wrote")
    parser.add_argument("--results", default="", help="markdown file (default: DIR/RESULTS.md)")
    parser.add_argument("--png", default="", help="figure (default: beside the markdown, ttq_curves.png)")
    args = parser.parse_args(argv)
    runs = load_runs(args.out)
    if not runs:
        raise SystemExit(f"error: no run.json under {args.out}/<corpus>/<model>/: run run_ttq.py first.")
    results = args.results or os.path.join(args.out, "RESULTS.md")
    png = args.png or os.path.join(os.path.dirname(os.path.abspath(results)), "ttq_curves.png")
    plot(runs, png)
    text = results_markdown(runs, os.path.relpath(png, os.path.dirname(os.path.abspath(results))))
    atomic.write_text(results, text)
    print(text)


if __name__ == "__main__":
    main()
