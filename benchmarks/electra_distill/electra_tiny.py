"""(b) ELECTRA whose discriminator has the BERT-Tiny shape of mlm_tiny.py (2 layers, hidden 128, 2 heads,
vocab 8192): `bert_jax.config.electra_recipe` (replaced-token detection, lambda 50, full sentences,
85% [MASK] / 15% kept, max_predictions_per_seq 19) with generator_hidden_fraction 0.25, i.e. a 2-layer
generator of hidden 32 with one head, sharing the embeddings. Same optimiser and schedule shape as
mlm_tiny.py (lr 2e-3, warmup 10%, linear decay); the recipe's 10k warmup is overridden.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.update({"vocab_size": 8192, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 512, "max_position_embeddings": 128})
    config.data.update({"tokenizer_vocab_size": 8192, "max_seq_length": 128})
    config = config_lib.electra_recipe(config)
    config.electra.generator_hidden_fraction = 0.25
    config.train.update({"global_batch_size": 32, "num_train_steps": 2000, "warmup_steps": 200,
                         "learning_rate": 2e-3, "log_every_steps": 100, "eval_every_steps": 500})
    config.checkpoint.every_steps = 500
    return config
