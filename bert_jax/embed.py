"""Contextual embeddings of a text file, one row per non-empty line, as a .npy array:

  python -m bert_jax.embed --checkpoint=EXPORT --input=lines.txt --output=emb.npy --layers=-4,-3,-2,-1 \
      --pooling=cls

`--checkpoint` is a params-only export or a pretraining workdir. Pooling 'cls' or 'mean' (over real
tokens) gives [lines, width]; 'tokens' gives [lines, max_seq_length, width] with zeros at padding.
"""

import json
import os

import numpy as np
from absl import flags

from bert_jax import cli
from bert_jax.config import InputError
from bert_jax.finetuning import embedding, transfer

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A params-only export or a pretraining workdir.")
_INPUT = flags.DEFINE_string("input", None, "UTF-8 text file; each non-empty line is embedded.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .npy array.")
_LAYERS = flags.DEFINE_list("layers", ["-1"], "Layers to use: 0 = embeddings, -1 = last (BERT's feature-based "
                            "NER: -4,-3,-2,-1).")
_COMBINATION = flags.DEFINE_enum("combination", "concat", embedding.COMBINATIONS, "How to combine several layers.")
_POOLING = flags.DEFINE_enum("pooling", "cls", embedding.POOLINGS, "[CLS] vector, mean over tokens, or every token.")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", 128, "Tokens per line, [CLS] and [SEP] included.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Lines per forward pass.")
flags.mark_flags_as_required(["checkpoint", "input", "output"])
cli.refuse_empty("checkpoint", "input", "output")


def _read_lines(path: str) -> list[str]:
    if os.path.isdir(path):
        raise InputError(f"--input {path} is a directory; give one UTF-8 text file, one line per text to embed.")
    if not os.path.isfile(path):
        raise InputError(f"--input file not found: {path}.")
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise InputError(f"--input {path} is not UTF-8 text ({e}); convert it with iconv.") from e


def _embed():
    try:
        layers = [int(layer) for layer in _LAYERS.value]
    except ValueError as e:
        raise InputError(f"--layers must be integers, got {_LAYERS.value}.") from e
    output = _OUTPUT.value if _OUTPUT.value.endswith(".npy") else _OUTPUT.value + ".npy"  # what np.save writes
    if os.path.isdir(_OUTPUT.value) or os.path.isdir(output):
        raise InputError(f"--output {_OUTPUT.value} is a directory; give a file name such as "
                         f"{os.path.join(_OUTPUT.value, 'embeddings.npy')}.")
    texts = _read_lines(_INPUT.value)
    embedder = embedding.Embedder(transfer.load_pretrained(_CHECKPOINT.value), layers=layers,
                                  pooling=_POOLING.value, combination=_COMBINATION.value)
    vectors = embedder(texts, max_seq_length=_MAX_SEQ_LENGTH.value, batch_size=_BATCH_SIZE.value)
    np.save(output, vectors)
    return {"output": output, "shape": list(vectors.shape), "layers": embedder.layers}


def main(argv):
    print(json.dumps(cli.run(argv, _embed)))


if __name__ == "__main__":
    cli.run_app(main)
