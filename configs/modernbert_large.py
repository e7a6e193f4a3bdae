"""ModernBERT-large: 28 pre-norm GeGLU layers of width 1,024 (395M parameters, transformers'
ModernBertForMaskedLM with the same config has exactly as many), trained the ModernBERT way (Warner et al. 2024).

The block and the training recipe are `bert_jax.config.modernbert_recipe`; this file sets the sizes and the
paper's learning rate: 5e-4 after a warmup of 2B tokens (424 steps of 4,608 x 1,024 tokens). The paper
trained large at 5e-4 for 900B tokens, then restarted at 5e-5 for the remaining 800B when the loss
plateaued. `intermediate_size` is one half of the GLU: the `intermediate` kernel is 1,024 x 5,248.
Its GLUE average in the paper: 90.4.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.modernbert_recipe(config_lib.default_config())
    config.model.hidden_size = 1024
    config.model.num_hidden_layers = 28
    config.model.num_attention_heads = 16
    config.model.intermediate_size = 2624
    config.train.learning_rate = 5e-4
    config.train.warmup_steps = 424
    return config
