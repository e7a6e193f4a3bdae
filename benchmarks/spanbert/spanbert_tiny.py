"""(b) SpanBERT at the BERT-Tiny shape: exactly (a) bert_1seq.py (same shape, single full-sentence segments,
no NSP, 15% masking 80/10/10, 20 predictions, optimiser, batch) except the objective 'mlm_sbo' (MLM + the
span-boundary objective, equal weights) and span masking (span lengths in words ~ Geometric(0.2), clipped
at 10 words). The SBO head keeps the defaults (SpanBERT's 15 span positions x 200-wide position embeddings).
Steps are set on the command line (run.sh).
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.update({"vocab_size": 8192, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 512, "max_position_embeddings": 128})
    config.objective = "mlm_sbo"
    config.data.update({"instance_format": "full_sentences", "tokenizer_vocab_size": 8192, "max_seq_length": 128})
    config.masking.update({"kind": "span", "span_p": 0.2, "max_span_length": 10, "dynamic": True,
                           "max_predictions_per_seq": 20})
    config.train.update({"global_batch_size": 32, "num_train_steps": 1500, "warmup_steps": 150,
                         "learning_rate": 2e-3, "log_every_steps": 100, "eval_every_steps": 500})
    config.checkpoint.every_steps = 500
    return config
