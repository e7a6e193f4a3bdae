"""XLM's translation language modelling (TLM, Lample & Conneau 2019): parallel text as masked-LM rows.

`config.data.parallel_corpus` names XLM's files: 'en-fr:/data/para/train.en-fr' reads train.en-fr.en and
train.en-fr.fr, one sentence per line, line i of one the translation of line i of the other. Every pair is
checked first (same line counts, no empty line on either side, UTF-8 text), so a misaligned corpus is one
line naming the file and the line rather than a model trained on shifted pairs. Pairs are held out for
evaluation by a hash of their text, as `corpus.held_out` does for documents (`eval_fraction` of them; which
held-out pairs are evaluated is then `eval_seed`'s choice), and tokenized by `sharded_corpus` into
array_record shards, one split per language pair ('train-en-fr', 'eval-en-fr'): a record is a document of
two sentences, the source and its target.

A row is `[CLS] src [SEP] tgt [SEP]` + padding, masked on both sides by the device's usual masking:
- `position_ids` restart at 0 at the second side (XLM), so a word and its translation sit at similar
  positions whatever the length of the first side;
- `language_ids`: the source's language on [CLS] src [SEP], the target's on tgt [SEP] (ids index the
  sorted languages of the run; 0 on padding);
- `segment_ids` 0 then 1, a BERT sentence pair: XLM has no segments (its language embeddings tell the
  sides apart), but the table exists in every BERT model here, and pairs with segment 1 on the second
  side are what a fine-tuned pair task (XNLI) will feed it;
- `attention_mask` 1 on every real token: with `position_ids` in the batch the encoder reads it as
  instance ids, so the row is one instance and the target attends to the source (what TLM is for);
- long pairs lose tokens on the longer side (`pipeline.truncate_seq_pair`), keeping both; half of the
  rows put the target first, since XLM trains both directions.
Monolingual rows carry the same keys through `monolingual_features`, so a mixture of the two batches
into one stream (`tlm_mixture.py`, with `config.data.tlm_ratio`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import pipeline, sharded_corpus, tokenizer_factory
from bert_jax.data.vocab import DEFAULT_SPECIAL_IDS, SpecialIds
from bert_jax.runtime import workdir_lock

FEATURE_KEYS = ("input_ids", "segment_ids", "attention_mask", "next_sentence_labels", "position_ids",
                "language_ids")
_SOURCE = "config.data.parallel_corpus"
_FORMAT = 1  # the layout of the tokenized pairs, part of their cache's key


# ------------------------------------------------------------------ rows

def make_translation_pair(src: np.ndarray, tgt: np.ndarray, src_language: int, tgt_language: int,
                          rng: np.random.Generator, max_seq_length: int,
                          special_ids: SpecialIds = DEFAULT_SPECIAL_IDS) -> dict[str, np.ndarray]:
    """One TLM row from a pair's token ids (see the module docstring).

    With probability 0.5 the target goes first (one `rng.random()` draw), then the pair is cut to
    `max_seq_length - 3` tokens by `truncate_seq_pair` (longer side first, the second side on a tie).
    Returns int32 [max_seq_length] `input_ids`, `segment_ids`, `attention_mask`, `position_ids`,
    `language_ids`, and scalar `next_sentence_labels` 0 (no pair task).
    """
    sides = [(np.asarray(src), src_language), (np.asarray(tgt), tgt_language)]
    if rng.random() < 0.5:
        sides.reverse()
    (first, first_language), (second, second_language) = sides
    keep_first, keep_second = pipeline.truncate_seq_pair(len(first), len(second), max_seq_length - 3, rng)
    first, second = first[keep_first], second[keep_second]
    first_length, second_length = len(first) + 2, len(second) + 1  # [CLS] first [SEP], second [SEP]
    length = first_length + second_length
    row = {key: np.zeros(max_seq_length, np.int32) for key in FEATURE_KEYS if key != "next_sentence_labels"}
    row["input_ids"][:] = special_ids.pad  # [max_seq_length]
    row["input_ids"][:length] = np.concatenate([[special_ids.cls], first, [special_ids.sep], second,
                                                [special_ids.sep]])
    row["segment_ids"][first_length:length] = 1
    row["attention_mask"][:length] = 1
    row["position_ids"][:length] = np.concatenate([np.arange(first_length), np.arange(second_length)])
    row["language_ids"][:length] = [first_language] * first_length + [second_language] * second_length
    row["next_sentence_labels"] = np.int32(0)
    return row


def monolingual_features(example: dict[str, np.ndarray], language: int) -> dict[str, np.ndarray]:
    """A monolingual MLM row with TLM's keys: positions 0..n-1 and `language` on its real tokens (0 on
    padding), so that it batches with translation pairs and the encoder reads it as one instance."""
    real = np.asarray(example["attention_mask"]) > 0  # [max_seq_length]
    return dict(example, position_ids=np.where(real, np.cumsum(real) - 1, 0).astype(np.int32),
                language_ids=np.where(real, language, 0).astype(np.int32))


class TranslationPairBuilder:
    """Instance index + rng -> a TLM row: the interface of pipeline's `_InstanceBuilder`, so its masking,
    shuffling, sharding and evaluation code serve translation pairs unchanged. Picklable for Grain workers.

    `pairs`: (source language id, target language id, source of two-sentence records) per language pair.
    Records that lost a side in tokenization (a line of only characters the tokenizer drops) are skipped.
    """

    def __init__(self, pairs: Sequence[tuple[int, int, Any]], *, max_seq_length: int,
                 special_ids: SpecialIds = DEFAULT_SPECIAL_IDS):
        self._pairs, self._max_seq_length, self._special_ids = list(pairs), max_seq_length, special_ids
        rows = []
        for pair, (_, _, source) in enumerate(self._pairs):
            whole = [i for i, lengths in enumerate(pipeline.load_sentence_lengths(source)) if len(lengths) == 2]
            rows.append(np.stack([np.full(len(whole), pair), np.asarray(whole, np.int64)], axis=1))
        self.index = np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)  # [n, 2]

    def __len__(self) -> int:
        return len(self.index)

    def __call__(self, instance: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        pair, record = (int(x) for x in self.index[instance])
        src_language, tgt_language, source = self._pairs[pair]
        document = source[record]
        split = int(document["sentence_lengths"][0])
        tokens = document["tokens"]
        return make_translation_pair(tokens[:split], tokens[split:], src_language, tgt_language, rng,
                                     self._max_seq_length, self._special_ids)


class ParallelSource:
    """One split of a parallel corpus: a source per language pair, and the languages' ids.

    The pipeline asks it for its instance builder (`instance_builder`) instead of indexing documents.
    """

    def __init__(self, pairs: Sequence[tuple[int, int, Any]], names: Sequence[str] = ()):
        self.pairs, self.names = list(pairs), list(names)

    def __len__(self) -> int:
        return sum(len(source) for _, _, source in self.pairs)

    @property
    def statistics(self) -> dict[str, Any]:
        """The split's totals over its language pairs (documents are pairs here), as ShardedCorpusSource has them."""
        totals = {key: sum(source.statistics.get(key, 0) for _, _, source in self.pairs)
                  for key in ("documents", "sentences", "tokens", "shards")}
        return dict(totals, directory=self.pairs[0][2].statistics.get("directory", "") if self.pairs else "")

    def instance_builder(self, *, max_seq_length: int, special_ids: SpecialIds) -> TranslationPairBuilder:
        return TranslationPairBuilder(self.pairs, max_seq_length=max_seq_length, special_ids=special_ids)

    def __repr__(self) -> str:
        return f"ParallelSource({', '.join(self.names)}: {len(self)} pairs)"


