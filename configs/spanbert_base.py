"""SpanBERT-Base: BERT-Base's encoder (110M parameters) trained the SpanBERT way (Joshi et al. 2020).

The SpanBERT recipe (MLM + span-boundary objective, span masking of geometric lengths clipped at 10 words,
single segments of 512 tokens, no NSP) is `bert_jax.config.spanbert_recipe`; this file sets the sizes.
The paper trains with a cased WordPiece vocabulary of 28,996 pieces; here the run's own tokenizer decides.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.spanbert_recipe(config_lib.default_config())
    config.model.hidden_size = 768
    config.model.num_hidden_layers = 12
    config.model.num_attention_heads = 12
    config.model.intermediate_size = 3072
    return config
