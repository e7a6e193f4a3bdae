"""Trains a SentencePiece tokenizer on text files, with BERT's special tokens at ids 0..4.

  python -m bert_jax.train_tokenizer --input=corpus/ --vocab_size=8000 --output=/tmp/spm

(`python -m bert_jax.data.tokenizer`, its released name, runs this same command.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags

from bert_jax import cli
from bert_jax.config import InputError
from bert_jax.data.corpus import check_text_files, resolve_text_files
from bert_jax.data.sentencepiece_tokenizer import train_tokenizer
from bert_jax.data.tokenizer_factory import load_tokenizer

_INPUT = flags.DEFINE_string("input", None, "Text: a file, a directory or a glob; comma-separated list allowed.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 30522, "Requested vocabulary size.")
_OUTPUT = flags.DEFINE_string("output", None, "Model prefix; writes <output>.model and <output>.vocab.")
cli.refuse_empty("input", "output")


def _train() -> str:
    if not _INPUT.value or not _OUTPUT.value:
        raise InputError("--input and --output are required, e.g. --input=corpus/ --output=/tmp/spm.")
    if _OUTPUT.value.endswith(os.sep) or os.path.isdir(_OUTPUT.value):
        prefix = os.path.join(_OUTPUT.value, "spm")
        raise InputError(f"--output={_OUTPUT.value} is a directory, but --output is a file prefix; give e.g. "
                         f"--output={prefix} to write {prefix}.model and {prefix}.vocab.")
    files = resolve_text_files(_INPUT.value, "--input")
    check_text_files(files, "--input")  # bad text is refused by name before SentencePiece would skip it silently
    model_path = train_tokenizer(files, _OUTPUT.value, _VOCAB_SIZE.value)
    return f"{model_path} vocab_size={load_tokenizer(model_path).vocab_size}"


def main(argv: Sequence[str]) -> None:
    print(cli.run(argv, _train))


if __name__ == "__main__":
    cli.run_app(main)
