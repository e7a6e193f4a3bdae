"""SWAG: pick the ending of four that follows (one score per choice). Accuracy.

  python -m bert_jax.finetune --config=configs/finetune/swag.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/swag [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "swag"
    config.train.global_batch_size = 16
    config.train.eval_batch_size = 16
    return config
