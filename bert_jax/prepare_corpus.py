"""Tokenize a pretraining corpus ahead of training, e.g. on a CPU machine before a long TPU/GPU run:

python -m bert_jax.prepare_corpus --config=configs/bert_base.py --workdir=DIR \
    [--config.data.corpus='tfds:wikipedia/20230601.en'] [--config.data.preprocess_workers=16]

It does exactly the data preparation `bert_jax.pretrain` does first with the same config and workdir
(train the tokenizer if none is given, tokenize the corpus into sharded array_record files in
`config.data.preprocess_workers` processes), so the training run then reuses it. Re-running the same
command resumes an interrupted preparation from its complete shards. Prints one JSON object: each
split's documents, sentences, tokens and shards, and the throughput of the shards written this time.
"""

import json

from absl import flags
from ml_collections import config_flags

from bert_jax import cli
from bert_jax import config as config_lib
from bert_jax.data import corpus, sharded_corpus, tlm_mixture

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: the tokenizer and corpus caches go here.")
flags.mark_flags_as_required(["config", "workdir"])
cli.refuse_empty("workdir")


def prepare(config, workdir: str) -> dict:
    """Tokenizer and tokenized splits of `config` in `workdir`; returns their statistics."""
    config = config_lib.validate(config)
    prepare_locked = (tlm_mixture.data_module(config.data).prepare_locked
                      if config.data.instance_format == "translation_pairs"
                      else corpus.prepare_locked)
    tokenizer, sources = prepare_locked(config.data, workdir)
    summary = {"tokenizer": tokenizer.model_path, "vocab_size": tokenizer.vocab_size,
               "splits": {split: source.statistics for split, source in sources.items()}}
    directory = sources["train"].statistics.get("directory")  # none for a multilingual corpus (one per language)
    index = sharded_corpus.read_index(directory) if directory else None
    if index and "throughput" in index:
        summary["throughput"] = index["throughput"]
    return summary


def main(argv):
    print(json.dumps(cli.run(argv, lambda: prepare(_CONFIG.value, _WORKDIR.value))))


if __name__ == "__main__":
    cli.run_app(main)
