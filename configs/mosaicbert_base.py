"""MosaicBERT-Base (Portes et al. 2023): BERT-Base's post-LN encoder with ALiBi and a GeGLU feed-forward layer,
trained fast: 79.6 average GLUE after 1.13 hours on 8 A100s.

The block: post-LayerNorm as BERT, ALiBi attention biases instead of a position table (so rows longer than
the 128 tokens it trains on still work), GeGLU with an intermediate width of 3072, no attention dropout
(MosaicBERT runs FlashAttention). Training: 30% masking on 128-token rows, vocabulary 30528 (BERT's, padded
to a multiple of 64), decoupled AdamW (lr 5e-4, betas 0.9/0.98, eps 1e-6, weight decay 1e-5), batch 4096,
70k steps with 6% warmup and linear decay to 2% of the peak. Unpadding is `data.pack_sequences` here.
Difference: MosaicBERT's gate matrix has no bias; `use_bias` is one switch here, on as in BERT.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.objective = "mlm"
    config.data.instance_format = "full_sentences"
    config.model.update({
        "vocab_size": 30528, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "type_vocab_size": 2, "position_encoding": "alibi", "ffn_activation": "geglu",
        "attention_probs_dropout_prob": 0.0,
    })
    config.masking.mask_rate = 0.3
    config.data.max_seq_length = 128
    config.masking.max_predictions_per_seq = 39  # 30% of 128, rounded up
    config.train.update({
        "global_batch_size": 4096, "num_train_steps": 70_000, "learning_rate": 5e-4, "warmup_steps": 4200,
        "weight_decay": 1e-5, "adam_b2": 0.98, "min_learning_rate_ratio": 0.02,
    })
    return config
