"""ALBERT-xxLarge: 12 layers of width 4096, 64 heads, sharing one set of weights (223M encoder parameters).

The ALBERT recipe (SOP, n-gram static masks, factorized embeddings, shared layers) is
`bert_jax.config.albert_recipe`; this file sets the sizes.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.albert_recipe(config_lib.default_config())
    config.model.hidden_size = 4096
    config.model.num_hidden_layers = 12
    config.model.num_attention_heads = 64
    config.model.intermediate_size = 16384
    return config
