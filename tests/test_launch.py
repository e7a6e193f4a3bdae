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
