"""A pretraining run's checkpoints as models: a run written before the package moved into role folders
(tests/fixtures/pre_layout_run, see its README) restores, exports, evaluates and resumes with today's code."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.pretraining import evaluation, loop, run_checkpoint
from bert_jax.runtime import checkpoint as checkpoint_lib

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "pre_layout_run"


@pytest.fixture
def old_run(tmp_path):
    """A writable copy of the fixture: (run workdir, params export, corpus file)."""
    shutil.copytree(FIXTURE, tmp_path / "fixture")
    root = tmp_path / "fixture"
    return str(root / "run"), str(root / "params_export"), str(root / "corpus.txt")


def _leaves(params):
    return jax.tree.leaves(nnx.to_pure_dict(jax.device_get(params)))


def test_an_old_checkpoint_restores_with_the_parameters_of_its_old_export(old_run):
    workdir, export, _ = old_run
    run = run_checkpoint.restore_run_checkpoint(workdir)
    assert run.step == 2 and run.tokenizer.vocab_size == 64 and run.config.model.hidden_size == 16
    _, tokenizer, exported = run_checkpoint.load_params_only(export)
    assert tokenizer.serialized_model() == run.tokenizer.serialized_model()
    names = sorted(nnx.to_pure_dict(jax.device_get(exported))["bert"])
    assert names == ["embeddings", "layers", "pooler"]  # the parameter tree's names are the released ones
    for a, b in zip(_leaves(run.state.params), _leaves(exported), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_old_checkpoint_evaluates_to_the_figures_the_old_code_gave(old_run):
    workdir, _, corpus = old_run
    expected = json.loads((FIXTURE / "expected_eval.json").read_text())
    figures = evaluation.evaluate_checkpoint(workdir, corpus=corpus)
    assert figures["step"] == expected["step"] and figures["num_examples"] == expected["num_examples"]
    for name in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "loss"):
        assert figures[name] == pytest.approx(expected[name], rel=1e-5), name


def test_an_old_run_resumes_from_its_checkpoint(old_run, tmp_path):
    workdir, _, corpus = old_run
    config = config_lib.from_stored(json.loads(pathlib.Path(workdir, "config.json").read_text()))
    config.data.corpus = corpus  # the stored path was the fixture's original /tmp location
    config.train.num_train_steps = 3
    config.checkpoint.every_steps = 1
    loop.train_and_evaluate(config, workdir)
    steps = [json.loads(line) for line in open(pathlib.Path(workdir, "metrics.jsonl"), encoding="utf-8")]
    assert [m["step"] for m in steps if m["split"] == "train"] == [1, 2, 3]  # steps 1-2 old, 3 resumed
    assert checkpoint_lib.Checkpointer(workdir, create=False).all_steps() == [2, 3]


def test_params_export_refuses_to_overwrite(old_run, tmp_path):
    workdir, _, _ = old_run
    summary = run_checkpoint.export_params(workdir, str(tmp_path / "export"))
    assert summary.startswith("wrote the params of step 2 to ")
    with pytest.raises(config_lib.InputError, match="already holds an export"):
        run_checkpoint.export_params(workdir, str(tmp_path / "export"))
