"""MNLI (GLUE): entailment / neutral / contradiction, dev matched and mismatched. Accuracy.

  python -m bert_jax.finetune --config=configs/finetune/mnli.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/mnli [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "mnli"
    return config
