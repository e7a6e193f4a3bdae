"""benchmarks/time_to_quality/report.py: reading the runs, accuracy at budget fractions, the verdict, the files."""

import json
import os

import pytest
from conftest import load_benchmark_script


@pytest.fixture(scope="module")
def report():
    return load_benchmark_script("time_to_quality/report.py", "ttq_report")


def _write_run(out, corpus, model, points, steps_per_point=10, budget=100.0):
    run_dir = os.path.join(out, corpus, model)
    os.makedirs(run_dir)
    num_steps = steps_per_point * len(points)
    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump({"model": model, "corpus": corpus, "budget_seconds": budget, "num_train_steps": num_steps,
                   "final_wall_seconds": points[-1][0], "parameters": 1234567, "first_step_seconds": 3.5,
                   "not_in_checkout": ["train.schedule"] if model == "modern" else []}, f)
    with open(os.path.join(run_dir, "curve.jsonl"), "w") as f:
        f.writelines(json.dumps({"step": i * steps_per_point, "wall_seconds": seconds, "mlm_accuracy": accuracy,
                                "mlm_predictions": 10000}) + "\n" for i, (seconds, accuracy) in enumerate(points, 1))


def test_table_verdict_and_figure(report, tmp_path):
    out = str(tmp_path)
    # Written out of time order on purpose: the reader sorts by wall time.
    _write_run(out, "docs", "bert2018", [(25.0, 0.10), (51.0, 0.20), (76.0, 0.25), (101.0, 0.30)])
    _write_run(out, "docs", "modern", [(20.0, 0.12), (60.0, 0.31), (40.0, 0.22), (99.0, 0.40)])
    runs = report.load_runs(out)
    assert [r["model"] for r in runs] == ["bert2018", "modern"]
    modern = runs[1]
    assert [p["wall_seconds"] for p in modern["curve"]] == [20.0, 40.0, 60.0, 99.0]

    # Newest point by x% of the 100 s budget + 2 s grace; none before the first point.
    bert_curve = runs[0]["curve"]
    assert report.accuracy_at(bert_curve, 25.0, 100.0)["mlm_accuracy"] == 0.10
    assert report.accuracy_at(bert_curve, 50.0, 100.0)["mlm_accuracy"] == 0.20  # 51 s is within the grace
    assert report.accuracy_at(bert_curve, 10.0, 100.0) is None
    assert report.accuracy_at(modern["curve"], 75.0, 100.0)["mlm_accuracy"] == 0.31

    rows = report.table(runs).splitlines()
    assert rows[0].startswith("| model | corpus | parameters | steps | compile s | steps/wall s | wall s | CPU s | acc @25%")
    bert_cells = [c.strip() for c in rows[2].strip("|").split("|")]
    se = (0.3 * 0.7 / 10000) ** 0.5
    assert bert_cells == ["bert2018", "docs", "1,234,567", "40", "3.5", f"{40 / 101:.2f}", "101", "–", "0.1000",
                          "0.2000", "0.2500", "0.3000", f"0.3000 +- {se:.4f}", "–"]

    verdict = report.verdicts(runs)
    assert len(verdict) == 1
    assert "**modern** ends higher than bert2018, 0.4000 against 0.3000 (+10.00 points" in verdict[0]
    assert "reaches bert2018's final accuracy after 60 wall s (60% of the budget), 0.59x the 101 s bert2018 took to reach it" in verdict[0]
    assert any("docs/modern: run WITHOUT train.schedule" in line for line in report.notes(runs))

    report.main(["--out", out])
    assert os.path.getsize(os.path.join(out, "ttq_curves.png")) > 1000
    with open(os.path.join(out, "RESULTS.md")) as f:
        assert "![accuracy against wall time](ttq_curves.png)" in f.read()


def test_no_runs_is_one_line(report, tmp_path):
    with pytest.raises(SystemExit, match="no run.json under"):
        report.main(["--out", str(tmp_path)])


