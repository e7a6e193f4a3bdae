"""Distil a teacher into a smaller student: python -m bert_jax.distill --config=configs/distill/distilbert_base.py
--config.teacher_checkpoint=TEACHER --workdir=DIR.

TEACHER is a pretraining workdir, a params-only export or a transformers directory. The student trains on
the pretraining data pipeline with the pretraining loop (mesh, checkpoints, preemption, exact resume);
only flag wiring lives here. Re-running the same command resumes from the newest checkpoint in the workdir.
"""

import json

from absl import flags
from ml_collections import config_flags

from bert_jax import cli
from bert_jax import config as config_lib
from bert_jax.hf import convert as hf_convert
from bert_jax.pretraining import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a distillation config (configs/distill/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, the teacher's copy, corpus cache.")
_INITIALIZE_DISTRIBUTED = cli.define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])
cli.refuse_empty("workdir")


def _distill():
    config = _CONFIG.value
    if not config.distill.recipe:
        raise config_lib.InputError("the config sets no distill.recipe; use a distillation config "
                                    "(configs/distill/distilbert_base.py or tinybert_4l.py), or python -m "
                                    "bert_jax.pretrain for pretraining without a teacher.")
    _INITIALIZE_DISTRIBUTED()
    return loop.train_and_evaluate(config, _WORKDIR.value, import_hf_directory=hf_convert.import_hf_directory)


def main(argv):
    print(json.dumps(cli.run(argv, _distill)))


if __name__ == "__main__":
    cli.run_app(main, huge_pages=True)
