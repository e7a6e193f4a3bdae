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

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, tokenizer, corpus cache.")
_INITIALIZE_DISTRIBUTED = cli.define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])
cli.refuse_empty("workdir")


def _pretrain():
    if _CONFIG.value.distill.recipe:
        raise InputError(f"the config sets distill.recipe={_CONFIG.value.distill.recipe!r}, a distillation run: "
                         "use python -m bert_jax.distill with the same flags.")
    _INITIALIZE_DISTRIBUTED()
    return loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def main(argv):
    print(json.dumps(cli.run(argv, _pretrain)))


if __name__ == "__main__":
    cli.run_app(main, huge_pages=True)
