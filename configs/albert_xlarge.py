"""ALBERT-xLarge: 24 layers of width 2048 sharing one set of weights (58.7M encoder parameters).

The ALBERT recipe (SOP, n-gram static masks, factorized embeddings, shared layers) is
`bert_jax.config.albert_recipe`; this file sets the sizes.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.albert_recipe(config_lib.default_config())
    config.model.hidden_size = 2048
    config.model.num_hidden_layers = 24
    config.model.num_attention_heads = 16
    config.model.intermediate_size = 8192
    return config
