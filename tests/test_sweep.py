"""bert_jax.tools.sweep: the GPU check's plan, the greedy switch search, the time guard and the table, with a
fake measurement and a fake clock (the real cases run in tests/test_gpu_check.py)."""

import itertools

import pytest

from bert_jax.tools import sweep

AXES = (("a", (0, 1, 2)), ("b", (False, True)), ("c", ("x", "y")))


def _separable_score(switches):
    """Each axis adds its own amount: the greedy search must then find the best of the full product."""
    return {0: 1.0, 1: 3.0, 2: 2.0}[switches["a"]] + (0.5 if switches["b"] else 0.0) + {"x": 0.2, "y": 0.1}[switches["c"]]


def test_greedy_search_finds_the_best_of_the_product_for_separable_scores():
    calls = []

    def score(switches):
        calls.append(dict(switches))
        return _separable_score(switches)

    best, best_score = sweep.search_switches({"a": 0, "b": False, "c": "y"}, AXES, score)
    brute = max((dict(zip("abc", values)) for values in itertools.product(*(v for _, v in AXES))),
                key=_separable_score)
    assert best == brute == {"a": 1, "b": True, "c": "x"}
    assert best_score == pytest.approx(3.7)
    assert len(calls) == 1 + 2 + 1 + 1  # the start, then each other value of each axis once


def test_a_case_without_a_score_never_wins():
    best, best_score = sweep.search_switches({"a": 0, "b": False, "c": "x"}, AXES,
                                             lambda s: None if s["a"] == 1 else _separable_score(s))
    assert best == {"a": 2, "b": True, "c": "x"} and best_score == pytest.approx(2.7)
    assert sweep.search_switches({"a": 0, "b": False, "c": "x"}, AXES, lambda s: None) == (
        {"a": 0, "b": False, "c": "x"}, None)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _fake_plan():
    shapes = tuple(sweep.Shape(name, "unused.py", 8, 32, switches=(("a", 0), ("b", False), ("c", "x")))
                   for name in ("small", "large"))
    return sweep.Plan(shapes, AXES, "hf_torch", steps=5, warmup_steps=1, search_steps=2, search_warmup_steps=1)


def test_run_plan_rows_errors_and_time_guard():
    clock, emitted, calls = FakeClock(), [], []

    def measure(shape, switches, *, baseline, steps, warmup_steps):
        calls.append((shape.name, dict(switches), baseline, steps))
        clock.now += 10.0 if shape.name == "small" else 50.0
        if switches["c"] == "y":
            raise RuntimeError("cuDNN refused this shape\nsecond line")
        figures = {"sequences_per_second": _separable_score(switches) * (1 if shape.name == "small" else 0.1),
                   "step_time_median_s": 0.1, "compile_seconds": 1.0, "mfu": 0.5}
        if baseline != "none":
            figures.update(baseline_sequences_per_second=1.0, baseline_mfu=0.25, ours_over_baseline=2.0)
        return figures

    rows = sweep.run_plan(_fake_plan(), stop_after_s=150.0, emit=emitted.append, measure=measure, clock=clock)
    assert rows == emitted
    assert [(r["check"], r["shape"]) for r in rows[:2]] == [("headline", "small"), ("headline", "large")]
    assert calls[0] == ("small", {"a": 0, "b": False, "c": "x"}, "hf_torch", 5)  # headlines: baseline, full steps
    assert all(c[2] == "none" and c[3] == 2 for c in calls[2:])  # the search: no baseline, fewer steps
    # small's search (10 s each) fits: a=1, a=2, b=True, c=y (fails, one line); the headline is not re-measured.
    small = [r for r in rows if r["shape"] == "small" and r["check"] == "search"]
    assert [r["tried"] for r in small] == [{"a": 1, "b": False, "c": "x"}, {"a": 2, "b": False, "c": "x"},
                                           {"a": 1, "b": True, "c": "x"}, {"a": 1, "b": True, "c": "y"}]
    assert small[-1]["error"] == "RuntimeError: cuDNN refused this shape"
    best_small = next(r for r in rows if r["check"] == "best" and r["shape"] == "small")
    assert best_small["tried"] == {"a": 1, "b": True, "c": "x"}
    assert best_small["over_headline"] == pytest.approx(3.7 / 1.2) and best_small["measured"] == 4
    # At 100 s the large search starts; after one 50 s case the next would end past 150 s: skipped.
    large = [r for r in rows if r["shape"] == "large" and r["check"] == "search"]
    assert "sequences_per_second" in large[0] and all(r.get("skipped") == "time guard" for r in large[1:])
    assert len(calls) == 2 + 4 + 1


