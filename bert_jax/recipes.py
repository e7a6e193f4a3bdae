"""The published recipes as settings on top of a config: ALBERT, RoBERTa, SpanBERT, ELECTRA, ModernBERT.

Each takes a config (usually `config.default_config()`) and sets what the paper changed; the configs/*.py
files add the sizes. `bert_jax.config` re-exports them under their released names (`config.roberta_recipe`).
"""

from __future__ import annotations

import ml_collections


def albert_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ALBERT's settings (Lan et al. 2020) on top of `config`; the albert_* files add the sizes.

    Sentence-order prediction, n-gram masking (n <= 3) with static masks (dupe factor 40 as in ALBERT's
    data script), 128-wide factorized embeddings, all layers sharing one set of weights, tanh GELU, no
    dropout (ALBERT v2), a 30,000-piece vocabulary, sequences of 512, and LAMB at 1.76e-3 with batch 4096
    for 125k steps.
    """
    config.model.update({"vocab_size": 30000, "embedding_size": 128, "num_hidden_groups": 1,
                         "hidden_act": "gelu_tanh", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    config.objective = "mlm_sop"
    config.masking.update({"kind": "ngram", "max_ngram": 3, "dynamic": False, "dupe_factor": 40,
                           "max_predictions_per_seq": 20})
    config.data.update({"tokenizer_vocab_size": 30000, "max_seq_length": 512})
    # LAMB as google-research/albert's optimization.py builds it (weight decay 0.01, betas 0.9/0.999, eps 1e-6).
    config.train.update({"global_batch_size": 4096, "num_train_steps": 125_000, "learning_rate": 1.76e-3,
                         "warmup_steps": 3125, "optimizer": "lamb", "weight_decay": 0.01, "adam_b1": 0.9,
                         "adam_b2": 0.999, "adam_eps": 1e-6})
    return config


def roberta_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """RoBERTa's settings (Liu et al. 2019) on top of `config`; the roberta_* files add the sizes.

    MLM only (no NSP, no pooler or pair head), dynamic masking, FULL-SENTENCES packing to 512 tokens,
    a 50,265-piece vocabulary, 514 positions, one segment type, batch 8k, Adam beta2 0.98 and eps 1e-6.
    """
    config.model.update({"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1,
                         "layer_norm_eps": 1e-5})
    config.objective = "mlm"
    config.masking.update({"dynamic": True, "max_predictions_per_seq": 80})  # 15% of 512, rounded up
    config.data.update({"instance_format": "full_sentences", "max_seq_length": 512, "tokenizer_vocab_size": 50265})
    config.train.update({"global_batch_size": 8192, "num_train_steps": 500_000, "adam_b2": 0.98, "adam_eps": 1e-6})
    return config


def spanbert_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """SpanBERT's settings (Joshi et al. 2020, facebookresearch/SpanBERT) on top of `config`; the spanbert_*
    files add the sizes.

    MLM + the span-boundary objective with equal weights, no NSP (single segments of up to 512 tokens, as
    the paper's best setting), dynamic span masking (span lengths ~ Geometric(0.2) clipped at 10 complete
    words, 15% of the tokens, 80/10/10), a 15-row span-position table 200 wide, batch 256 for 2.4M steps,
    peak learning rate 1e-4 with 10k warmup steps and Adam eps 1e-8 (their README's command). SpanBERT
    replaces a whole span with one action (all [MASK], all random or all kept); here each token draws its own.
    """
    config.objective = "mlm_sbo"
    config.model.update({"sbo_max_span_positions": 15, "sbo_position_embedding_size": 200})
    config.masking.update({"kind": "span", "span_p": 0.2, "max_span_length": 10, "mask_rate": 0.15,
                           "dynamic": True, "max_predictions_per_seq": 77})  # 15% of 512, rounded
    config.data.update({"instance_format": "sentence_pairs", "max_seq_length": 512, "short_seq_prob": 0.0,
                        "pack_sequences": False})
    config.train.update({"global_batch_size": 256, "num_train_steps": 2_400_000, "learning_rate": 1e-4,
                         "warmup_steps": 10_000, "adam_eps": 1e-8, "weight_decay": 0.01, "max_grad_norm": 1.0})
    return config


def electra_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ELECTRA's settings (Clark et al. 2020, google-research/electra) on top of `config`; the electra_* files
    add the sizes and the generator fraction.

    Replaced-token detection with lambda = 50, single segments (full sentences, no NSP), dynamic masking of
    15% of the tokens with 85% of them [MASK] and 15% left as they are (no random tokens: the generator
    supplies the replacements), max_predictions_per_seq = int((0.15 + 0.005) * max_seq_length) as in its
    configure_pretraining.py, AdamW with eps 1e-6 and weight decay 0.01, 10k warmup steps.
    """
    config.objective = "electra"
    config.electra.rtd_weight = 50.0
    config.masking.update({"mask_rate": 0.15, "mask_token_fraction": 0.85, "random_token_fraction": 0.0,
                           "dynamic": True, "kind": "token",
                           "max_predictions_per_seq": int((0.15 + 0.005) * config.data.max_seq_length)})
    config.data.update({"instance_format": "full_sentences", "pack_sequences": False})
    config.train.update({"warmup_steps": 10_000, "weight_decay": 0.01, "adam_eps": 1e-6})
    return config


def modernbert_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ModernBERT's settings (Warner et al. 2024, answerdotai/ModernBERT) on top of `config`; the modernbert_*
    files add the sizes and the learning rate.

    The block: pre-norm LayerNorm (eps 1e-5) with the embedding norm serving as layer 0's attention norm and
    a final norm, GeGLU, rotary positions (base 160,000 in the global layers, 10,000 in the local ones),
    local attention over a 128-token window in all but every third layer, no biases but the MLM head's
    vocabulary bias, tied embeddings, no segment table, no dropout, 8,192 positions, a 50,368-row vocabulary
    (a multiple of 64). Training: MLM only at a 30% masking rate (80/10/10) over full rows of 1,024 tokens,
    batch 4,608 rows (4.7M tokens), StableAdamW (beta2 0.98, eps 1e-6, weight decay 1e-5) on a
    warmup-stable-decay schedule whose 1 - sqrt decay takes the last 50B tokens (10,600 steps). The paper's
    1,024-token phase ran the global layers at RoPE base 10,000 before its 8,192-token extension raised it.
    Exports to transformers' ModernBertForMaskedLM (`bert_jax/hf/modernbert_names.py`).
    """
    config.objective = "mlm"
    config.model.update({
        "vocab_size": 50368, "max_position_embeddings": 8192, "type_vocab_size": 0, "layer_norm_eps": 1e-5,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "norm_placement": "pre", "norm_kind": "layernorm", "final_norm": True, "embedding_norm": True,
        "ffn_activation": "geglu", "position_encoding": "rotary", "rope_theta": 160_000.0,
        "local_rope_theta": 10_000.0, "use_bias": False, "local_attention_window": 128,
        "global_attention_every_n_layers": 3, "tie_word_embeddings": True})
    config.data.update({"instance_format": "full_sentences", "max_seq_length": 1024, "pack_sequences": False,
                        "tokenizer_vocab_size": 50368})
    config.masking.update({"mask_rate": 0.3, "mask_token_fraction": 0.8, "random_token_fraction": 0.1,
                           "dynamic": True, "kind": "token",
                           "max_predictions_per_seq": round(0.3 * config.data.max_seq_length)})
    config.train.update({"global_batch_size": 4608, "num_train_steps": 360_000, "optimizer": "stable_adamw",
                         "adam_b2": 0.98, "adam_eps": 1e-6, "weight_decay": 1e-5, "schedule": "wsd",
                         "decay_shape": "1-sqrt", "decay_steps": 10_600})
    return config
