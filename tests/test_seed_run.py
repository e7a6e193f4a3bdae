"""Fine-tunes resume: a fine-tune SIGKILLed right after a checkpoint restarts from it (train state, best
parameters and dev history) and ends bitwise equal to an uninterrupted run; a resumed fine-tune with
changed settings is refused; a diverging fine-tune stops with the reason.
"""

import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import _WORDS
from flax import traverse_util
from test_runner import _export_random_encoder

from bert_jax.config import InputError
from bert_jax.finetuning import config as finetune_config
from bert_jax.finetuning import model_dir, runner

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILLER = [w for w in _WORDS if w not in ("gold", "king")]


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_tokenizer):
    root = tmp_path_factory.mktemp("resume")
    rng = random.Random(0)
    for split, count in (("train", 96), ("dev", 32)):
        with open(root / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("text\tlabel\n")
            for i in range(count):
                words = [rng.choice(FILLER) for _ in range(6)] + (["gold"] if i % 2 else [])
                f.write(f"{' '.join(words)}\t{'rich' if i % 2 else 'poor'}\n")
    return root, _export_random_encoder(root / "export", small_tokenizer)


def _command(files, workdir, *extra):
    root, export = files
    return [sys.executable, "-m", "bert_jax.finetune", "--config=configs/finetune/own_data.py",
            f"--config.init_checkpoint={export}", f"--config.data.train_file={root / 'train.tsv'}",
            f"--config.data.validation_file={root / 'dev.tsv'}", "--config.data.max_seq_length=16",
            "--config.train.global_batch_size=16", "--config.train.num_train_epochs=2.0",
            "--config.train.evals_per_epoch=3", "--config.train.learning_rate=1e-3", "--config.checkpoint.every_steps=1",
            f"--workdir={workdir}", *extra]


def _run(command, kill_at=""):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("BERT_JAX_TEST_KILL_AT", None)
    if kill_at:
        env["BERT_JAX_TEST_KILL_AT"] = kill_at
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _params(workdir):
    return traverse_util.flatten_dict(model_dir.load(str(workdir)).params)


@pytest.mark.slow  # ~50 s: kept out of the 20-minute CI (pretraining's SIGKILL test stays in it)
def test_killed_fine_tune_resumes_bitwise_equal(files, tmp_path):
    reference = _run(_command(files, tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = _run(_command(files, tmp_path / "killed"), kill_at="5:save")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = _run(_command(files, tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint of step 5" in resumed.stderr
    expected, got = _params(tmp_path / "reference"), _params(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(expected[name], got[name], err_msg=str(name))
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("reference", "killed")]
    assert metrics[0]["seeds"][0]["history"] == metrics[1]["seeds"][0]["history"]
    assert metrics[0]["seeds"][0]["best_step"] == metrics[1]["seeds"][0]["best_step"]


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_resume_with_changed_settings_is_refused(files, tmp_path):
    killed = _run(_command(files, tmp_path / "run"), kill_at="2:save")
    assert killed.returncode == -9
    changed = _run(_command(files, tmp_path / "run", "--config.train.learning_rate=5e-4"))
    assert changed.returncode == 1
    assert changed.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "config.train.learning_rate: 0.001 -> 0.0005" in changed.stderr
    assert "Traceback" not in changed.stderr


def test_a_diverging_fine_tune_stops_with_the_reason(files, tmp_path):
    root, export = files
    config = finetune_config.default_config()
    config.task = "classification"
    config.init_checkpoint = export
    config.data.train_file, config.data.validation_file = str(root / "train.tsv"), str(root / "dev.tsv")
    config.data.max_seq_length = 16
    config.train.learning_rate = 1e30
    config.train.max_consecutive_nonfinite_steps = 2
    with pytest.raises(InputError, match=r"non-finite loss or gradient.*lower config.train.learning_rate"):
        runner.finetune(config, str(tmp_path / "run"))


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_resume_after_the_training_file_changed_is_refused(files, tmp_path):
    root, export = files
    train = tmp_path / "train.tsv"
    train.write_bytes((root / "train.tsv").read_bytes())
    command = [a.replace(str(root / "train.tsv"), str(train)) for a in _command(files, tmp_path / "run")]
    assert _run(command, kill_at="2:save").returncode == -9
    with open(train, "a", encoding="utf-8") as f:
        f.write("one more row\tpoor\n")
    changed = _run(command)
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    assert f"the train file {train} has changed" in changed.stderr.strip().splitlines()[-1]
