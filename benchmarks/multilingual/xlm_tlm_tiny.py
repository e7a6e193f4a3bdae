"""XLM's MLM + TLM at the BERT-Tiny shape (2 layers, hidden 128, 2 heads, FFN 512, 128 positions, one 8,192-piece
SentencePiece vocabulary) on the gettext corpus of build_corpus.py: half the rows are translation pairs
(`tlm_ratio` 0.5) with language embeddings, half monolingual text sampled with q_i ~ p_i^0.7.

  python -m bert_jax.pretrain --config=benchmarks/multilingual/xlm_tlm_tiny.py --workdir=/tmp/evid/pre_tlm \
      --config.data.corpus=en:/tmp/evid/ml/mono/en,de:/tmp/evid/ml/mono/de,ru:/tmp/evid/ml/mono/ru,ja:/tmp/evid/ml/mono/ja \
      --config.data.parallel_corpus=en-de:/tmp/evid/ml/para/train.en-de,en-ru:/tmp/evid/ml/para/train.en-ru,en-ja:/tmp/evid/ml/para/train.en-ja
"""

from bert_jax import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.update({"vocab_size": 8192, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 512, "max_position_embeddings": 128, "num_languages": 4})
    config.objective = "mlm"
    config.data.update({"instance_format": "translation_pairs", "tlm_ratio": 0.5, "tokenizer_vocab_size": 8192,
                        "max_seq_length": 128, "language_alpha": 0.7, "tokenizer_alpha": 0.3})
    config.masking.update({"kind": "token", "dynamic": True, "max_predictions_per_seq": 20})
    config.train.update({"global_batch_size": 32, "num_train_steps": 600, "warmup_steps": 60,
                         "learning_rate": 2e-3, "log_every_steps": 100, "eval_every_steps": 300})
    config.checkpoint.every_steps = 300
    return config
