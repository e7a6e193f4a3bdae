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

from bert_jax.data import pipeline
from bert_jax.pretraining import evaluation

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
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def _launch_two_processes(args, timeout: float) -> list[tuple[int, str]]:
    """(exit status, stderr) of each of 2 processes of one jax.distributed run; fails the test on a hang."""
    address = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, *args, f"--coordinator_address={address}", "--num_processes=2",
                               f"--process_id={i}"], cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        pytest.fail(f"the 2-process run did not finish within {timeout} s (a process hangs)")
    return [(p.returncode, err) for p, (_, err) in zip(procs, outputs, strict=True)]


def _run_two_processes(args):
    for i, (returncode, err) in enumerate(_launch_two_processes(args, timeout=600)):
        assert returncode == 0, err[-3000:]
        assert f"process {i} of 2: 2 local devices of 4 in the mesh" in err  # really one runtime, 2 hosts


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _assert_same(a, b, names=("loss", "mlm_loss", "mlm_accuracy", "nsp_accuracy")):
    assert [(m["step"], m["split"]) for m in a] == [(m["step"], m["split"]) for m in b]
    for x, y in zip(a, b, strict=True):
        for name in names:
            assert x[name] == pytest.approx(y[name], rel=1e-5, abs=1e-6), (x["step"], x["split"], name)


@pytest.mark.slow  # two real processes, about a minute: `python -m pytest -q tests -m slow`
def test_two_processes_match_one_and_checkpoints_cross_topologies(tmp_path, corpus_file, small_tokenizer, sources):
    single, multi, resumed = tmp_path / "single", tmp_path / "multi", tmp_path / "resumed"
    _run_single(_flags(corpus_file, small_tokenizer.model_path, single))
    _run_two_processes(_flags(corpus_file, small_tokenizer.model_path, multi))
    _assert_same(_metrics(single), _metrics(multi))

    # Evaluation counts each held-out instance once: 2 processes x 8 rows of each 16-row batch, the last
    # batch padded with weight-0 rows. The reference counts instances in batches of 1 (no padding rows).
    num_instances = len(pipeline.make_eval_batches(
        sources["eval"], max_seq_length=64, batch_size=1, num_examples=10**6,
        special_ids=small_tokenizer.special_ids))
    expected = min(40, num_instances)  # data.eval_num_examples
    assert expected % 16, "the held-out split should leave the last eval batch partly padding"
    for run in (single, multi):
        assert [m["num_examples"] for m in _metrics(run) if m["split"] == "eval"] == [expected]

    # A 2-process checkpoint evaluates in this 1-process (8-device) run to the in-run figures.
    offline = evaluation.evaluate_checkpoint(str(multi), step=4)
    in_run = [m for m in _metrics(multi) if m["split"] == "eval"][-1]
    assert offline["mlm_loss"] == pytest.approx(in_run["mlm_loss"], rel=1e-5)

    # A 1-process checkpoint (step 2) resumes in 2 processes and finishes as the 1-process run did.
    shutil.copytree(single, resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")
    _run_two_processes(_flags(corpus_file, small_tokenizer.model_path, resumed))
    _assert_same(_metrics(single), _metrics(resumed))


def test_process_zero_failing_to_prepare_data_stops_every_process(tmp_path, small_tokenizer):
    # An empty corpus fails in process 0's data preparation, before any compile. Process 1 used to wait
    # at a device barrier that process 0 never reached; now it gets process 0's error and stops too.
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    results = _launch_two_processes(_flags(str(empty), small_tokenizer.model_path, tmp_path / "run"), timeout=120)
    (status_0, err_0), (status_1, err_1) = results
    assert status_0 != 0 and status_1 != 0, (err_0[-2000:], err_1[-2000:])
    error_0 = err_0.strip().splitlines()[-1]
    assert error_0.startswith("error: ") and "empty" in error_0, err_0[-2000:]
    assert err_1.strip().splitlines()[-1] == f"error: process 0 failed to prepare the data: {error_0[7:]}", \
        err_1[-2000:]
