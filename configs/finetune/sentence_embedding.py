"""A sentence encoder (Sentence-BERT) from your own pairs, no code:

  python -m bert_jax.finetune --config=configs/finetune/sentence_embedding.py --config.init_checkpoint=EXPORT \
      --config.data.train_file=pairs.tsv --config.data.validation_file=dev_pairs.tsv --workdir=/tmp/sbert

By default rows are (text, text_pair): a query and its positive, and every other row of the global batch
(gathered from every device) is a negative (MultipleNegativesRanking, scale 20); add a hard negative with
--config.data.negative_column=negative. For scored pairs use --config.sentence.loss=cosent (or
cosine_similarity) with the score in `label`; for labelled pairs (NLI) --config.sentence.loss=softmax.
Mean pooling and unit-length vectors by default (config.sentence.pooling / normalize). Large batches
without the memory: --config.sentence.gradient_cache_chunks=N. Evaluations of the chosen model:
--config.sentence.eval_sts_file=sts.tsv and --config.sentence.eval_beir_dir=DIR (BEIR layout).
"""

from bert_jax.finetuning import config as finetune_config


def get_config():
    config = finetune_config.default_config()
    config.task = "sentence_embedding"
    config.data.text_pair_column = "text_pair"
    config.data.max_seq_length = 128
    config.train.update({"global_batch_size": 64, "learning_rate": 5e-5, "num_train_epochs": 1.0,
                         "warmup_proportion": 0.1})
    return config
