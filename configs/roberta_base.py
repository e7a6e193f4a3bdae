"""RoBERTa-Base (Liu et al. 2019): BERT-Base's encoder trained with MLM only, dynamic masking and
FULL-SENTENCES packing (no NSP, no pooler or pair head), a 50,265-piece vocabulary, 514 positions, one
segment type, large batches (8k sequences of 512) and Adam beta2 0.98 with eps 1e-6.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.vocab_size = 50265
    config.model.max_position_embeddings = 514
    config.model.type_vocab_size = 1
    config.model.layer_norm_eps = 1e-5
    config.objective = "mlm"
    config.masking.dynamic = True
    config.masking.max_predictions_per_seq = 80  # 15% of 512 tokens, rounded up
    config.data.instance_format = "full_sentences"
    config.data.max_seq_length = 512
    config.data.tokenizer_vocab_size = 50265
    config.train.global_batch_size = 8192
    config.train.num_train_steps = 500_000
    config.train.learning_rate = 6e-4
    config.train.warmup_steps = 24_000
    config.train.adam_b2 = 0.98
    config.train.adam_eps = 1e-6
    return config
