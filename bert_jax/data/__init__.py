"""Input side: tokenizer, tokenized corpora (TFDS array_record) and Grain pipelines."""