# ------------------------------------------------------------------ reading parallel files

class _Pair:
    """One 'SRC-TGT:PREFIX' entry: its languages and files."""

    def __init__(self, src: str, tgt: str, prefix: str):
        self.src, self.tgt = src, tgt
        prefix = os.path.abspath(os.path.expanduser(prefix))
        self.src_path, self.tgt_path = f"{prefix}.{src}", f"{prefix}.{tgt}"
        for path in (self.src_path, self.tgt_path):
            if not os.path.isfile(path):
                raise InputError(f"{_SOURCE} entry {src}-{tgt}:{prefix} needs the file {path}, which does not "
                                 f"exist; give PREFIX so that PREFIX.{src} and PREFIX.{tgt} are the two sides.")

    @property
    def name(self) -> str:
        return f"{self.src}-{self.tgt}"

    def lines(self) -> Iterator[tuple[str, str]]:
        """The aligned, stripped (source, target) lines; InputError naming the file and line otherwise."""
        src_lines = corpus_lib._lines(self.src_path, _SOURCE)
        tgt_lines = corpus_lib._lines(self.tgt_path, _SOURCE)
        number = 0
        while True:
            src, tgt = next(src_lines, None), next(tgt_lines, None)
            if src is None or tgt is None:
                if src is not None or tgt is not None:
                    short, long_ = (self.src_path, self.tgt_path) if src is None else (self.tgt_path, self.src_path)
                    raise InputError(f"{short} ends after line {number} but {long_} goes on: the two sides of a "
                                     "parallel corpus need the same number of lines, line i of one translating "
                                     "line i of the other; fix the alignment of the pair.")
                return
            number += 1
            src, tgt = src.strip(), tgt.strip()
            for text, path, other in ((src, self.src_path, self.tgt_path), (tgt, self.tgt_path, self.src_path)):
                if not text:
                    raise InputError(f"{path} line {number} is empty: in a parallel corpus every line holds one "
                                     f"sentence, translated on the same line of {other}; remove the line from both "
                                     "files.")
            yield src, tgt


