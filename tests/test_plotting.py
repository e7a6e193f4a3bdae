"""bert_jax.plot: the PNG of a run's metrics.jsonl, the plotted points against the file, and the errors."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from bert_jax import config as config_lib
from bert_jax.tools import plotting

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The shape of what the trainer writes: train rows every 100 steps, eval rows every 200.
_TRAIN = [{"step": s, "split": "train", "loss": 9.0 - s / 100, "mlm_loss": 8.0 - s / 100,
           "mlm_accuracy": s / 1000, "nsp_loss": 0.69, "nsp_accuracy": 0.5 + s / 4000, "grad_norm": 1.0,
           "learning_rate": 1e-4 * s / 400, "skipped_steps": 0, "sequences_per_second": 120.0 + s / 50}
          for s in (100, 200, 300, 400)]
_EVAL = [{"step": s, "split": "eval", "loss": 8.5 - s / 100, "mlm_loss": 7.8 - s / 100,
          "mlm_accuracy": s / 900, "nsp_loss": 0.68, "nsp_accuracy": 0.55, "num_examples": 187}
         for s in (200, 400)]


def _write_run(directory, rows, tail=""):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return str(directory)


def _plotted(figure):
    """{axes title: {legend label: (x list, y list)}} of every line drawn."""
    return {ax.get_title(): {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                             for line in ax.lines} for ax in figure.axes}


def _from_file(path, split, name):
    """(steps, values) of `name` in the `split` rows, read straight from the JSON lines."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if r["split"] == split and name in r]
    return [r["step"] for r in rows], [r[name] for r in rows]


def test_plotted_points_are_the_files_rows(tmp_path):
    workdir = _write_run(tmp_path / "run", [_TRAIN[0], _TRAIN[1], _EVAL[0], _TRAIN[2], _TRAIN[3], _EVAL[1]])
    path = os.path.join(workdir, "metrics.jsonl")
    plotted = _plotted(plotting.make_figure(plotting.read_metrics(workdir)))
    expected = {
        "Loss": ["loss"], "Accuracy": ["mlm_accuracy", "nsp_accuracy"],
        "Learning rate": ["learning_rate"], "Throughput": ["sequences_per_second"],
    }
    for title, names in expected.items():
        labels = {f"{n} (train)" for n in names} | {f"{n} (eval)" for n in names if n in _EVAL[0]}
        assert set(plotted[title]) == labels, title
        for label, (steps, values) in plotted[title].items():
            name, split = label[:-1].split(" (")
            assert (steps, values) == _from_file(path, split, name), label
    assert plotted["Accuracy"]["mlm_accuracy (eval)"] == ([200, 400], [200 / 900, 400 / 900])


def test_sop_runs_plot_sop_and_mlm_only_runs_no_pair_task(tmp_path):
    sop = [{k.replace("nsp", "sop"): v for k, v in row.items()} for row in _TRAIN + _EVAL]
    labels = set(_plotted(plotting.make_figure(sop))["Accuracy"])
    assert labels == {"mlm_accuracy (train)", "mlm_accuracy (eval)", "sop_accuracy (train)", "sop_accuracy (eval)"}
    mlm_only = [{k: v for k, v in row.items() if not k.startswith("nsp")} for row in _TRAIN + _EVAL]
    assert set(_plotted(plotting.make_figure(mlm_only))["Accuracy"]) == {"mlm_accuracy (train)",
                                                                         "mlm_accuracy (eval)"}


def test_a_line_cut_off_mid_write_is_skipped(tmp_path):
    workdir = _write_run(tmp_path / "run", _TRAIN, tail='{"step": 500, "split": "tr')
    assert plotting.read_metrics(workdir) == _TRAIN


def test_output_paths(tmp_path):
    assert plotting.output_path("run") == os.path.join("run", "plots", "metrics.png")
    assert plotting.output_path("run", "out/dir") == os.path.join("out/dir", "metrics.png")
    assert plotting.output_path("run", "docs/default_run.png") == "docs/default_run.png"


def _plot(*flags):
    return subprocess.run([sys.executable, "-m", "bert_jax.plot", *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def test_command_writes_a_png(tmp_path):
    workdir = _write_run(tmp_path / "run", _TRAIN + _EVAL)
    result = _plot(f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    path = tmp_path / "run" / "plots" / "metrics.png"
    assert result.stdout.strip().splitlines()[-1] == str(path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000  # four panels of lines, not a blank image


@pytest.mark.parametrize("case, message", [
    ("missing", "is not a directory"),
    ("no_metrics", "metrics.jsonl does not exist"),
    ("empty", "metrics.jsonl is empty"),
    ("not_json", "line 2 is not JSON"),
])
def test_errors_are_one_line(tmp_path, case, message):
    workdir = tmp_path / "run"
    if case == "no_metrics":
        workdir.mkdir()
    elif case == "empty":
        _write_run(workdir, [])
    elif case == "not_json":
        _write_run(workdir, [_TRAIN[0]], tail="oops\n")
    with pytest.raises(config_lib.InputError, match=message):
        plotting.write_plots(str(workdir))
    if case == "empty":  # and the command says it in one line, exit status 1
        result = _plot(f"--workdir={workdir}")
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr
        assert message in result.stderr
