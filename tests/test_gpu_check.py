"""benchmarks/gpu_check.sh --dry-run end to end on this CPU: the wheel step (skipped without wheels/), the
import check, every case of the plan at bert_tiny sizes against HF PyTorch, the JSON lines and the table."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_dry_run_writes_a_json_line_per_case_and_the_table(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}  # conftest's 8 CPU devices
    env = {**env, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT), "GPU_CHECK_BUDGET_S": "600",
           "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    headline = [r for r in rows if r["check"] == "headline"]
    assert [(r["shape"], r["batch_size"], r["seq_len"]) for r in headline] == [
        ("bert_base@128", 8, 32), ("bert_large@512 packed", 8, 64)]
    for row in headline:
        assert row["switches"]["model.attention_impl"] == "dot_product" and row["baseline"] == "hf_torch"
        assert row["sequences_per_second"] > 0 and row["baseline_sequences_per_second"] > 0
        assert row["ours_over_baseline"] == pytest.approx(
            row["sequences_per_second"] / row["baseline_sequences_per_second"])
        assert "mfu" in row and "baseline_mfu" in row  # null on CPU
    assert headline[1]["switches"]["data.pack_sequences"] is True
    assert headline[1]["instances_per_second"] > headline[1]["sequences_per_second"]
    searched = [r for r in rows if r["check"] == "search"]
    assert len(searched) == 2 * 3 and all("error" not in r and "skipped" not in r for r in searched), searched
    best = [r for r in rows if r["check"] == "best"]
    for row in best:  # the best is the fastest of its shape's measured cases
        measured = [r["sequences_per_second"] for r in rows if r["shape"] == row["shape"] and r["check"] != "best"]
        assert row["sequences_per_second"] == max(measured) and row["measured"] == len(measured) == 4
    table = (tmp_path / "gpu_check.md").read_text()
    assert len(table.splitlines()) == 2 + len(rows) and table in done.stdout
    assert "gpu_check: 10 JSON lines" in done.stdout
    assert ("no wheels/ folder, skipping" in done.stdout) != (ROOT / "wheels").is_dir()
