"""Crash safety of pretraining: SIGKILLs at any point (one inside an asynchronous save) resume bitwise,
damaged checkpoints are named and skipped, and non-finite steps are skipped or, in a streak, rolled back.

The runs are real `python -m bert_jax.pretrain` processes on one CPU device; they share a JAX compilation
cache only to start faster (a cached program is the same program).
"""

import collections
import glob
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import NamedTuple

import jax
import numpy as np
import pytest
from test_steps import build, synthetic_batch, tiny_config

from bert_jax import config as config_lib
from bert_jax.pretraining import loop, run_checkpoint
from bert_jax.runtime import checkpoint as checkpoint_lib
from bert_jax.runtime import numerics, parallel, reporting

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 12


class Reference(NamedTuple):
    workdir: pathlib.Path  # an uninterrupted run of NUM_STEPS steps
    cache: pathlib.Path  # the compilation cache its processes share


def _command(corpus_file, tokenizer_path, workdir, **extra) -> list[str]:
    overrides = {
        "data.corpus": corpus_file, "data.tokenizer_model": tokenizer_path, "data.tokenizer_vocab_size": 300,
        "data.eval_fraction": 0.2, "data.eval_num_examples": 40, "data.max_seq_length": 64,
        "model.vocab_size": 320, "model.hidden_size": 32, "model.num_hidden_layers": 2,
        "model.num_attention_heads": 2, "model.intermediate_size": 64, "model.max_position_embeddings": 64,
        "masking.max_predictions_per_seq": 8, "train.global_batch_size": 8, "train.num_train_steps": NUM_STEPS,
        "train.warmup_steps": 1, "train.log_every_steps": 1, "train.eval_every_steps": 6,
        "train.eval_batch_size": 16, "checkpoint.every_steps": 3, "checkpoint.max_to_keep": 10, **extra,
    }
    return [sys.executable, "-m", "bert_jax.pretrain", "--config=configs/bert_tiny.py", f"--workdir={workdir}",
            *[f"--config.{name}={value}" for name, value in overrides.items()]]


def _env(cache, kill_at: str = "") -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop("BERT_JAX_TEST_KILL_AT", None)
    if kill_at:
        env["BERT_JAX_TEST_KILL_AT"] = kill_at
    return env


