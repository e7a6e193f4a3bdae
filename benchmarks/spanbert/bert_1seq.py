"""(a) BERT baseline for SpanBERT: the BERT-Tiny shape (2 layers, hidden 128, 2 heads, FFN 512, vocab 8192,
128 positions) trained with MLM only on single full-sentence segments (no NSP), token masking 15%. This is
SpanBERT's own fairest baseline ("BERT-1seq" in Joshi et al. 2020): it differs from (b) only in the masking
(tokens vs spans) and the span-boundary objective. Steps are set on the command line (run.sh).
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.update({"vocab_size": 8192, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 512, "max_position_embeddings": 128})
    config.objective = "mlm"
    config.data.update({"instance_format": "full_sentences", "tokenizer_vocab_size": 8192, "max_seq_length": 128})
    config.masking.update({"kind": "token", "dynamic": True, "max_predictions_per_seq": 20})
    config.train.update({"global_batch_size": 32, "num_train_steps": 1500, "warmup_steps": 150,
                         "learning_rate": 2e-3, "log_every_steps": 100, "eval_every_steps": 500})
    config.checkpoint.every_steps = 500
    return config
