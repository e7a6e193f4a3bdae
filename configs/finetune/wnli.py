"""WNLI (GLUE): Winograd entailment (BERT predicts the majority class here). Accuracy.

  python -m bert_jax.finetune --config=configs/finetune/wnli.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/wnli [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "wnli"
    return config
