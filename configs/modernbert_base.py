"""ModernBERT-base: 22 pre-norm GeGLU layers of width 768 (149M parameters, transformers' ModernBertForMaskedLM
with the same config has exactly as many), trained the ModernBERT way (Warner et al. 2024).

The block and the training recipe (rotary positions, local-global attention, no biases, 30% masking, full
rows of 1,024 tokens) are `bert_jax.config.modernbert_recipe`; this file sets the sizes and the paper's
learning rate: 8e-4 after a warmup of 3B tokens (636 steps of 4,608 x 1,024 tokens), 1.7T tokens in all.
`intermediate_size` is one half of the GLU (HF's convention): the `intermediate` kernel is 768 x 2,304.
Its GLUE average in the paper: 88.4. Continue pretraining the released checkpoint instead with
`python -m bert_jax.import_hf` (README).
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.modernbert_recipe(config_lib.default_config())
    config.model.hidden_size = 768
    config.model.num_hidden_layers = 22
    config.model.num_attention_heads = 12
    config.model.intermediate_size = 1152
    config.train.learning_rate = 8e-4
    config.train.warmup_steps = 636
    return config
