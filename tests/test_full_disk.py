"""A real full disk: corpus preparation (worker processes) and checkpointing into a small tmpfs.

Needs permission to mount a tmpfs (root in a container); skipped elsewhere, where the simulated ENOSPC
cases of tests/test_bad_inputs.py still run. Each command must end with exactly one `error:` line that
says "no space left on device" and names the directory, print no traceback, and leave what was complete
before (shards, checkpoints) as it was.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

_CONFIG = '''from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.update({{"vocab_size": 320, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": 64}})
    config.data.update({{"corpus": {corpus!r}, "tokenizer_model": {tokenizer!r}, "tokenizer_vocab_size": 300,
                        "max_seq_length": 64, "eval_num_examples": 40, "eval_fraction": 0.2,
                        "preprocess_workers": 2, "docs_per_shard": {docs_per_shard}}})
    config.masking.max_predictions_per_seq = 8
    config.train.update({{"global_batch_size": 8, "num_train_steps": 3, "warmup_steps": 2, "learning_rate": 1e-3,
                         "log_every_steps": 1, "eval_every_steps": 3, "eval_batch_size": 16}})
    config.checkpoint.update({{"every_steps": 3, "max_to_keep": 5, "async_save": True}})
    return config
'''


def _small_disk(path: pathlib.Path, size: str) -> pathlib.Path:
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                            check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); the simulated ENOSPC cases run")
    return path


@pytest.fixture
def disk(tmp_path):
    mounted = []

    def make(size: str) -> pathlib.Path:
        mounted.append(_small_disk(tmp_path / f"disk{len(mounted)}", size))
        return mounted[-1]

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


@pytest.fixture
def config_file(tmp_path, corpus_file, small_tokenizer):
    """A tiny run's config; `docs_per_shard` 10 spreads the corpus over shards for the worker processes."""
    def write(docs_per_shard: int) -> str:
        path = tmp_path / f"tiny_{docs_per_shard}.py"
        path.write_text(_CONFIG.format(corpus=corpus_file, tokenizer=small_tokenizer.model_path,
                                       docs_per_shard=docs_per_shard), encoding="utf-8")
        return str(path)
    return write


def _run(module, *flags):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def _assert_one_disk_full_line(result, directory) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    assert "no space left on device" in errors[0] and str(directory) in errors[0], errors[0]
    return errors[0]


def test_full_disk_while_tokenizing_with_workers_is_one_line(disk, config_file):
    workdir = disk("160k") / "run"
    result = _run("bert_jax.prepare_corpus", f"--config={config_file(10)}", f"--workdir={workdir}")
    _assert_one_disk_full_line(result, workdir / "corpus")
    shards = sorted(p.name for p in (workdir / "corpus").rglob("*") if p.is_file())
    assert not [name for name in shards if ".tmp-" in name], shards  # no partial shard holds the space
    assert "train-00000.array_record" in shards and "train-00000.json" in shards  # complete: reused on a rerun


@pytest.mark.slow
def test_full_disk_while_checkpointing_names_the_step_and_keeps_the_last_checkpoint(disk, config_file):
    mount = disk("64m")
    workdir = mount / "run"
    config_file = config_file(50_000)
    first = _run("bert_jax.pretrain", f"--config={config_file}", f"--workdir={workdir}")
    assert first.returncode == 0, first.stderr[-3000:]
    # Shrink the disk to what is used now plus half a checkpoint: the next save cannot complete.
    checkpoint_bytes = sum(p.stat().st_size for p in (workdir / "checkpoints" / "3").rglob("*") if p.is_file())
    used = os.statvfs(mount).f_blocks - os.statvfs(mount).f_bfree
    size = used * os.statvfs(mount).f_frsize + checkpoint_bytes // 2
    remount = subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], capture_output=True, check=False)
    assert remount.returncode == 0, remount.stderr
    result = _run("bert_jax.pretrain", f"--config={config_file}", f"--workdir={workdir}",
                  "--config.train.num_train_steps=30")
    line = _assert_one_disk_full_line(result, workdir / "checkpoints")
    failed = re.search(r"the checkpoint of step (\d+) in .*the complete checkpoints there \(3[,)]", line)
    assert failed and int(failed.group(1)) > 3, line  # the step whose save failed, not a later one
    evaluated = _run("bert_jax.evaluate", f"--workdir={workdir}", "--step=3")  # step 3 still restores
    assert evaluated.returncode == 0 and '"step": 3' in evaluated.stdout, evaluated.stderr[-3000:]
