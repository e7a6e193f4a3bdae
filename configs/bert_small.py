"""BERT-Small (4 layers, hidden 512, 8 heads) from Turc et al. 2019's compact BERTs."""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.hidden_size = 512
    config.model.num_hidden_layers = 4
    config.model.num_attention_heads = 8
    config.model.intermediate_size = 2048
    config.train.global_batch_size = 128
    config.train.learning_rate = 5e-4
    return config