def parallel_pairs(config_data) -> list[_Pair]:
    """The entries of `config.data.parallel_corpus`, their files checked to exist."""
    return [_Pair(*entry) for entry in config_lib.parallel_corpus_entries(config_data.parallel_corpus)]


def _counted_splits(pairs: Sequence[_Pair], eval_fraction: float) -> dict[str, int]:
    """Reads every pair through once (the checks of `_Pair.lines`) and counts each split's pairs."""
    counts = {}
    for pair in pairs:
        train = held = 0
        for src, tgt in pair.lines():
            if corpus_lib.held_out([src, tgt], eval_fraction):
                held += 1
            else:
                train += 1
        counts[f"train-{pair.name}"], counts[f"eval-{pair.name}"] = train, held
    return counts


def _split_lines(pairs: Sequence[_Pair], eval_fraction: float) -> Iterator[tuple[str, list[str]]]:
    for pair in pairs:
        for src, tgt in pair.lines():
            split = "eval" if corpus_lib.held_out([src, tgt], eval_fraction) else "train"
            yield f"{split}-{pair.name}", [src, tgt]


# ------------------------------------------------------------------ inputs, fingerprint, tokenized splits

def corpus_fingerprint(config_data) -> dict[str, Any]:
    """The parallel files as `corpus.corpus_fingerprint` describes a corpus (language pairs, paths, sizes,
    modification times; no text read), for the resume check: another file or pair is another stream."""
    pairs = parallel_pairs(config_data)
    parts, sizes = [], []
    for pair in pairs:
        for path in (pair.src_path, pair.tgt_path):
            stat = os.stat(path)
            parts.append([pair.name, path, stat.st_size, stat.st_mtime_ns])
            sizes.append(stat.st_size)
    what = f"parallel corpus {', '.join(f'{p.name}:{p.src_path[: -len(p.src) - 1]}' for p in pairs)}"
    train = {"fingerprint": hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16], "what": what,
             "files": len(sizes), "bytes": sum(sizes)}
    return {"train": train, "eval": None}


def default_or_given_inputs(config_data, workdir: str, tokenizer=None):
    """(parallel corpus spec, tokenizer): `tokenizer`, else `config.data.tokenizer_model`, else a tokenizer
    trained once on both sides of every pair (the files are checked first) and cached in the workdir."""
    if tokenizer is None and config_data.tokenizer_model:
        tokenizer = tokenizer_factory.load_tokenizer(config_data.tokenizer_model)
    if tokenizer is not None:
        return config_data.parallel_corpus, tokenizer
    pairs = parallel_pairs(config_data)
    if not os.path.isfile(os.path.join(workdir, "tokenizer", "spm.model")):
        _counted_splits(pairs, 0.0)  # bad files said as parallel-corpus errors, before SentencePiece reads them
    text = copy.deepcopy(config_data)
    text.corpus = ",".join(path for pair in pairs for path in (pair.src_path, pair.tgt_path))
    _, tokenizer = corpus_lib.default_or_given_inputs(text, workdir)
    return config_data.parallel_corpus, tokenizer


