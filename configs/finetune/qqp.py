"""QQP (GLUE): are the two questions duplicates? F1 and accuracy.

  python -m bert_jax.finetune --config=configs/finetune/qqp.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/qqp [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "qqp"
    return config
