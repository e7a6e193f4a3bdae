"""STS-B (GLUE): sentence similarity score 0-5, a regression. Pearson and Spearman.

  python -m bert_jax.finetune --config=configs/finetune/stsb.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/stsb [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "stsb"
    return config
