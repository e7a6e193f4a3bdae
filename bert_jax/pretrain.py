"""Pretrain a BERT-family encoder: python -m bert_jax.pretrain --config=configs/bert_tiny.py --workdir=DIR.

Only flag wiring lives here; the work is `bert_jax.pretraining.loop.train_and_evaluate`. Re-running the same
command resumes from the newest checkpoint in the workdir.
"""

import json

from absl import flags
from ml_collections import config_flags

from bert_jax import cli
from bert_jax.config import InputError
from bert_jax.pretraining import loop
from bert_jax.runtime import parallel

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, tokenizer, corpus cache.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for multi-process runs "
                                   "(default: $JAX_COORDINATOR_ADDRESS; TPU pods find it themselves).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes (default: $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (default: $JAX_PROCESS_ID).")
flags.mark_flags_as_required(["config", "workdir"])
cli.refuse_empty("workdir")


def _pretrain():
    if _CONFIG.value.distill.recipe:
        raise InputError(f"the config sets distill.recipe={_CONFIG.value.distill.recipe!r}, a distillation run: "
                         "use python -m bert_jax.distill with the same flags.")
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    return loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def main(argv):
    print(json.dumps(cli.run(argv, _pretrain)))


if __name__ == "__main__":
    cli.run_app(main)
