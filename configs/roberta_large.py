"""RoBERTa-Large (Liu et al. 2019): 24 layers, hidden 1024, 16 heads; the RoBERTa recipe of roberta_base."""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.vocab_size = 50265
    config.model.hidden_size = 1024
    config.model.num_hidden_layers = 24
    config.model.num_attention_heads = 16
    config.model.intermediate_size = 4096
    config.model.max_position_embeddings = 514
    config.model.type_vocab_size = 1
    config.model.layer_norm_eps = 1e-5
    config.objective = "mlm"
    config.masking.dynamic = True
    config.masking.max_predictions_per_seq = 80
    config.data.instance_format = "full_sentences"
    config.data.max_seq_length = 512
    config.data.tokenizer_vocab_size = 50265
    config.train.global_batch_size = 8192
    config.train.num_train_steps = 500_000
    config.train.learning_rate = 4e-4
    config.train.warmup_steps = 30_000
    config.train.adam_b2 = 0.98
    config.train.adam_eps = 1e-6
    return config
