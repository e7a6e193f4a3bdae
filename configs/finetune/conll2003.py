"""CoNLL-2003 NER: a tag per word on its first sub-token; conlleval entity F1.

  python -m bert_jax.finetune --config=configs/finetune/conll2003.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/conll2003 [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "conll2003"
    config.train.learning_rate = 5e-05
    config.train.num_train_epochs = 4.0
    return config
