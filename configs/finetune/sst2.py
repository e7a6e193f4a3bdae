"""SST-2 (GLUE): sentence sentiment, positive or negative. Accuracy.

  python -m bert_jax.finetune --config=configs/finetune/sst2.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/sst2 [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "sst2"
    return config
