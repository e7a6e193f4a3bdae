"""`python -m bert_jax.data.tokenizer`: the released name of `python -m bert_jax.train_tokenizer`.

Kept so that scripts written against earlier releases keep working; the library lives in
`sentencepiece_tokenizer.py` (the tokenizer) and `tokenizer_factory.py` (loading any tokenizer).
"""

from bert_jax import cli, train_tokenizer

if __name__ == "__main__":
    cli.run_app(train_tokenizer.main)
