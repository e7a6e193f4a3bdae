"""(a) BERT-Tiny shape (2 layers, hidden 128, 2 heads, vocab 8192) trained with MLM only on full sentences
(RoBERTa-style objective and data, but the bert_tiny optimiser: AdamW beta2 0.999, lr 2e-3, warmup 10%).

The number of steps is set on the command line (run.sh) from the measured step time.
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.update({"vocab_size": 8192, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 512, "max_position_embeddings": 128})
    config.objective = "mlm"
    config.data.update({"instance_format": "full_sentences", "tokenizer_vocab_size": 8192, "max_seq_length": 128})
    config.masking.update({"dynamic": True, "max_predictions_per_seq": 20})
    config.train.update({"global_batch_size": 32, "num_train_steps": 2000, "warmup_steps": 200,
                         "learning_rate": 2e-3, "log_every_steps": 100, "eval_every_steps": 500})
    config.checkpoint.every_steps = 500
    return config
