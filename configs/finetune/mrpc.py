"""MRPC (GLUE): are the two sentences paraphrases? F1 and accuracy.

  python -m bert_jax.finetune --config=configs/finetune/mrpc.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/mrpc [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "mrpc"
    return config
