"""XLM-R-Base style multilingual MLM (Conneau et al. 2020): RoBERTa-Base trained on many languages at once.

Give the text as one folder per language (`--config.data.corpus=/data/cc100` holding en/, ru/, ja/, ...;
`config.data.language_folders` is on) or as tagged entries (`--config.data.corpus=en:/d/en,ru:/d/ru
--config.data.language_folders=false`). Languages are sampled with q_i proportional to p_i^0.3 as in XLM-R
(M-BERT's smoothing is 0.7, the schema's default), and the 250k-piece SentencePiece model trained here learns
from text resampled with alpha 0.3, with byte fallback. The RoBERTa recipe is `bert_jax.config.roberta_recipe`.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.roberta_recipe(config_lib.default_config())
    config.model.update({"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072, "vocab_size": 250_002})
    config.data.update({"tokenizer_vocab_size": 250_000, "language_folders": True, "language_alpha": 0.3,
                        "tokenizer_alpha": 0.3})
    config.train.learning_rate = 0.0006
    config.train.warmup_steps = 24_000
    return config
