"""BERT-Large (24 layers, hidden 1024, 16 heads, 340M parameters): Devlin et al. 2019, phase 1 (seq 128)."""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.hidden_size = 1024
    config.model.num_hidden_layers = 24
    config.model.num_attention_heads = 16
    config.model.intermediate_size = 4096
    config.train.global_batch_size = 256
    config.train.num_train_steps = 1_000_000
    config.train.learning_rate = 1e-4
    config.train.warmup_steps = 10_000
    return config
