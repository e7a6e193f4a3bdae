"""ELECTRA-Base (Clark et al. 2020): BERT-Base's shape as the discriminator (110M parameters) and a
generator 1/3 as wide (256 hidden, 4 heads, 1024 intermediate: the shape of the released
electra-base-generator), trained by replaced-token detection.

The ELECTRA recipe is `bert_jax.config.electra_recipe`; the sizes and training values are the paper's for
Base (Table 6 and the commented base settings of google-research/electra's configure_pretraining.py):
generator 1/3, sequences of 512, batch 256, learning rate 2e-4, 766k steps.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.electra_recipe(config_lib.default_config())
    config.model.update({"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072})
    config.electra.generator_hidden_fraction = 1 / 3
    config.data.max_seq_length = 512
    config.masking.max_predictions_per_seq = 79  # int((0.15 + 0.005) * 512)
    config.train.update({"global_batch_size": 256, "learning_rate": 2e-4, "num_train_steps": 766_000})
    return config
