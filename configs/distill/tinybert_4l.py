"""TinyBERT-4 (Jiao et al. 2020): 4 layers, hidden 312, intermediate 1200, 12 heads (14.5M parameters with
BERT's vocabulary), general distillation from a 12-head teacher.

The student's hidden states are mapped into the teacher's width by one learned linear layer (`fit_dense`);
for the first half of the steps it learns the embedding output, the hidden states and the attention scores of
teacher layers 3, 6, 9, 12 (uniform mapping, MSE), then the teacher's masked-LM distribution (soft
cross-entropy at T = 1). TinyBERT's general distillation uses lr 1e-4, batch 256, sequences of 128 for 3
epochs of English Wikipedia. The vocabulary, positions and tokenizer come from the teacher
(--config.teacher_checkpoint).
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.roberta_recipe(config_lib.default_config())
    config.distill.recipe = "tinybert"
    config.distill.temperature = 1.0
    config.distill.soft_target_weight = 1.0
    config.distill.mlm_weight = 0.0
    config.distill.intermediate_fraction = 0.5
    config.model.update({"hidden_size": 312, "num_hidden_layers": 4, "num_attention_heads": 12,
                         "intermediate_size": 1200})
    config.data.max_seq_length = 128
    config.masking.max_predictions_per_seq = 20
    config.train.update({"global_batch_size": 256, "learning_rate": 1e-4, "num_train_steps": 300_000,
                         "warmup_steps": 10_000})
    return config
