"""Preemption: a real SIGTERM or Ctrl-C (SIGINT) makes the run save a checkpoint at the next step boundary
and exit 0; running the same command again resumes from that step."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from test_distributed import _env, _flags

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["sigterm", "ctrl_c"])
def test_a_stop_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, corpus_file, small_tokenizer, signum):
    workdir = tmp_path / "run"
    args = _flags(corpus_file, small_tokenizer.model_path, workdir) + [
        "--config.train.num_train_steps=100000", "--config.checkpoint.every_steps=100000",
        "--config.train.eval_every_steps=100000"]
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(2), stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.time() + 300
    for line in proc.stderr:  # wait until training is under way
        seen.append(line)
        if "step 5/100000" in line or time.time() > deadline:
            break
    proc.send_signal(signum)
    _, rest = proc.communicate(timeout=300)
    log = "".join(seen) + rest
    assert proc.returncode == 0, log[-3000:]
    assert "preempted: stopped at step" in log and "Traceback" not in log
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert len(steps) == 1 and steps[0] >= 5  # the on-demand checkpoint, and no other
    stopped = steps[0]
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl", encoding="utf-8")]
    assert [m["step"] for m in lines if m["split"] == "train"] == list(range(1, stopped + 1))  # nothing lost

    resumed = subprocess.run([sys.executable, *args[:-3], f"--config.train.num_train_steps={stopped + 2}"],
                             cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stopped}" in resumed.stderr
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl", encoding="utf-8")]
    assert [m["step"] for m in lines if m["split"] == "train"] == list(range(1, stopped + 3))
    assert os.path.isdir(workdir / "checkpoints" / str(stopped + 2))
