"""RTE (GLUE): textual entailment, a small set: more epochs help. Accuracy.

  python -m bert_jax.finetune --config=configs/finetune/rte.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/rte [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "rte"
    config.train.num_train_epochs = 4.0
    return config