def _run(command, env) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(corpus_file, small_tokenizer, tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    workdir, cache = root / "run", root / "jax_cache"
    result = _run(_command(corpus_file, small_tokenizer.model_path, workdir), _env(cache))
    assert result.returncode == 0, result.stderr[-3000:]
    return Reference(workdir, cache)


def _final_state(workdir):
    run = run_checkpoint.restore_run_checkpoint(str(workdir), step=NUM_STEPS)
    return jax.device_get((run.state.params, run.state.opt_state, run.state.step))


def _assert_same_state(workdir_a, workdir_b):
    for a, b in zip(jax.tree.leaves(_final_state(workdir_a)), jax.tree.leaves(_final_state(workdir_b)), strict=True):
        np.testing.assert_array_equal(a, b)


def _metrics(workdir) -> list[dict]:
    """metrics.jsonl without the timing figure, which differs run to run."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    return [{k: v for k, v in m.items() if k != "sequences_per_second"} for m in lines]


def _tensorboard_steps(workdir) -> dict[str, list[int]]:
    """{tag: steps in file order}, parsed straight from the TFRecord framing of every event file."""
    from tensorboardX.proto import event_pb2
    steps = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
        data, offset = pathlib.Path(path).read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                steps[value.tag].append(event.step)
    return steps


def _checkpoint_names(workdir) -> list[str]:
    return sorted(os.listdir(checkpoint_lib.checkpoint_dir(str(workdir))))


@pytest.mark.slow  # long end-to-end case: `-m slow`, to keep CI under 20 minutes
def test_three_sigkills_resume_bitwise_with_every_step_logged_once(reference, corpus_file, small_tokenizer, tmp_path):
    workdir = tmp_path / "killed"
    command = _command(corpus_file, small_tokenizer.model_path, workdir)

    # 1. A SIGKILL from outside once step 7 is logged, wherever the run is by then.
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(reference.cache), stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"step 7/{NUM_STEPS}" in line:
            proc.kill()
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]

    # 2. Killed inside the asynchronous save of step 9: Orbax's temporary directory is all there is of it.
    result = _run(command, _env(reference.cache, kill_at="9:save"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    names = _checkpoint_names(workdir)
    assert "9" not in names and any(name.startswith("9.orbax-checkpoint-tmp") for name in names), names
    newest = max(int(name) for name in names if name.isdigit())

    # 3. Killed once step 11 is logged, before its checkpoint; the unfinished save of step 9 is ignored.
    result = _run(command, _env(reference.cache, kill_at="11:step"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert f"resumed from step {newest} " in result.stderr

    result = _run(command, _env(reference.cache))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compiled 1 time(s)" in result.stderr
    assert not [name for name in _checkpoint_names(workdir) if not name.isdigit()]  # no leftover temporaries

    _assert_same_state(reference.workdir, workdir)
    resumed = _metrics(workdir)
    assert [m["step"] for m in resumed if m["split"] == "train"] == list(range(1, NUM_STEPS + 1))
    assert resumed == _metrics(reference.workdir)  # every value, step for step
    tensorboard = _tensorboard_steps(workdir)
    assert tensorboard["train/loss"] == list(range(1, NUM_STEPS + 1))
    assert tensorboard["eval/mlm_loss"] == [6, 12]
    assert all(len(steps) == len(set(steps)) for steps in tensorboard.values())


def test_damaged_checkpoints_are_named_and_the_run_falls_back(reference, corpus_file, small_tokenizer, tmp_path):
    workdir = tmp_path / "damaged"
    shutil.copytree(reference.workdir, workdir)
    checkpoints = pathlib.Path(checkpoint_lib.checkpoint_dir(str(workdir)))
    (checkpoints / "12" / "state" / "manifest.ocdbt").unlink()  # a file missing
    for path in (checkpoints / "9" / "state" / "d").iterdir():  # files overwritten with garbage
        path.write_bytes(os.urandom(path.stat().st_size))

    result = _run(_command(corpus_file, small_tokenizer.model_path, workdir), _env(reference.cache))
    assert result.returncode == 0, result.stderr[-3000:]
    for step in (12, 9):
        assert f"the checkpoint {checkpoints / str(step)} cannot be restored" in result.stderr
    assert "resumed from step 6 " in result.stderr
    assert sorted(os.listdir(workdir / "checkpoints_damaged")) == ["12", "9"]  # kept aside for inspection
    _assert_same_state(reference.workdir, workdir)
    assert _metrics(workdir) == _metrics(reference.workdir)


def test_no_restorable_checkpoint_is_an_error_naming_the_directory(reference, tmp_path):
    workdir = tmp_path / "all_damaged"
    shutil.copytree(reference.workdir, workdir)
    abstract_state = run_checkpoint.restore_run_checkpoint(str(workdir)).setup.abstract_state
    checkpoints = pathlib.Path(checkpoint_lib.checkpoint_dir(str(workdir)))
    for step_dir in checkpoints.iterdir():
        (step_dir / "state" / "manifest.ocdbt").unlink()
    checkpointer = checkpoint_lib.Checkpointer(str(workdir), create=False)
    with pytest.raises(config_lib.InputError, match=f"none of the 4 checkpoints in {checkpoints} can be restored"):
        checkpointer.restore_latest(abstract_state)
    assert not (workdir / "checkpoints_damaged").exists()  # nothing is moved when nothing restores
    checkpointer.close()


def test_a_nonfinite_step_leaves_parameters_and_optimizer_bitwise_unchanged():
    mesh, state, step = build(tiny_config(warmup_steps=0, debug_poison_steps=(2,)), 1)
    rng, sharding = np.random.default_rng(0), parallel.batch_sharding(mesh)
    batches = [parallel.to_global_batch(synthetic_batch(rng), sharding) for _ in range(3)]
    state, first = step(state, batches[0])
    before = jax.device_get((state.params, state.opt_state))
    state, poisoned = step(state, batches[1])
    assert int(poisoned["nonfinite"]) == 1 and np.isnan(float(poisoned["loss"]))
    assert int(state.step) == 2  # the step still advances
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get((state.params, state.opt_state))),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    state, after = step(state, batches[2])
    assert int(first["nonfinite"]) == int(after["nonfinite"]) == 0 and np.isfinite(float(after["loss"]))
    assert not np.array_equal(jax.tree.leaves(before[0])[0], jax.tree.leaves(jax.device_get(state.params))[0])
    assert float(after["learning_rate"]) == float(poisoned["learning_rate"])  # the optimizer's count did not move
    assert step._cache_size() == 1


def test_a_streak_of_nonfinite_steps_restores_the_last_checkpoint_and_skips_its_batches(
        reference, corpus_file, small_tokenizer, tmp_path):
    workdir = tmp_path / "poisoned"
    command = _command(corpus_file, small_tokenizer.model_path, workdir, **{
        "train.debug_poison_steps": "(2,5,6,7)", "train.max_consecutive_nonfinite_steps": 3})
    result = _run(command, _env(reference.cache))
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("steps 5-7: 3 non-finite steps in a row (updates skipped); restored the parameters and optimizer state "
            f"of step 3 from {workdir / 'checkpoints' / '3'} and continue at step 8") in result.stderr
    assert "compiled 1 time(s)" in result.stderr
    train_lines = {m["step"]: m for m in _metrics(workdir) if m["split"] == "train"}
    assert sorted(train_lines) == list(range(1, NUM_STEPS + 1))
    poisoned = {2, 5, 6, 7}
    assert [m["skipped_steps"] for m in train_lines.values()] == [int(s in poisoned) for s in train_lines]
    assert all(np.isnan(m["loss"]) == (s in poisoned) for s, m in train_lines.items())
    # Step 8 continues from checkpoint 3's optimizer, whose next update was step 4's.
    assert train_lines[8]["learning_rate"] == train_lines[4]["learning_rate"] != train_lines[7]["learning_rate"]


def test_nonfinite_streak_counts_restores_and_stops_a_diverged_run():
    streak = numerics.NonFiniteStreak(limit=2)
    assert [streak.record(step, bad) for step, bad in [(1, True), (2, False), (3, True), (4, True)]] == [
        False, False, False, True]
    assert streak.first_step == 3
    streak.restored(checkpoint_step=2)
    assert [streak.record(5, False), streak.record(6, True), streak.record(7, True)] == [False, False, True]
    streak.restored(checkpoint_step=4)
    assert streak.record(8, True) is False
    with pytest.raises(config_lib.InputError, match="right after restoring the checkpoint of step 4"):
        streak.record(9, True)
    never = numerics.NonFiniteStreak(limit=0)
    assert not any(never.record(step, True) for step in range(1, 10))


def test_a_streak_with_no_earlier_checkpoint_stops_the_run_with_a_reason():
    class NoCheckpoints:
        directory = "/runs/x/checkpoints"

        def wait(self):
            pass

        def restore_latest(self, abstract_state, *, before):
            assert before == 0
            return None

    streak = numerics.NonFiniteStreak(limit=2)
    streak.record(1, True)
    streak.record(2, True)
    with pytest.raises(config_lib.InputError, match="steps 1-2 had non-finite .* no checkpoint from before them "
                                                    "exists in /runs/x/checkpoints"):
        loop._restore_before_streak(NoCheckpoints(), SimpleNamespace(abstract_state=None), None, streak)


def test_resumed_tensorboard_and_jsonl_hold_each_step_once_even_after_a_torn_write(tmp_path):
    writer = reporting.MetricsWriter(str(tmp_path))
    for step in range(1, 6):
        writer.write(step, "train", {"loss": float(step)})
    writer.close()
    (event_file,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    with open(event_file, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00partial")  # a record cut off by a kill
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 6, "spl')
    writer = reporting.MetricsWriter(str(tmp_path), resume_step=3)
    for step in range(4, 7):
        writer.write(step, "train", {"loss": float(step) + 0.5})
    writer.close()
    assert _tensorboard_steps(tmp_path)["train/loss"] == [1, 2, 3, 4, 5, 6]
    assert [(m["step"], m["loss"]) for m in _metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.5),
                                                                    (5, 5.5), (6, 6.5)]


def test_damaged_metrics_lines_are_dropped_with_a_warning_not_a_crash(tmp_path, caplog):
    good = [json.dumps({"step": step, "split": "train", "loss": float(step)}) for step in (1, 3)]
    damaged = [b"[1, 2]", b'{"split": "train"}', b'{"step": null}', b'{"step": 2, "split": "tr\xff\xfe']
    (tmp_path / "metrics.jsonl").write_bytes(b"\n".join([good[0].encode(), *damaged, good[1].encode()]))
    with caplog.at_level("WARNING"):
        writer = reporting.MetricsWriter(str(tmp_path), resume_step=5)  # the last line has lost its newline
    writer.write(4, "train", {"loss": 4.0})
    writer.close()
    assert [(m["step"], m["loss"]) for m in _metrics(tmp_path)] == [(1, 1.0), (3, 3.0), (4, 4.0)]
    assert caplog.text.count("dropping unreadable metrics line") == len(damaged)


# Rewrites metrics.jsonl for ever as a resume does: a torn line (a kill mid-append) dropped, then one appended.
_REWRITER = """
import sys
from bert_jax.runtime import reporting
print("ready", flush=True)
while True:
    reporting._truncate_after(sys.argv[1], 10**9)
    with open(sys.argv[1], "a", encoding="utf-8") as f:
        f.write(sys.argv[2])
"""


def test_a_sigkill_while_metrics_jsonl_is_rewritten_never_loses_its_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = "".join(json.dumps({"step": step, "split": "train", "loss": 1.0, "note": "x" * 2000}) + "\n"
                   for step in range(3000))  # 6 MB: writing it takes a while
    torn = '{"step": 3000, "split": "tr'
    path.write_text(good, encoding="utf-8")
    rng = np.random.default_rng(0)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", _REWRITER, str(path), torn], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.1, 1.0))
        child.kill()
        child.wait()
        content = path.read_text(encoding="utf-8")
        assert content.startswith(good) and torn.startswith(content[len(good):]), f"{len(content)} of {len(good)}"
    reporting.MetricsWriter(str(tmp_path), resume_step=10**9).close()
    assert path.read_text(encoding="utf-8") == good
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "tensorboard"]  # no temporaries left behind


def _event_frames(path) -> list[tuple[int, int]]:
    """(offset, data length) of every record of an intact TensorBoard file."""
    data, offset, frames = pathlib.Path(path).read_bytes(), 0, []
    while offset < len(data):
        (length,) = struct.unpack("Q", data[offset:offset + 8])
        frames.append((offset, length))
        offset += 12 + length + 4
    return frames


@pytest.mark.parametrize("field", ["length", "length_crc", "data", "data_crc"])
def test_a_flipped_byte_in_a_tensorboard_file_costs_only_its_own_event(tmp_path, caplog, field):
    from tensorboardX.proto import event_pb2
    writer = reporting.MetricsWriter(str(tmp_path))
    for step in range(1, 11):
        writer.write(step, "train", {"loss": float(step)})
    writer.close()
    (event_file,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    frames = _event_frames(event_file)
    offset, length = frames[len(frames) // 2]
    data = bytearray(pathlib.Path(event_file).read_bytes())
    damaged_step = event_pb2.Event.FromString(bytes(data[offset + 12:offset + 12 + length])).step
    data[offset + {"length": 0, "length_crc": 9, "data": 12 + length // 2, "data_crc": 13 + length}[field]] ^= 0x10
    pathlib.Path(event_file).write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        reporting.MetricsWriter(str(tmp_path), resume_step=10).close()  # the resume path rewrites the file
    kept = [event_pb2.Event.FromString(r) for r in reporting.read_event_records(event_file)]
    assert [e.step for e in kept if e.HasField("summary")] == [s for s in range(1, 11) if s != damaged_step]
    assert len(kept) == len(frames) - 1
    assert f"dropped {16 + length} damaged or cut-off bytes" in caplog.text
    assert len(_event_frames(event_file)) == len(kept)  # rewritten whole: the framing holds from start to end
    assert not [name for name in os.listdir(tmp_path / "tensorboard") if name.startswith(".")]


@pytest.mark.parametrize("overrides,message", [
    ({"max_consecutive_nonfinite_steps": -1}, "must be 0 \\(never restore\\) or positive"),
    ({"debug_poison_steps": (0, 3)}, "must list step numbers >= 1"),
])
def test_invalid_guard_settings_name_the_problem(overrides, message):
    config = config_lib.default_config()
    config.train.update(overrides)
    with pytest.raises(config_lib.InputError, match=message):
        config_lib.validate(config)


def test_a_damaged_data_iterator_position_falls_back_like_other_damage(reference, corpus_file, small_tokenizer,
                                                                       tmp_path):
    """The newest checkpoint's arrays are fine but its saved data position is garbage: restoring it crashed in
    grain's set_state; now that checkpoint is set aside as damaged and the run resumes from the one before."""
    workdir = tmp_path / "bad_position"
    shutil.copytree(reference.workdir, workdir)
    checkpoints = pathlib.Path(checkpoint_lib.checkpoint_dir(str(workdir)))
    meta_path = checkpoints / "12" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    meta["data_state"] = {"bogus": [1, 2, 3]}
    meta_path.write_text(json.dumps(meta))

    result = _run(_command(corpus_file, small_tokenizer.model_path, workdir), _env(reference.cache))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the data-iterator position saved with the checkpoint of step 12 does not restore" in result.stderr
    assert "resumed from step 9 " in result.stderr
    assert sorted(os.listdir(workdir / "checkpoints_damaged")) == ["12"]
    _assert_same_state(reference.workdir, workdir)  # steps 10-12 replayed from step 9's position: bitwise
