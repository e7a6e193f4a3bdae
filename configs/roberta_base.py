"""RoBERTa-Base: BERT-Base's encoder (125M parameters) trained the RoBERTa way.

The RoBERTa recipe (MLM only, dynamic masking, FULL-SENTENCES packing, 50k vocabulary, 514 positions,
one segment type, Adam beta2 0.98) is `bert_jax.config.roberta_recipe`; this file sets the sizes and
the paper's peak learning rate and warmup for this size.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.roberta_recipe(config_lib.default_config())
    config.model.hidden_size = 768
    config.model.num_hidden_layers = 12
    config.model.num_attention_heads = 12
    config.model.intermediate_size = 3072
    config.train.learning_rate = 0.0006
    config.train.warmup_steps = 24_000
    return config
