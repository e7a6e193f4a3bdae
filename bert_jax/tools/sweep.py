"""Several benchmark cases in one process: the GPU check's plan, a greedy switch search, a time guard, a table.

Why one process: every `python -m bert_jax.benchmark` pays for starting Python, JAX, the GPU client and
torch before its one compile, and a device machine is lent for minutes (the old 43-process sweep did not
fit). Here each case is `benchmarking.benchmark_train_step` on a config built from its file, the shape's
overrides and the case's switches; a case that fails (a kernel refusing a shape, memory) is recorded with
its error and the rest go on. The switch search is greedy, one switch at a time from the headline
setting, keeping whatever is faster (sequences/s of the same shape and batch), because the full product
of the switches would not fit the time. The time guard starts no case once `stop_after_s` has passed,
nor one that would overrun it judging by the slowest such case of its shape so far.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import time
from collections.abc import Callable
from typing import Any

import ml_collections

from bert_jax import config as config_lib
from bert_jax.tools import benchmarking

# The switches the search tries, one at a time, in this order: attention kernel, layer scan, remat.
SEARCH_AXES: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("model.attention_impl", ("xla", "dot_product", "cudnn")),
    ("model.scan_layers", (False, True)),
    ("model.remat_policy", ("none", "dots_with_no_batch_dims_saveable")),
)
DRY_RUN_SEARCH_AXES = ((SEARCH_AXES[0][0], ("xla", "dot_product")),) + SEARCH_AXES[1:]  # no cuDNN on CPU


@dataclasses.dataclass(frozen=True)
class Shape:
    """One headline measurement: a config file at a batch and length, with the overrides all its cases share."""

    name: str
    config_file: str
    batch_size: int
    seq_len: int
    overrides: tuple[tuple[str, Any], ...] = ()
    switches: tuple[tuple[str, Any], ...] = ()  # the headline's values of the searched switches


@dataclasses.dataclass(frozen=True)
class Plan:
    shapes: tuple[Shape, ...]
    search_axes: tuple[tuple[str, tuple[Any, ...]], ...]
    baseline: str  # for the headline cases: "hf_torch" or "none"
    steps: int
    warmup_steps: int
    search_steps: int
    search_warmup_steps: int


def _predictions(seq_len: int) -> int:
    """15% of a full row's non-special tokens, at least the recipes' 20 (as benchmarks/gpu_sweep.sh)."""
    return max(20, ((seq_len - 3) * 15 + 50) // 100)


def gpu_check_plan(dry_run: bool = False) -> Plan:
    """bert_base@128 (batch 256) and packed bert_large@512 (batch 32), bf16, cuDNN attention, vs HF PyTorch.

    The dry run keeps the plan's structure at bert_tiny sizes, with `dot_product` attention in float32
    (cuDNN's kernel is GPU-only and bf16-only), so that it runs in seconds on a CPU.
    """
    no_dropout = ("model.attention_probs_dropout_prob", 0.0)  # the fused kernels have none: same model everywhere
    if dry_run:
        common, attention = (no_dropout, ("model.dtype", "float32")), "dot_product"
        sizes = (("bert_base@128", "configs/bert_tiny.py", 8, 32, False),
                 ("bert_large@512", "configs/bert_tiny.py", 8, 64, True))  # 8: whole rows on 8 CPU devices too
    else:
        common, attention = (no_dropout, ("model.dtype", "bfloat16")), "cudnn"
        sizes = (("bert_base@128", "configs/bert_base.py", 256, 128, False),
                 ("bert_large@512", "configs/bert_large.py", 32, 512, True))
    shapes = []
    for name, config_file, batch_size, seq_len, packed in sizes:
        packing = (("data.pack_sequences", True), ("masking.max_predictions_per_seq", _predictions(seq_len))) \
            if packed else ()
        shapes.append(Shape(f"{name} packed" if packed else name, config_file, batch_size, seq_len,
                            overrides=common + packing,
                            switches=(("model.attention_impl", attention), ("model.scan_layers", False),
                                      ("model.remat_policy", "none"))))
    if dry_run:
        return Plan(tuple(shapes), DRY_RUN_SEARCH_AXES, "hf_torch", steps=3, warmup_steps=1, search_steps=2,
                    search_warmup_steps=1)
    return Plan(tuple(shapes), SEARCH_AXES, "hf_torch", steps=20, warmup_steps=5, search_steps=10,
                search_warmup_steps=3)


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of the config file at `path` (as `--config=path` loads it)."""
    spec = importlib.util.spec_from_file_location("_benchmark_config", path)
    if spec is None or spec.loader is None:
        raise config_lib.InputError(f"cannot load config file {path}; give a file such as configs/bert_base.py.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def build_config(shape: Shape, switches: dict[str, Any]) -> ml_collections.ConfigDict:
    """The validated config of one case: the file, the shape's overrides, then the case's switches."""
    config = load_config_file(shape.config_file)
    config.update_from_flattened_dict({**dict(shape.overrides), **switches})
    return benchmarking.prepare_config(config, shape.batch_size, shape.seq_len)


def measure_case(shape: Shape, switches: dict[str, Any], *, baseline: str, steps: int, warmup_steps: int) -> dict:
    """One case's benchmark figures, with the baseline's `baseline_*` figures when `baseline` is not 'none'."""
    config = build_config(shape, switches)
    if baseline != "none":
        benchmarking.check_baseline(config, baseline)
    result = benchmarking.benchmark_train_step(config, steps=steps, warmup_steps=warmup_steps)
    result.update(config=shape.config_file, switches=benchmarking.switches(config))
    if baseline == "hf_torch":  # unpacked rows of the same shape: HF has no packing
        host_batch = benchmarking.synthetic_batch(shape.batch_size, shape.seq_len, config.data.tokenizer_vocab_size,
                                                  seed=config.train.seed)
        result.update(benchmarking.hf_torch_baseline(config, host_batch, steps=steps, warmup_steps=warmup_steps))
        result["ours_over_baseline"] = result["sequences_per_second"] / result["baseline_sequences_per_second"]
        _release_torch_memory()
    return result


def _release_torch_memory() -> None:
    """Hands the memory torch's allocator keeps cached back to the GPU, for the JAX cases that follow."""
    import torch  # lazy: only the baseline imports torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TimeGuard:
    """Refuses to start a case once `stop_after_s` have passed, or when it would end past that, judging by the
    slowest case of the same shape and check so far (else of the same shape: a headline, which also times
    the baseline, makes a cautious guess for the shape's first search case)."""

    def __init__(self, stop_after_s: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._deadline = clock() + stop_after_s
        self._slowest: dict[tuple[str, str], float] = {}

    def expected_seconds(self, shape_name: str, check: str) -> float:
        if (shape_name, check) in self._slowest:
            return self._slowest[(shape_name, check)]
        return max((s for (name, _), s in self._slowest.items() if name == shape_name), default=0.0)

    def allows(self, shape_name: str, check: str) -> bool:
        return self._clock() + self.expected_seconds(shape_name, check) <= self._deadline

    def run(self, shape_name: str, check: str, work: Callable[[], dict]) -> dict:
        start = self._clock()
        try:
            return work()
        finally:
            key = (shape_name, check)
            self._slowest[key] = max(self._clock() - start, self._slowest.get(key, 0.0))


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def run_plan(plan: Plan, *, stop_after_s: float, emit: Callable[[dict], None],
             measure: Callable[..., dict] = measure_case, clock: Callable[[], float] = time.monotonic) -> list[dict]:
    """Runs the headline cases (with the baseline), then the switch search of each shape; `emit`s each row.

    Rows carry `check` ('headline', 'search' or 'best'), `shape` and `tried` (the searched switches), then
    the benchmark's figures, or `error` (one line), or `skipped` (the time guard). Returns every row.
    """
    guard, rows = TimeGuard(stop_after_s, clock), []
    scores: dict[tuple[str, tuple], float | None] = {}

    def case(check: str, shape: Shape, switches: dict, **kwargs) -> float | None:
        key = (shape.name, tuple(sorted(switches.items())))
        if key in scores:
            return scores[key]
        row = {"check": check, "shape": shape.name, "tried": dict(switches)}
        if not guard.allows(shape.name, check):
            row["skipped"] = "time guard"
        else:
            try:
                row.update(guard.run(shape.name, check, lambda: measure(shape, switches, **kwargs)))
            except Exception as e:  # noqa: BLE001 - one failing case (a kernel, memory) must not end the check
                row["error"] = _one_line(e)
        rows.append(row)
        emit(row)
        scores[key] = row.get("sequences_per_second")
        return scores[key]

    for shape in plan.shapes:
        case("headline", shape, dict(shape.switches), baseline=plan.baseline, steps=plan.steps,
             warmup_steps=plan.warmup_steps)
    search = {"baseline": "none", "steps": plan.search_steps, "warmup_steps": plan.search_warmup_steps}
    for shape in plan.shapes:
        best, best_score = search_switches(dict(shape.switches), plan.search_axes,
                                           lambda switches, shape=shape: case("search", shape, switches, **search))
        headline = scores[(shape.name, tuple(sorted(shape.switches)))]
        row = {"check": "best", "shape": shape.name, "tried": best, "sequences_per_second": best_score,
               "over_headline": best_score / headline if best_score and headline else None,
               "measured": sum(1 for r in rows if r["shape"] == shape.name and "step_time_median_s" in r)}
        rows.append(row)
        emit(row)
    return rows


def search_switches(start: dict[str, Any], axes, score: Callable[[dict], float | None]) -> tuple[dict, float | None]:
    """Greedy search: each axis in turn, each of its values against the best so far; higher score wins.

    `score` returns None for a case that failed or was not run; such a case never wins. Returns the best
    switch set found and its score (None if nothing scored).
    """
    best, best_score = dict(start), score(dict(start))
    tried = [best]
    for path, values in axes:
        for value in values:
            candidate = {**best, path: value}
            if candidate in tried:  # the best so far, or a set already scored on the way
                continue
            tried.append(candidate)
            candidate_score = score(candidate)
            if candidate_score is not None and (best_score is None or candidate_score > best_score):
                best, best_score = candidate, candidate_score
    return best, best_score


_SHORT = {"model.attention_impl": "attention", "model.scan_layers": "scan", "model.remat_policy": "remat"}


def switch_text(switches: dict) -> str:
    return ", ".join(f"{_SHORT.get(k, k)}={'dots' if v == 'dots_with_no_batch_dims_saveable' else v}"
                     for k, v in switches.items())


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def format_table(rows: list[dict]) -> str:
    """A markdown table of the rows: figures, or why a case has none; the HF baseline beside the headline."""
    header = ("| check | shape | switches | compile s | step ms | seq/s | MFU | HF seq/s | HF MFU | ours / HF |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for row in rows:
        cells = [row["check"], row["shape"], switch_text(row["tried"])]
        if "error" in row or "skipped" in row:
            cells += [f"{'error: ' + row['error'] if 'error' in row else 'skipped: ' + row['skipped']}"] + [""] * 6
        elif row["check"] == "best":
            ratio = "no headline figures" if row["over_headline"] is None else f"{row['over_headline']:.2f}x the headline"
            cells += ["", "", _number(row["sequences_per_second"], ",.1f"), "", "", "", f"{ratio} ({row['measured']} measured)"]
        else:
            cells += [_number(row["compile_seconds"], ".1f"), _number(row["step_time_median_s"], ",.1f", 1e3),
                      _number(row["sequences_per_second"], ",.1f"), percent(row["mfu"]),
                      _number(row.get("baseline_sequences_per_second"), ",.1f"), percent(row.get("baseline_mfu")),
                      _number(row.get("ours_over_baseline"), ".2f") + ("x" if "ours_over_baseline" in row else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def progress_line(row: dict) -> str:
    """One line for a row as it ends: its figures against HF, its error, or why it was skipped."""
    what = f"[{row['check']}] {row['shape']} {switch_text(row['tried'])}: "
    if "error" in row:
        return what + "error: " + row["error"]
    if "skipped" in row:
        return what + "skipped (" + row["skipped"] + ")"
    if row["check"] == "best":
        return what + f"best found, {_number(row['sequences_per_second'], ',.1f')} seq/s"
    line = what + (f"compile {row['compile_seconds']:.1f} s, step {row['step_time_median_s'] * 1e3:,.1f} ms, "
                   f"{row['sequences_per_second']:,.1f} seq/s, MFU {percent(row['mfu'])}")
    if "baseline_sequences_per_second" in row:
        line += (f"; HF PyTorch {row['baseline_sequences_per_second']:,.1f} seq/s, MFU "
                 f"{percent(row['baseline_mfu'])}, ours / HF {row['ours_over_baseline']:.2f}x")
    return line
