"""Input side: special tokens, tokenizers, text corpora, tokenized shards (TFDS array_record), Grain
pipelines and packing. Imports neither the model nor pretraining nor fine-tuning."""