def _fingerprint(config_data, tokenizer, eval_fraction: float) -> str:
    h = hashlib.sha256()
    for part in (corpus_fingerprint(config_data)["train"]["fingerprint"], repr(float(eval_fraction)),
                 f"docs_per_shard={config_data.docs_per_shard}", f"format={sharded_corpus.FORMAT_VERSION}.{_FORMAT}",
                 f"held_out_rule={corpus_lib.HELD_OUT_RULE}"):
        h.update(part.encode() + b"\0")
    h.update(tokenizer.serialized_model())
    return h.hexdigest()[:16]


def tokenize_splits(config_data, workdir: str, tokenizer, languages: Sequence[str] | None = None) -> dict[str, Any]:
    """{'train', 'eval'}: ParallelSources of the tokenized pairs, cached in <workdir>/corpus/translation_pairs.

    `languages`: the run's sorted languages (a token's language id is its index there); default: those of
    the parallel corpus. The files are read and checked through once before anything is tokenized.
    """
    pairs = parallel_pairs(config_data)
    languages = list(languages or config_lib.run_languages(config_data))
    eval_fraction = float(config_data.eval_fraction)
    dataset_dir = os.path.join(workdir, "corpus", "translation_pairs", _fingerprint(config_data, tokenizer,
                                                                                    eval_fraction))
    index = sharded_corpus.read_index(dataset_dir)
    if index is None:
        counts = _counted_splits(pairs, eval_fraction)
        if not any(counts[f"eval-{pair.name}"] for pair in pairs):
            raise InputError(f"no line of {_SOURCE} fell in config.data.eval_fraction={eval_fraction}; give more "
                             "pairs or raise the fraction.")
        messages = {split: f"{split} of {_SOURCE} has no pairs left after tokenization; give pairs with text "
                           "the tokenizer reads." for split, count in counts.items() if count}
        missing_train = [pair.name for pair in pairs if not counts[f"train-{pair.name}"]]
        if missing_train:
            raise InputError(f"every line of the {missing_train[0]} pair of {_SOURCE} was held out for evaluation; "
                             "give more pairs or lower config.data.eval_fraction.")
        logging.info("Tokenizing %s into %s: %s.", config_data.parallel_corpus, dataset_dir,
                     ", ".join(f"{split} {count} pairs" for split, count in counts.items() if count))
        index = sharded_corpus.write_sharded_corpus(
            dataset_dir, ((split, lines) for split, lines in _split_lines(pairs, eval_fraction) if split in messages),
            tokenizer=tokenizer, empty_messages=messages,
            num_workers=config_data.preprocess_workers or os.cpu_count() or 1,
            docs_per_shard=config_data.docs_per_shard,
            metadata={"parallel_corpus": config_data.parallel_corpus, "eval_fraction": eval_fraction,
                      "tokenizer_model": tokenizer.model_path})
    else:
        logging.info("Reusing tokenized pairs in %s.", dataset_dir)
    sources = sharded_corpus.load_sources(dataset_dir, index)
    splits = {}
    for split in ("train", "eval"):
        present = [pair for pair in pairs if f"{split}-{pair.name}" in sources]
        splits[split] = ParallelSource([(languages.index(pair.src), languages.index(pair.tgt),
                                         sources[f"{split}-{pair.name}"]) for pair in present],
                                       [pair.name for pair in present])
    return splits


def prepare_default_or_given(config_data, workdir: str, tokenizer=None):
    """(tokenizer, tokenized splits) of a translation-pair run, each built once per workdir."""
    _, tokenizer = default_or_given_inputs(config_data, workdir, tokenizer)
    return tokenizer, tokenize_splits(config_data, workdir, tokenizer)


def prepare_locked(config_data, workdir: str):
    """`prepare_default_or_given` with the workdir locked: what `python -m bert_jax.prepare_corpus` runs."""
    with workdir_lock.workdir_lock(workdir, "corpus preparation"):
        return prepare_default_or_given(config_data, workdir)
