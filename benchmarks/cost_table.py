"""How cost grows: step time and peak memory against sequence length and model size, each beside the FLOP and
memory models' predictions, then padded against packed rows of real text.

    python benchmarks/cost_table.py [--sizes=tiny,mini,small,base] [--seq_lens=128,256,512] [--batch_size=8] \
        [--reference=mini@128] [--packing_cells=mini@128,mini@512,base@128] [--corpus=TEXT] \
        [--out=cost.jsonl] [--markdown=cost.md] [--dry_run]

Every cell runs in a fresh process of this script (`--cell`), so its peak RSS is its own: the real compiled
train step timed for at least --min_steps steps and --min_seconds seconds after --warmup_steps. The models,
the reference rate and the memory formula are in `bert_jax/tools/cost_model.py`. The packing rows come from
the project's pipeline on real text (`--corpus`, default the embedded stdlib-docstring corpus), built and
tokenized once in --workdir. --dry_run: bert_tiny at 32 and 64 tokens, one timed step, to check the wiring.
"""

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from absl import flags, logging

from bert_jax import cli
from bert_jax import config as config_lib
from bert_jax.runtime import atomic, reporting
from bert_jax.tools import cost_model

_CELL_TIMEOUT_S = 1200  # a cell that takes longer is stuck (bert_base@512 x 8 takes ~2 minutes on 2 cores)
_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
_SIZES = flags.DEFINE_list("sizes", ["tiny", "mini", "small", "base"], "Model sizes: configs/bert_<size>.py.")
_SEQ_LENS = flags.DEFINE_list("seq_lens", ["128", "256", "512"], "Sequence lengths of the grid.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Rows per step, every cell.")
_REFERENCE = flags.DEFINE_string("reference", "mini@128", "The cell whose FLOP/s predicts every step time.")
_PACKING_CELLS = flags.DEFINE_list("packing_cells", ["mini@128", "mini@512", "base@128"],
                                   "SIZE@SEQ cells timed padded and packed on real text (empty: none).")
_PACKING_BATCHES = flags.DEFINE_integer("packing_batches", 8, "Pipeline batches drawn per packing cell, used in turn.")
_CORPUS = flags.DEFINE_string("corpus", "", "Real text for the packing rows (empty: the embedded default corpus).")
_WORKDIR = flags.DEFINE_string("workdir", os.path.join(tempfile.gettempdir(), "bert_jax_cost_table"),
                               "Where the packing rows' corpus and tokenizer are built once and reused.")
