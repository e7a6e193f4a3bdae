"""DistilBERT (Sanh et al. 2019): a student with half the teacher's layers, initialised from teacher layers
0, 2, 4, ..., without segment embeddings or pooler, trained on masked LM with the teacher's soft targets.

Give the teacher with --config.teacher_checkpoint (a pretraining workdir, a params export or a transformers
directory, e.g. bert-base-uncased saved by transformers); the student's shape, tokenizer and sequence length
follow it. Loss weights are the paper's (HF's distillation script): 5.0 soft targets at T = 2, 2.0 masked LM,
1.0 cosine of the last hidden states. Optimisation follows HF's distillation script (lr 5e-4, Adam eps
1e-6, gradient clipping 5.0) at batch 256 on one host (the paper: ~4K sequences per batch); MLM only, no NSP,
on RoBERTa-style full sentences.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.roberta_recipe(config_lib.default_config())
    config.distill.recipe = "distilbert"
    config.distill.temperature = 2.0
    config.distill.soft_target_weight = 5.0
    config.distill.mlm_weight = 2.0
    config.distill.cosine_weight = 1.0
    config.data.max_seq_length = 512
    config.masking.max_predictions_per_seq = 77  # round(0.15 * 512)
    config.train.update({"global_batch_size": 256, "learning_rate": 5e-4, "num_train_steps": 200_000,
                         "warmup_steps": 10_000, "adam_eps": 1e-6, "max_grad_norm": 5.0})
    return config
