"""Run the GPU check's benchmark cases in one process: python -m bert_jax.benchmark_sweep [--dry_run].

Times bert_base@128 (batch 256) and packed bert_large@512 (batch 32) in bf16 with cuDNN attention against
HF PyTorch, then searches the attention kernel, layer scan and remat switches of each, until
`--stop_after_s`; prints one line per case as it ends, writes each as a JSON line to `--out`, and prints
the table at the end (also written to `--table_out`). `--dry_run`: the same cases at bert_tiny sizes with
`dot_product` attention, for a CPU. What is run, and how, is in `bert_jax.tools.sweep`; benchmarks/gpu_check.sh
wraps this for the device machine.
"""

import json

import jax
from absl import flags

from bert_jax import cli
from bert_jax.tools import sweep

_DRY_RUN = flags.DEFINE_bool("dry_run", False, "bert_tiny sizes, few steps, dot_product attention: seconds on a CPU.")
_STOP_AFTER_S = flags.DEFINE_float("stop_after_s", 420.0, "Start no case after this many seconds.")
_OUT = flags.DEFINE_string("out", None, "Append one JSON line per case (and per search result) to this file.")
_TABLE_OUT = flags.DEFINE_string("table_out", None, "Also write the final markdown table to this file.")


def main(argv):
    def work():
        plan = sweep.gpu_check_plan(_DRY_RUN.value)
        print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}; "
              f"{len(plan.shapes)} headline cases, then the switch search; no new case after "
              f"{_STOP_AFTER_S.value:.0f} s", flush=True)

        def emit(row: dict) -> None:
            print(sweep.progress_line(row), flush=True)
            if _OUT.value:
                with open(_OUT.value, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")

        table = sweep.format_table(sweep.run_plan(plan, stop_after_s=_STOP_AFTER_S.value, emit=emit))
        print(table)
        if _TABLE_OUT.value:
            with open(_TABLE_OUT.value, "w", encoding="utf-8") as f:
                f.write(table + "\n")

    cli.run(argv, work)


if __name__ == "__main__":
    cli.run_app(main)
