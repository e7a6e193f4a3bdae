"""Markdown tables from benchmark results: python -m bert_jax.benchmark_report results.jsonl [more.jsonl ...].

Each line of the files is the JSON object `bert_jax.benchmark --append_to=FILE` wrote. Rows are grouped
by (config, batch, sequence length, device) so that each optimisation switch can be read against the run
beside it; a switch column shows only values that differ from the defaults of `bert_jax/config.py`.
Only reading and formatting live here: what is measured is in `bert_jax.tools.benchmarking`.
"""

import json
import sys

from absl import app

from bert_jax import cli
from bert_jax import config as config_lib
from bert_jax.tools import benchmarking


def read_results(paths: list[str]) -> list[dict]:
    """The JSON objects of every non-empty line of `paths`, in order; a bad line names file and line."""
    rows = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise config_lib.InputError(f"cannot read {path}: {e.strerror}; give a file written by "
                                        "`python -m bert_jax.benchmark --append_to=FILE`.") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise config_lib.InputError(f"{path} line {number} is not a JSON object; each line must be one "
                                            "result of `python -m bert_jax.benchmark --append_to=FILE`.") from None
    if not rows:
        raise config_lib.InputError(f"no results in {', '.join(paths)}; run `python -m bert_jax.benchmark "
                                    "--append_to=FILE ...` first.")
    return rows


def _changed_switches(row: dict) -> str:
    defaults = benchmarking.switches(config_lib.default_config())
    changed = [f"{path.split('.')[1]}={value}" for path, value in row.get("switches", {}).items()
               if value != defaults.get(path) and path != "model.dtype"]
    if row.get("xla_flag_sets"):
        changed.append(f"xla: {row['xla_flag_sets']}")
    if row.get("platform") == "cpu" and "hugetlb=1" not in row.get("glibc_tunables", "glibc.malloc.hugetlb=1"):
        changed.append("glibc's default malloc (no huge pages)")
    return ", ".join(changed) or "defaults"


def _gib(value) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown_table(rows: list[dict]) -> str:
    """One markdown table: a row per result (and one per baseline it ran against)."""
    lines = [("| config | batch x seq | device | dtype | run | compile s | step ms (median / p90) | sequences/s "
              "| tokens/s | TFLOP/s | MFU | peak GiB | ours / baseline |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        where = f"{row['config']} | {row['batch_size']} x {row['seq_len']} | {row['num_devices']} x {row['device_kind']}"
        lines.append(
            f"| {where} | {row['dtype']} | bert_jax ({_changed_switches(row)}) | {row['compile_seconds']:.1f} "
            f"| {1e3 * row['step_time_median_s']:,.1f} / {1e3 * row['step_time_p90_s']:,.1f} "
            f"| {row['sequences_per_second']:,.1f} | {row['tokens_per_second']:,.0f} | {row['achieved_tflops']:.3f} "
            f"| {_percent(row['mfu'])} | {_gib(row['peak_memory_bytes'])} | |")
        if row.get("baseline"):
            lines.append(
                f"| {where} | {row['baseline_dtype']} | {row['baseline']} | "
                f"{row.get('baseline_compile_seconds', row.get('baseline_first_step_seconds', 0.0)):.1f} "
                f"| {1e3 * row['baseline_step_time_median_s']:,.1f} / {1e3 * row['baseline_step_time_p90_s']:,.1f} "
                f"| {row['baseline_sequences_per_second']:,.1f} | {row['baseline_tokens_per_second']:,.0f} "
                f"| {row['baseline_achieved_tflops']:.3f} | {_percent(row['baseline_mfu'])} "
                f"| {_gib(row['baseline_peak_memory_bytes'])} | **{row['ours_over_baseline']:.2f}x** |")
    return "\n".join(lines)


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("usage: python -m bert_jax.benchmark_report RESULTS.jsonl [MORE.jsonl ...]")
    try:
        print(markdown_table(read_results(argv[1:])))
    except config_lib.InputError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli.run_app(main)
