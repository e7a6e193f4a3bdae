"""Multi-process training through jax.distributed: 2 processes x 2 CPU devices == 1 process x 4 devices.

Each process reads only its rows of every global batch, the collectives run over gloo, and checkpoints
written by one topology restore in the other.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest

from bert_jax import evaluation

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flags(corpus_file, tokenizer_path, workdir):
    overrides = {
        "data.corpus": corpus_file, "data.tokenizer_model": tokenizer_path, "data.tokenizer_vocab_size": 300,
        "data.eval_fraction": 0.2, "data.eval_num_examples": 40, "data.max_seq_length": 64,
        "model.vocab_size": 320, "model.hidden_size": 32, "model.num_hidden_layers": 2,
        "model.num_attention_heads": 2, "model.intermediate_size": 64, "model.max_position_embeddings": 64,
        "masking.max_predictions_per_seq": 8, "train.global_batch_size": 8, "train.num_train_steps": 4,
        "train.warmup_steps": 1, "train.log_every_steps": 1, "train.eval_every_steps": 4,
        "train.eval_batch_size": 16, "checkpoint.every_steps": 2, "checkpoint.max_to_keep": 5,
    }
    return (["-m", "bert_jax.pretrain", "--config=configs/bert_tiny.py", f"--workdir={workdir}"]
            + [f"--config.{name}={value}" for name, value in overrides.items()])


def _env(devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _run_single(args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(4), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _run_two_processes(args):
    address = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, *args, f"--coordinator_address={address}", "--num_processes=2",
                               f"--process_id={i}"], cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, err[-3000:]
        assert f"process {i} of 2: 2 local devices of 4 in the mesh" in err  # really one runtime, 2 hosts


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _assert_same(a, b, names=("loss", "mlm_loss", "mlm_accuracy", "nsp_accuracy")):
    assert [(m["step"], m["split"]) for m in a] == [(m["step"], m["split"]) for m in b]
    for x, y in zip(a, b, strict=True):
        for name in names:
            assert x[name] == pytest.approx(y[name], rel=1e-5, abs=1e-6), (x["step"], x["split"], name)


def test_two_processes_match_one_and_checkpoints_cross_topologies(tmp_path, corpus_file, small_tokenizer):
    single, multi, resumed = tmp_path / "single", tmp_path / "multi", tmp_path / "resumed"
    _run_single(_flags(corpus_file, small_tokenizer.model_path, single))
    _run_two_processes(_flags(corpus_file, small_tokenizer.model_path, multi))
    _assert_same(_metrics(single), _metrics(multi))

    # A 2-process checkpoint evaluates in this 1-process (8-device) run to the in-run figures.
    offline = evaluation.evaluate_checkpoint(str(multi), step=4)
    in_run = [m for m in _metrics(multi) if m["split"] == "eval"][-1]
    assert offline["mlm_loss"] == pytest.approx(in_run["mlm_loss"], rel=1e-5)

    # A 1-process checkpoint (step 2) resumes in 2 processes and finishes as the 1-process run did.
    shutil.copytree(single, resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")
    _run_two_processes(_flags(corpus_file, small_tokenizer.model_path, resumed))
    _assert_same(_metrics(single), _metrics(resumed))