_MIN_STEPS = flags.DEFINE_integer("min_steps", 3, "Timed steps per cell, at least.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 3.0, "Seconds of timed steps per cell, at least.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 30, "Timed steps per cell, at most.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 1, "Untimed steps after compiling.")
_OUT = flags.DEFINE_string("out", None, "Write one JSON line per cell here.")
_MARKDOWN = flags.DEFINE_string("markdown", None, "Also write the markdown tables here.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "bert_tiny at 32 and 64 tokens, one timed step: checks the wiring.")
_CELL = flags.DEFINE_string("cell", None, "Internal: run the one cell this JSON describes and print its JSON.")


def _config_path(size: str) -> str:
    path = os.path.join(_CONFIGS, f"bert_{size}.py")
    if not os.path.exists(path):
        raise config_lib.InputError(f"no config configs/bert_{size}.py for size {size!r}; a size names a "
                                    "configs/bert_<size>.py, e.g. tiny, mini, small, base.")
    return path


def _config(spec: dict):
    return cost_model.load_config(_config_path(spec["size"]), spec["batch_size"], spec["seq_len"],
                                  spec.get("overrides"))


def _run_cell(spec: dict) -> dict:
    """In the child process: one cell of `spec['kind']`."""
    if spec["kind"] == "baseline":
        return cost_model.baseline_figures()
    config = _config(spec)
    if spec["kind"] == "prepare":
        return cost_model.prepare_text(config, spec["workdir"])
    tokenizer, batches = None, None
    if spec["kind"] == "packing":
        tokenizer, batches = cost_model.real_text_batches(config, spec["workdir"], spec["num_batches"])
    result = cost_model.measure_cell(config, steps=spec["min_steps"], warmup_steps=spec["warmup_steps"],
                                     min_seconds=spec["min_seconds"], max_steps=spec["max_steps"],
                                     host_batches=batches, tokenizer=tokenizer)
    return {**spec, **result, "cell": cost_model.cell_name(spec["size"], spec["seq_len"]),
            "pack_sequences": bool(config.data.pack_sequences),
            "max_instances_per_pack": config.data.max_instances_per_pack,
            "max_predictions_per_seq": config.masking.max_predictions_per_seq}


def _in_child(spec: dict) -> dict:
    """Runs `spec` in a fresh process of this script; its last stdout line is the JSON result."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--cell={json.dumps(spec)}"],
                              capture_output=True, text=True, check=False, timeout=_CELL_TIMEOUT_S)
        error = None if proc.returncode == 0 and proc.stdout.strip() else (
            proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}, no output"])[-1]
    except subprocess.TimeoutExpired:
        error = f"still running after {_CELL_TIMEOUT_S} s, stopped"
    if error:
        print(f"  {spec['kind']} {spec.get('size', '')}@{spec.get('seq_len', '')}: FAILED: {error}", flush=True)
        return {**spec, "error": error}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    step = f", step {1e3 * result['step_time_median_s']:,.0f} ms" if "step_time_median_s" in result else ""
    pack = " packed" if result.get("pack_sequences") else ""
    print(f"  {spec['kind']} {result.get('cell', '')}{pack}: done in {time.perf_counter() - start:.0f} s{step}",
          flush=True)
    return result


def _plan() -> tuple[list[str], list[int], str, list[str], dict]:
    """(sizes, seq_lens, reference, packing cells, timing) from the flags; --dry_run shrinks them."""
    timing = {"min_steps": _MIN_STEPS.value, "min_seconds": _MIN_SECONDS.value, "max_steps": _MAX_STEPS.value,
              "warmup_steps": _WARMUP_STEPS.value}
    if _CORPUS.value and _PACKING_CELLS.value:  # a wrong path fails now, not after the grid's minutes
        # lazy, as cost_model's: only the packing cells read text
        from bert_jax.data import corpus as corpus_lib

        corpus_lib.resolve_text_files(_CORPUS.value, "--corpus")
    if _BATCH_SIZE.value < 1:
        raise config_lib.InputError(f"--batch_size must be positive, got {_BATCH_SIZE.value}.")
    if _DRY_RUN.value:
        timing = {"min_steps": 1, "min_seconds": 0.0, "max_steps": 1, "warmup_steps": 0}
        return ["tiny"], [32, 64], "tiny@32", ["tiny@32", "tiny@64"], timing
    try:
        seq_lens = [int(s) for s in _SEQ_LENS.value]
    except ValueError as e:
        raise config_lib.InputError(f"--seq_lens must be integers, got {_SEQ_LENS.value}.") from e
    for size in [*_SIZES.value, *(cost_model.parse_cell(cell)[0] for cell in _PACKING_CELLS.value)]:
        _config_path(size)
    cost_model.parse_cell(_REFERENCE.value)
    grid = [cost_model.cell_name(size, seq) for size in _SIZES.value for seq in seq_lens]
    if _REFERENCE.value not in grid:
        raise config_lib.InputError(f"--reference={_REFERENCE.value} is not a cell of the grid {grid}; name one of them.")
    return _SIZES.value, seq_lens, _REFERENCE.value, _PACKING_CELLS.value, timing


def _packing_cells(cells: list[str], timing: dict) -> list[dict]:
    batch = _BATCH_SIZE.value
    results, prepared = [], set()
    for name in cells:
        size, seq_len = cost_model.parse_cell(name)
        config = _config({"size": size, "batch_size": batch, "seq_len": seq_len})
        predictions = cost_model.packing_max_predictions(config, seq_len)
        corpus_key = hashlib.sha256(os.path.abspath(_CORPUS.value).encode() if _CORPUS.value else b"").hexdigest()[:8]
        workdir = os.path.join(_WORKDIR.value, f"vocab{config.data.tokenizer_vocab_size}-{corpus_key}")
        common = {"size": size, "seq_len": seq_len, "batch_size": batch, "workdir": workdir}
        text = {"data.corpus": _CORPUS.value, "masking.max_predictions_per_seq": predictions}
        if workdir not in prepared:
            _in_child({"kind": "prepare", **common, "overrides": text})
            prepared.add(workdir)
        for pack in (False, True):
            results.append(_in_child({"kind": "packing", **common, **timing, "num_batches": _PACKING_BATCHES.value,
                                      "overrides": {**text, "data.pack_sequences": pack}}))
    return results


def _report(run: dict, grid: list[dict], packing: list[dict], reference: str, baseline: dict) -> str:
    ok_grid = [c for c in grid if "error" not in c]
    figures = cost_model.add_predictions(ok_grid, reference, baseline["peak_rss_bytes"])
    pairs = cost_model.pair_packing([c for c in packing if "error" not in c])
    text = [f"## How cost grows (batch {_BATCH_SIZE.value})", "", cost_model.header_markdown(run), "",
            (f"Reference {figures['reference_cell']}: {figures['reference_flops_per_second'] / 1e9:,.1f} GFLOP/s; "
             f"baseline process RSS {figures['baseline_rss_bytes'] / 2**20:,.0f} MiB."), "",
            cost_model.grid_markdown(ok_grid), ""]
    if pairs:
        corpus = _CORPUS.value or "embedded stdlib docstrings"
        text += [f"Padded vs packed rows of real text (corpus: {corpus}):", "", cost_model.packing_markdown(pairs), ""]
    failed = [c for c in grid + packing if "error" in c]
    text += [f"FAILED {c['kind']} {c.get('size')}@{c.get('seq_len')}: {c['error']}" for c in failed]
    return "\n".join(text)


def main(argv):
    cli.refuse_extra_arguments(argv)
    reporting.quiet_library_logs()
    try:
        if _CELL.value:
            print(json.dumps(_run_cell(json.loads(_CELL.value))))
            return
        sizes, seq_lens, reference, packing_cells, timing = _plan()
        run = {**cost_model.environment(shlex.join(["python", *sys.argv])), "batch_size": _BATCH_SIZE.value,
               "reference": reference, "corpus": _CORPUS.value or "embedded stdlib docstrings"}
        print("baseline process, grid cells, then packing cells, each in a fresh process:", flush=True)
        baseline = _in_child({"kind": "baseline"})
        if "error" in baseline:
            sys.exit(f"error: the baseline process failed: {baseline['error']}")
        grid = [_in_child({"kind": "grid", "size": size, "seq_len": seq, "batch_size": _BATCH_SIZE.value, **timing})
                for size in sizes for seq in seq_lens]
        packing = _packing_cells(packing_cells, timing)
        markdown = _report(run, grid, packing, reference, baseline)
    except config_lib.InputError as e:
        sys.exit(f"error: {e}")
    print(markdown)
    if _MARKDOWN.value:
        atomic.write_text(_MARKDOWN.value, markdown + "\n")
    if _OUT.value:
        atomic.write_text(_OUT.value, "".join(json.dumps(r) + "\n" for r in [run, baseline, *grid, *packing]))
    logging.info("done")


if __name__ == "__main__":
    cli.run_app(main, huge_pages=True)
