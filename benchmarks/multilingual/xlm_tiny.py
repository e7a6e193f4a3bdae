"""A tiny multilingual MLM (XLM-R's recipe at the BERT-Tiny shape: 2 layers, hidden 128, 2 heads, FFN 512,
128 positions, one 8,192-piece SentencePiece vocabulary shared by all languages, MLM only on full-sentence
single segments, no language embeddings), on the gettext corpus of build_corpus.py: one folder per language
(`config.data.language_folders`), languages sampled with q_i ~ p_i^0.7, tokenizer trained on a p^0.3 resample.

  python -m bert_jax.pretrain --config=benchmarks/multilingual/xlm_tiny.py --workdir=/tmp/evid/pre_xlm \
      --config.data.corpus=/tmp/evid/ml/mono
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.update({"vocab_size": 8192, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 512, "max_position_embeddings": 128})
    config.objective = "mlm"
    config.data.update({"instance_format": "full_sentences", "tokenizer_vocab_size": 8192, "max_seq_length": 128,
                        "language_folders": True, "language_alpha": 0.7, "tokenizer_alpha": 0.3})
    config.masking.update({"kind": "token", "dynamic": True, "max_predictions_per_seq": 20})
    config.train.update({"global_batch_size": 32, "num_train_steps": 1000, "warmup_steps": 100,
                         "learning_rate": 2e-3, "log_every_steps": 100, "eval_every_steps": 500})
    config.checkpoint.every_steps = 500
    return config
