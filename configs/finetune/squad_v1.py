"""SQuAD v1.1: answer spans in 384-token windows (stride 128). Exact match and F1.

  python -m bert_jax.finetune --config=configs/finetune/squad_v1.py --config.init_checkpoint=EXPORT \
      --workdir=/tmp/squad_v1 [--config.data.data_dir=DIR_WITH_THE_OFFICIAL_FILES]
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "squad_v1.1"
    config.data.max_seq_length = 384
    config.train.learning_rate = 3e-05
    config.train.num_train_epochs = 2.0
    config.train.eval_batch_size = 32
    return config
