"""Plots of a pretraining run's `metrics.jsonl`: loss, accuracy, learning rate and throughput against step.

One PNG with 2x2 panels. Train rows (one per logging interval) are drawn as lines, eval rows as markers
over them, in the same colour as the train line of the same metric.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

from matplotlib import pyplot as plt  # after choosing the backend
from matplotlib.figure import Figure

from bert_jax.config import InputError

METRICS_FILE = "metrics.jsonl"
DEFAULT_OUTPUT = os.path.join("plots", "metrics.png")


class Curve(NamedTuple):
    """One plotted series: `values[i]` of `name` at `steps[i]`, from the rows of `split`."""

    name: str
    split: str
    steps: list[int]
    values: list[float]


# (panel title, y-axis label, metric names drawn in it); a name absent from the file is left out.
PANELS = (
    ("Loss", "loss", ("loss",)),
    ("Accuracy", "accuracy", ("mlm_accuracy", "nsp_accuracy", "sop_accuracy")),
    ("Learning rate", "learning rate", ("learning_rate",)),
    ("Throughput", "sequences / s", ("sequences_per_second",)),
)


def read_metrics(workdir: str) -> list[dict]:
    """The rows of `<workdir>/metrics.jsonl`; InputError if the run directory or its metrics are missing.

    A broken last line without its newline (a run writing it right now, or killed mid-write) is skipped.
    """
    if not os.path.isdir(workdir):
        raise InputError(f"--workdir={workdir} is not a directory; give the run directory of a pretraining run.")
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist: the run has not logged any metrics yet (it writes a line every "
                         "config.train.log_every_steps steps), or --workdir is not a pretraining run directory.")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # unterminated: still being written
                continue
            raise InputError(f"{path} line {number} is not JSON ({e.msg}): {line[:80]!r}; it should hold one "
                             "JSON object per line as the trainer writes them.") from e
        if not isinstance(row, dict) or "step" not in row or "split" not in row:
            raise InputError(f"{path} line {number} is not a metrics row with 'step' and 'split': {line[:80]!r}.")
        rows.append(row)
    if not rows:
        raise InputError(f"{path} is empty: the run has not logged any metrics yet; plot again once it has "
                         "written a line (every config.train.log_every_steps steps).")
    return rows


def curves(rows: list[dict], name: str) -> list[Curve]:
    """The train and eval series of metric `name` (each only if some row of that split has it)."""
    found = []
    for split in ("train", "eval"):
        points = [(row["step"], row[name]) for row in rows if row["split"] == split and name in row]
        if points:
            found.append(Curve(name, split, [step for step, _ in points], [value for _, value in points]))
    return found


def make_figure(rows: list[dict], title: str = "") -> Figure:
    """The 2x2 figure of `rows`: one axes per entry of PANELS, in that order."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, (panel_title, ylabel, names) in zip(axes.flat, PANELS, strict=True):
        for color_index, name in enumerate(n for n in names if curves(rows, n)):
            color = f"C{color_index}"
            for curve in curves(rows, name):
                if curve.split == "train":
                    ax.plot(curve.steps, curve.values, color=color, linewidth=1.2, label=f"{name} (train)")
                else:
                    ax.plot(curve.steps, curve.values, color=color, linestyle="none", marker="o", markersize=5,
                            markeredgecolor="black", markeredgewidth=0.6, label=f"{name} (eval)")
        ax.set_title(panel_title)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not in metrics.jsonl", ha="center", va="center", transform=ax.transAxes,
                    color="gray")
    for ax in axes[1]:
        ax.set_xlabel("step")
    axes[1][0].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    # Throughput from zero, so a few slow intervals do not look like a collapse.
    speeds = [np.asarray(line.get_ydata(), float) for line in axes[1][1].lines]
    peak = max((float(np.max(s[np.isfinite(s)])) for s in speeds if np.isfinite(s).any()), default=0.0)
    if peak > 0:
        axes[1][1].set_ylim(0, 1.15 * peak)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def output_path(workdir: str, output: str = "") -> str:
    """Where the PNG goes: `output` if it ends in .png, else `<output>/metrics.png`; default <workdir>/plots/."""
    if not output:
        return os.path.join(workdir, DEFAULT_OUTPUT)
    if output.lower().endswith(".png"):
        return output
    return os.path.join(output, os.path.basename(DEFAULT_OUTPUT))


def write_plots(workdir: str, output: str = "") -> str:
    """Plots the metrics of the run in `workdir` to one PNG and returns its path."""
    rows = read_metrics(workdir)
    path = output_path(workdir, output)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure = make_figure(rows, title=os.path.basename(os.path.normpath(workdir)))
    try:
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path
