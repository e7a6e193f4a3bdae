"""NeoBERT (Le Breton et al. 2025): a deep, narrow pre-norm encoder, 28 layers of width 768, about 250M parameters.

The block: pre-RMSNorm (eps 1e-6) with no embedding norm and a final norm, SwiGLU feed-forward layers, rotary
positions (theta 10000), no biases, an untied output layer; BERT's uncased WordPiece vocabulary (30522) and
no segment ids. Training: 20% masking, AdamW (lr 6e-4, weight decay 0.1, beta2 0.95), 2M-token batches,
cosine decay to 10% after warmup; 1,024-token rows, later extended to 4,096. Headline: GLUE 89.0.

Differences: NeoBERT's SwiGLU hidden width is 2/3 of 3072 rounded to a multiple of 8 (2048), which is the
`intermediate_size` here; its output layer is a bare linear map, where this model keeps BERT's MLM head
transform (dense + norm, 0.6M parameters) in front of it; its cosine decay is `decay_shape='cosine'` over the
whole run after warmup.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.objective = "mlm"
    config.data.instance_format = "full_sentences"
    config.model.update({
        "hidden_size": 768, "num_hidden_layers": 28, "num_attention_heads": 12, "intermediate_size": 2048,
        "max_position_embeddings": 4096, "type_vocab_size": 0, "layer_norm_eps": 1e-6,
        "norm_placement": "pre", "norm_kind": "rmsnorm", "embedding_norm": False, "final_norm": True,
        "ffn_activation": "swiglu", "position_encoding": "rotary", "rope_theta": 10000.0, "use_bias": False,
        "tie_word_embeddings": False, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    })
    config.masking.mask_rate = 0.2
    config.data.max_seq_length = 1024
    config.masking.max_predictions_per_seq = 205  # 20% of 1,024
    config.train.update({
        "global_batch_size": 2048, "num_train_steps": 1_000_000, "learning_rate": 6e-4, "warmup_steps": 10_000,
        "weight_decay": 0.1, "adam_b2": 0.95, "adam_eps": 1e-8, "schedule": "wsd", "decay_shape": "cosine",
        "decay_steps": 990_000, "min_learning_rate_ratio": 0.1,
    })
    return config
