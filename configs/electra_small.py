"""ELECTRA-Small (Clark et al. 2020): a 12-layer, 256-wide discriminator (13.5M parameters, "14M") with
128-wide embeddings, trained by replaced-token detection against a generator 1/4 as wide.

The ELECTRA recipe (objective 'electra', lambda = 50, single segments, 85% [MASK] / 15% kept) is
`bert_jax.config.electra_recipe`; this file sets the sizes and google-research/electra's
configure_pretraining.py values for the small model: embedding_size 128, learning rate 5e-4, batch 128,
sequences of 128, 1M steps. generator_hidden_fraction 0.25 is that file's default and the paper's ELECTRA-Small
(Table 6: a 64-wide generator with one head). The released ELECTRA-Small++ checkpoint was instead trained
with a full-size generator (its README: "generator_hidden_size": 1.0); set
--config.electra.generator_hidden_fraction=1.0 to reproduce that one.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.electra_recipe(config_lib.default_config())
    config.model.update({"vocab_size": 30522, "embedding_size": 128, "hidden_size": 256, "num_hidden_layers": 12,
                         "num_attention_heads": 4, "intermediate_size": 1024})
    config.electra.generator_hidden_fraction = 0.25
    config.data.max_seq_length = 128
    config.masking.max_predictions_per_seq = 19  # int((0.15 + 0.005) * 128)
    config.train.update({"global_batch_size": 128, "learning_rate": 5e-4, "num_train_steps": 1_000_000})
    return config