def test_time_guard_judges_by_the_slowest_case_of_the_shape_and_check():
    clock = FakeClock()
    guard = sweep.TimeGuard(100.0, clock)
    assert guard.allows("x", "headline")

    def work(seconds):
        clock.now += seconds
        return {}

    guard.run("x", "headline", lambda: work(40.0))
    clock.now = 59.0  # no search case of x yet: the headline's 40 s is the guess
    assert guard.allows("x", "search") and guard.allows("y", "search")
    clock.now = 61.0
    assert not guard.allows("x", "search") and guard.allows("y", "headline")
    guard.run("x", "search", lambda: work(5.0))
    guard.run("x", "search", lambda: work(10.0))
    clock.now = 89.0
    assert guard.expected_seconds("x", "search") == 10.0 and guard.allows("x", "search")
    assert not guard.allows("x", "headline")
    clock.now = 101.0
    assert not guard.allows("y", "search")


def test_table_has_one_row_per_result_and_says_why_a_case_has_no_figures():
    rows = [{"check": "headline", "shape": "s", "tried": {"model.attention_impl": "cudnn"}, "compile_seconds": 12.34,
             "step_time_median_s": 0.0456, "sequences_per_second": 5612.5, "mfu": 0.4321,
             "baseline_sequences_per_second": 2000.0, "baseline_mfu": 0.154, "ours_over_baseline": 2.80625},
            {"check": "search", "shape": "s", "tried": {"model.remat_policy": "dots_with_no_batch_dims_saveable"},
             "compile_seconds": 1.0, "step_time_median_s": 0.05, "sequences_per_second": 10.0, "mfu": None},
            {"check": "search", "shape": "s", "tried": {"model.scan_layers": True}, "error": "OOM"},
            {"check": "search", "shape": "s", "tried": {"model.scan_layers": True}, "skipped": "time guard"},
            {"check": "best", "shape": "s", "tried": {"model.attention_impl": "cudnn"}, "sequences_per_second": 5612.5,
             "over_headline": 1.0, "measured": 2},
            {"check": "best", "shape": "t", "tried": {}, "sequences_per_second": None, "over_headline": None,
             "measured": 0}]
    lines = sweep.format_table(rows).splitlines()
    assert len(lines) == 2 + len(rows) and all(line.count("|") == 11 for line in lines)
    assert "| attention=cudnn | 12.3 | 45.6 | 5,612.5 | 43.2% | 2,000.0 | 15.4% | 2.81x |" in lines[2]
    assert "remat=dots" in lines[3] and "| 10.0 | - | - | - | - |" in lines[3]
    assert "error: OOM" in lines[4] and "skipped: time guard" in lines[5]
    assert "1.00x the headline (2 measured)" in lines[6]
    assert "| - |  |  |  | no headline figures (0 measured) |" in lines[7]
    assert "ours / HF 2.81x" in sweep.progress_line(rows[0]) and "MFU 43.2%" in sweep.progress_line(rows[0])


@pytest.mark.parametrize("dry_run", [False, True])
def test_every_case_of_the_plan_is_a_valid_config(dry_run):
    plan = sweep.gpu_check_plan(dry_run)
    for shape in plan.shapes:
        combos = itertools.product(*(values for _, values in plan.search_axes))
        for values in combos:
            config = sweep.build_config(shape, dict(zip((path for path, _ in plan.search_axes), values)))
            assert config.train.global_batch_size == shape.batch_size
            assert config.data.max_seq_length == shape.seq_len
    if not dry_run:
        base, large = (sweep.build_config(shape, dict(shape.switches)) for shape in plan.shapes)
        assert (base.model.num_hidden_layers, base.model.hidden_size, base.train.global_batch_size,
                base.data.max_seq_length, base.model.dtype, base.model.attention_impl) == (
                    12, 768, 256, 128, "bfloat16", "cudnn")
        assert (large.model.num_hidden_layers, large.model.hidden_size, large.train.global_batch_size,
                large.data.max_seq_length, large.data.pack_sequences, large.model.attention_impl) == (
                    24, 1024, 32, 512, True, "cudnn")
        assert plan.baseline == "hf_torch"
