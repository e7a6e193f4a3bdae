"""BERT-Tiny (2 layers, hidden 128, 2 heads): the default job, a few minutes on a laptop CPU.

With no corpus given it pretrains on the docstrings of the Python standard library with a SentencePiece
vocabulary of 8,192 pieces trained on them; nothing is downloaded.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.vocab_size = 8192
    config.model.hidden_size = 128
    config.model.num_hidden_layers = 2
    config.model.num_attention_heads = 2
    config.model.intermediate_size = 512
    config.model.max_position_embeddings = 128
    config.data.tokenizer_vocab_size = 8192
    config.data.max_seq_length = 128
    config.train.global_batch_size = 32
    config.train.num_train_steps = 2000
    config.train.warmup_steps = 200
    config.train.learning_rate = 2e-3  # tiny encoders tolerate (and need) a high rate
    config.train.log_every_steps = 100
    config.train.eval_every_steps = 500
    config.checkpoint.every_steps = 500
    return config
