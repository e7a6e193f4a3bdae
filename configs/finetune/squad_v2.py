"""SQuAD v2.0: spans or no answer ([CLS] wins by the null threshold). Exact match and F1.

  python -m bert_jax.finetune --config=configs/finetune/squad_v2.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/squad_v2 [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "squad_v2.0"
    config.data.max_seq_length = 384
    config.train.learning_rate = 3e-05
    config.train.num_train_epochs = 2.0
    config.train.eval_batch_size = 32
    return config
