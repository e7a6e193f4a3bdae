"""The single-host launch script: --dry_run prints the exact pretraining command and runs nothing."""

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_single_host_dry_run(tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(["bash", "launch/single_host.sh", "configs/bert_base.py", str(workdir),
                             "--config.data.corpus=/data/text", "--dry_run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (f"python -m bert_jax.pretrain --config=configs/bert_base.py --workdir={workdir} "
            "--config.data.corpus=/data/text") in result.stdout
    assert not workdir.exists()  # a dry run creates nothing


def test_single_host_usage_error():
    result = subprocess.run(["bash", "launch/single_host.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage:" in result.stderr


def _fake_gcloud(tmp_path):
    """A gcloud on the PATH that records each call's arguments, one JSON list per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "gcloud_calls.jsonl"
    script = bin_dir / "gcloud"
    script.write_text(f"#!/usr/bin/env python3\nimport json, sys\n"
                      f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    script.chmod(0o755)
    return bin_dir, log


def _tpu(tmp_path, *args):
    import json
    import os
    bin_dir, log = _fake_gcloud(tmp_path)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = subprocess.run(["bash", "launch/tpu_vm.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_tpu_vm_lifecycle_commands(tmp_path):
    where = ["--name=bert-pod", "--zone=us-central2-b", "--project=my-proj"]
    result, calls = _tpu(tmp_path / "create", "create", *where, "--accelerator_type=v4-32", "--spot")
    assert result.returncode == 0, result.stderr
    assert calls == [["compute", "tpus", "tpu-vm", "create", "bert-pod", "--zone=us-central2-b", "--project=my-proj",
                      "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]]

    _, calls = _tpu(tmp_path / "install", "install", *where)
    assert calls[0][:4] == ["compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in calls[0]
    assert "--worker=all" in calls[1] and any("pip install -e ." in a for a in calls[1])

    _, calls = _tpu(tmp_path / "train", "train", *where, "--config=configs/bert_base.py", "--workdir=/mnt/runs/b",
                    "--", "--config.train.num_train_steps=100")
    (train,) = calls
    assert train[:5] == ["compute", "tpus", "tpu-vm", "ssh", "bert-pod"] and "--worker=all" in train
    command = next(a for a in train if a.startswith("--command="))
    assert ("python -m bert_jax.pretrain --config=configs/bert_base.py --workdir=/mnt/runs/b "
            "--config.train.num_train_steps=100") in command

    _, calls = _tpu(tmp_path / "logs", "logs", *where, "--worker=3")
    assert "--worker=3" in calls[0] and any("tail" in a for a in calls[0])
    _, calls = _tpu(tmp_path / "stop", "stop", *where)
    assert any("pkill -TERM -f bert_jax.pretrain" in a for a in calls[0])
    _, calls = _tpu(tmp_path / "delete", "delete", *where)
    assert calls == [["compute", "tpus", "tpu-vm", "delete", "bert-pod", "--zone=us-central2-b", "--project=my-proj",
                      "--quiet"]]


def test_tpu_vm_dry_run_runs_nothing(tmp_path):
    result, calls = _tpu(tmp_path, "create", "--name=n", "--zone=z", "--accelerator_type=v4-8", "--dry_run")
    assert result.returncode == 0 and calls == []
    assert "gcloud compute tpus tpu-vm create n --zone=z --accelerator-type=v4-8" in result.stdout


def test_tpu_vm_missing_arguments_are_errors(tmp_path):
    result, calls = _tpu(tmp_path, "train", "--name=n", "--zone=z")
    assert result.returncode == 2 and "needs --config and --workdir" in result.stderr and calls == []
