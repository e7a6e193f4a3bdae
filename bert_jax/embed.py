"""Contextual embeddings of a text file, one row per non-empty line, as a .npy array:

  python -m bert_jax.embed --checkpoint=EXPORT --input=lines.txt --output=emb.npy --layers=-4,-3,-2,-1 \
      --pooling=cls

`--checkpoint` is a params-only export or a pretraining workdir. Pooling 'cls' or 'mean' (over real
tokens) gives [lines, width]; 'tokens' gives [lines, max_seq_length, width] with zeros at padding.

Lines are sorted by token length (within chunks of --chunk_lines) and each batch is padded only to its
bucket (a power of two from 16 to --max_seq_length, one compile per bucket); row i of the output is line i.
The input is streamed: any file size, memory bounded by one chunk; the .npy is written under a hidden
name beside --output and renamed to it when complete, and a progress line is logged every --log_every
lines. The last line printed is a JSON summary (shape, lines/s, buckets, compiles, padding).
"""

import json
import os

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
_DTYPE = flags.DEFINE_enum("dtype", "float32", embedding.DTYPES, "Compute dtype of the encoder's matmuls "
                           "(bfloat16: parameters kept float32, cast at each matmul; layer norms, softmax and "
                           "pooling in float32; the output is float32).")
_NORMALIZE = flags.DEFINE_bool("normalize", False, "L2-normalise each pooled vector (cls/mean pooling).")
_BUCKETING = flags.DEFINE_bool("bucketing", True, "Pad each batch to its length bucket; --nobucketing pads every "
                               "batch to --max_seq_length (same numbers, slower).")
_CHUNK_LINES = flags.DEFINE_integer("chunk_lines", 65536, "Lines read, sorted and embedded at a time (memory).")
_LOG_EVERY = flags.DEFINE_integer("log_every", 10000, "Log a progress line every this many lines.")
flags.mark_flags_as_required(["checkpoint", "input", "output"])
cli.refuse_empty("checkpoint", "input", "output")


def _embed():
    try:
        layers = [int(layer) for layer in _LAYERS.value]
    except ValueError as e:
        raise InputError(f"--layers must be integers, got {_LAYERS.value}.") from e
    output = _OUTPUT.value if _OUTPUT.value.endswith(".npy") else _OUTPUT.value + ".npy"  # what np.save writes
    if os.path.isdir(_OUTPUT.value) or os.path.isdir(output):
        raise InputError(f"--output {_OUTPUT.value} is a directory; give a file name such as "
                         f"{os.path.join(_OUTPUT.value, 'embeddings.npy')}.")
    embedder = embedding.Embedder(transfer.load_pretrained(_CHECKPOINT.value), layers=layers,
                                  pooling=_POOLING.value, combination=_COMBINATION.value, dtype=_DTYPE.value,
                                  normalize=_NORMALIZE.value)
    report = embedding.embed_file(embedder, _INPUT.value, output, max_seq_length=_MAX_SEQ_LENGTH.value,
                                  batch_size=_BATCH_SIZE.value, chunk_lines=_CHUNK_LINES.value,
                                  log_every=_LOG_EVERY.value, bucketed=_BUCKETING.value)
    return {**report, "output": output, "layers": embedder.layers, "dtype": _DTYPE.value,
            **embedder.stats.report()}


def main(argv):
    print(json.dumps(cli.run(argv, _embed)))


if __name__ == "__main__":
    cli.run_app(main)
