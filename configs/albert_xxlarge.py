"""ALBERT-xxLarge: 12 layers of width 4096 (64 heads) sharing one set of weights, 128-wide factorized embeddings.

The ALBERT recipe: sentence-order prediction instead of NSP, n-gram masking (n <= 3, P(n) ~ 1/n) with
static masks as in ALBERT's precomputed data, tanh-approximated GELU, no dropout (ALBERT v2), a
30,000-piece SentencePiece vocabulary, batch 4096 with LAMB in the paper (AdamW here).
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.vocab_size = 30000
    config.model.embedding_size = 128
    config.model.hidden_size = 4096
    config.model.num_hidden_layers = 12
    config.model.num_attention_heads = 64
    config.model.intermediate_size = 16384
    config.model.num_hidden_groups = 1
    config.model.hidden_act = "gelu_tanh"
    config.model.hidden_dropout_prob = 0.0
    config.model.attention_probs_dropout_prob = 0.0
    config.objective = "mlm_sop"
    config.masking.kind = "ngram"
    config.masking.max_ngram = 3
    config.masking.dynamic = False
    config.masking.dupe_factor = 40
    config.data.tokenizer_vocab_size = 30000
    config.data.max_seq_length = 512
    config.masking.max_predictions_per_seq = 20
    config.train.global_batch_size = 4096
    config.train.num_train_steps = 125_000
    config.train.learning_rate = 1.76e-3
    config.train.warmup_steps = 3125
    return config