def test_a_cpu_clock_run_is_read_on_cpu_seconds(report, tmp_path):
    run_dir = tmp_path / "docs" / "modern"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"model": "modern", "corpus": "docs", "clock": "cpu",
                                                  "budget_seconds": 100.0, "num_train_steps": 20,
                                                  "final_wall_seconds": 300.0, "final_cpu_seconds": 98.0}))
    (run_dir / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in [
        {"step": 10, "wall_seconds": 150.0, "cpu_seconds": 49.0, "mlm_accuracy": 0.2},
        {"step": 20, "wall_seconds": 300.0, "cpu_seconds": 98.0, "mlm_accuracy": 0.3}]))
    cells = [c.strip() for c in report.table(report.load_runs(str(tmp_path))).splitlines()[2].strip("|").split("|")]
    # On the wall clock neither point is within the budget; on the CPU clock the first is by 50%, both by 100%.
    assert cells[6:13] == ["300", "98", "–", "0.2000", "0.2000", "0.3000", "0.3000"]


def test_a_third_run_is_compared_with_each_of_the_others(report, tmp_path):
    out = str(tmp_path)
    _write_run(out, "docs", "bert2018", [(25.0, 0.10), (50.0, 0.20), (75.0, 0.30), (100.0, 0.35)])
    _write_run(out, "docs", "modern", [(25.0, 0.12), (50.0, 0.25), (75.0, 0.33), (100.0, 0.40)])
    _write_run(out, "docs", "hf_trainer", [(25.0, 0.05), (50.0, 0.10), (75.0, 0.15), (100.0, 0.20)])
    lines = report.verdicts(report.load_runs(out))
    assert len(lines) == 3
    hf = [line for line in lines if "**bert2018** ends higher than hf_trainer" in line]
    # bert2018 reaches hf_trainer's final 0.20 at 50 s; hf_trainer first reaches it at 100 s.
    assert len(hf) == 1 and "after 50 wall s (50% of the budget), 0.50x the 100 s hf_trainer took to reach it" in hf[0]


def test_against_the_trainer_reads_accuracy_and_loss_on_both_clocks(report, tmp_path):
    def write(model, points):
        run_dir = tmp_path / "docs" / model
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({"model": model, "corpus": "docs", "clock": "cpu",
                                                      "budget_seconds": 100.0, "num_train_steps": 40,
                                                      "final_wall_seconds": points[-1][0],
                                                      "final_cpu_seconds": points[-1][1]}))
        (run_dir / "curve.jsonl").write_text("".join(json.dumps(
            {"step": 10 * i, "wall_seconds": w, "cpu_seconds": c, "mlm_accuracy": a, "mlm_loss": l}) + "\n"
            for i, (w, c, a, l) in enumerate(points, 1)))

    # (wall s, CPU s, accuracy, loss) at four checkpoints each.
    write("bert2018", [(10.0, 20.0, 0.10, 7.0), (20.0, 40.0, 0.20, 6.5), (30.0, 60.0, 0.25, 6.2), (40.0, 80.0, 0.3, 6.0)])
    write("hf_trainer", [(30.0, 25.0, 0.05, 7.5), (60.0, 50.0, 0.12, 7.2), (90.0, 75.0, 0.20, 6.6),
                         (120.0, 100.0, 0.18, 6.4)])
    lines = report.against_baseline(report.load_runs(str(tmp_path)))
    # The Trainer ends at accuracy 0.18 (first reached at 90 wall / 75 CPU s); bert2018 passes it at its second
    # point (20 wall / 40 CPU s). Its final loss 6.4 (120 / 100 s) bert2018 first beats at 30 wall / 60 CPU s.
    assert len(lines) == 2
    assert "bert2018: time to hf_trainer's final held-out accuracy (0.1800): wall: 20 s against 90 s = **0.22x** (meets" in lines[0]
    assert "cpu: 40 s against 75 s = **0.53x** (misses the goal of 0.33x)" in lines[0]
    assert "bert2018: time to hf_trainer's final held-out loss (6.4000): wall: 30 s against 120 s = **0.25x** (meets" in lines[1]
    assert "cpu: 60 s against 100 s = **0.60x**" in lines[1]
    assert report.against_baseline([r for r in report.load_runs(str(tmp_path)) if r["model"] != "hf_trainer"]) == []
    # Every bert_jax run beside the Trainer gets its own lines; one that never gets there says so.
    write("bert2018_fast", [(5.0, 10.0, 0.15, 6.9), (10.0, 20.0, 0.17, 6.8)])
    lines = report.against_baseline(report.load_runs(str(tmp_path)))
    assert len(lines) == 4 and lines[:2] == [line for line in lines if "bert2018:" in line]
    assert "bert2018_fast: time to hf_trainer's final held-out accuracy (0.1800): wall: bert2018_fast never reaches it" in lines[2]
