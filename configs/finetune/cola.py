"""CoLA (GLUE): is the sentence grammatical? Matthews correlation.

  python -m bert_jax.finetune --config=configs/finetune/cola.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/cola [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "cola"
    return config
