"""BERT-Base (12 layers, hidden 768, 12 heads, 110M parameters): Devlin et al. 2019, phase 1 (seq 128)."""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()  # the defaults are BERT-Base's hyper-parameters
    config.train.global_batch_size = 256
    config.train.num_train_steps = 1_000_000
    config.train.learning_rate = 1e-4
    config.train.warmup_steps = 10_000
    return config
