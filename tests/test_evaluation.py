"""Held-out evaluation: the figures of a checkpoint do not depend on the number of devices."""

import pathlib
import shutil

import jax
import pytest

from bert_jax.data import corpus as corpus_lib
from bert_jax.pretraining import evaluation, run_checkpoint
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import parallel

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "pre_layout_run"


def test_one_and_eight_devices_give_the_same_figures(tmp_path):
    shutil.copytree(FIXTURE / "run", tmp_path / "run")
    run = run_checkpoint.restore_run_checkpoint(str(tmp_path / "run"))
    source = corpus_lib.build_eval_source(str(FIXTURE / "corpus.txt"), run.tokenizer, str(tmp_path / "tfds"))
    figures = {}
    for devices in (1, 8):
        run.config.mesh.data = devices
        mesh = parallel.make_mesh(run.config.mesh)
        setup, _ = steps_lib.make_pretraining_setup(run.config, mesh, run.tokenizer)
        batches = evaluation.eval_batches(source, run.config, mesh, run.tokenizer.special_ids)
        params = jax.device_put(run.state.params, setup.state_sharding.params)
        figures[devices] = evaluation.run_evaluation(steps_lib.make_eval_step(setup, mesh), params, batches, mesh,
                                                     run.config.data.eval_seed)
    assert figures[1]["num_examples"] == figures[8]["num_examples"] > 0
    for name in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"):
        assert figures[1][name] == pytest.approx(figures[8][name], rel=1e-5), name
