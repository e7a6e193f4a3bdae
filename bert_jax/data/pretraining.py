"""BERT pretraining examples: next-sentence-prediction pairs built on the fly by a Grain pipeline.

Follows google-research/bert `create_pretraining_data.py`, split in two so that nothing is written to
disk per epoch: `index_instances` chunks each document into runs of consecutive sentences once (it
reads only sentence lengths), and `make_sentence_pair` turns a chunk into `[CLS] A [SEP] B [SEP]` with
a fresh random split and NotNext partner every time Grain visits it. Masking happens later, on the
device, so batches here carry no MLM labels.

Differences from the original, on purpose: each chunk draws its own target length (the original
draws one per document), and a NotNext B never puts the chunk's unused sentences back, because the
chunking is fixed before any pair is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from bert_jax.config import InputError
from bert_jax.data.tokenizer import CLS_ID, PAD_ID, SEP_ID

# Columns of the instance index.
DOC, FIRST_SENTENCE, END_SENTENCE, TARGET_LENGTH = range(4)
IS_NEXT, NOT_NEXT = 0, 1  # next_sentence_labels, as in BERT and HF

_FEATURE_KEYS = ("input_ids", "segment_ids", "attention_mask", "next_sentence_labels")


def load_sentence_lengths(source, chunk_size: int = 1024) -> list[np.ndarray]:
    """Reads `sentence_lengths` of every document of a data source, in batches of reads."""
    lengths = []
    for start in range(0, len(source), chunk_size):
        keys = list(range(start, min(start + chunk_size, len(source))))
        examples = source.__getitems__(keys) if hasattr(source, "__getitems__") else [source[k] for k in keys]
        lengths.extend(np.asarray(ex["sentence_lengths"]) for ex in examples)
    return lengths


def index_instances(sentence_lengths_per_doc: Sequence[np.ndarray], max_seq_length: int,
                    short_seq_prob: float, seed: int) -> np.ndarray:
    """Chunks every document into runs of consecutive sentences, as google-research/bert does.

    A chunk grows until its tokens reach a target length: `max_seq_length - 3` (room for [CLS] and two
    [SEP]), or with probability `short_seq_prob` a random length in [2, max_seq_length - 3], so the
    model also sees short sequences. A document's last chunk may be shorter.

    Returns: int64 [num_instances, 4], rows (doc, first_sentence, end_sentence, target_length) with
    `end_sentence` exclusive. `target_length` tells a NotNext B how much text to take.
    """
    max_num_tokens = max_seq_length - 3
    rng = np.random.default_rng(seed)

    def draw_target() -> int:
        if rng.random() < short_seq_prob:
            return int(rng.integers(2, max_num_tokens + 1))
        return max_num_tokens

    rows = []
    for doc, lengths in enumerate(sentence_lengths_per_doc):
        num_sentences, first, current, target = len(lengths), 0, 0, draw_target()
        for i, length in enumerate(lengths.tolist()):
            current += length
            if i == num_sentences - 1 or current >= target:
                rows.append((doc, first, i + 1, target))
                first, current, target = i + 1, 0, draw_target()
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def truncate_seq_pair(num_a: int, num_b: int, max_num_tokens: int,
                      rng: np.random.Generator) -> tuple[slice, slice]:
    """google-research/bert's `truncate_seq_pair` on lengths: returns the slices of A and B to keep.

    While the pair is too long, the longer side (B on a tie) loses one token, from its front or its
    back at random, so neither side is always cut at the same end.
    """
    bounds = [[0, num_a], [0, num_b]]  # [start, end) of A and of B
    excess = num_a + num_b - max_num_tokens
    if excess > 0:
        for from_front in (rng.random(excess) < 0.5).tolist():
            side = bounds[0] if bounds[0][1] - bounds[0][0] > bounds[1][1] - bounds[1][0] else bounds[1]
            if from_front:
                side[0] += 1
            else:
                side[1] -= 1
    return slice(*bounds[0]), slice(*bounds[1])


def make_sentence_pair(source, chunk: np.ndarray, rng: np.random.Generator, num_docs: int,
                       max_seq_length: int) -> dict[str, Any]:
    """Builds one NSP example `[CLS] A [SEP] B [SEP]` + padding from a chunk of `index_instances`.

    A is the chunk's first 1..n-1 sentences. B is, with probability 0.5 or always for a one-sentence
    chunk, text from a random other document starting at a random sentence (label NotNext = 1), else
    the rest of the chunk (label IsNext = 0). Needs `num_docs >= 2`.

    Returns int32 arrays `input_ids`, `segment_ids`, `attention_mask` [max_seq_length], scalars
    `next_sentence_labels`, and `a_doc`, `b_doc` (the documents A and B came from).
    """
    doc, first, end, target = (int(x) for x in chunk[:4])
    document = source[doc]
    tokens, offsets = document["tokens"], _offsets(document["sentence_lengths"])
    num_sentences = end - first
    a_end = first + (int(rng.integers(1, num_sentences)) if num_sentences >= 2 else 1)
    tokens_a = tokens[offsets[first]:offsets[a_end]]
    if num_sentences == 1 or rng.random() < 0.5:
        label = NOT_NEXT
        b_doc = int(rng.integers(0, num_docs - 1))
        b_doc += b_doc >= doc  # any document but this one, uniformly
        other = source[b_doc]
        other_offsets = _offsets(other["sentence_lengths"])
        start = int(rng.integers(0, len(other_offsets) - 1))
        # Take sentences from `start` until B reaches the chunk's target (at least one sentence).
        filled = other_offsets[start + 1:] - other_offsets[start]  # [num_candidate_sentences]
        count = min(int(np.searchsorted(filled, target - len(tokens_a))) + 1, len(filled))
        tokens_b = other["tokens"][other_offsets[start]:other_offsets[start + count]]
    else:
        label, b_doc = IS_NEXT, doc
        tokens_b = tokens[offsets[a_end]:offsets[end]]
    keep_a, keep_b = truncate_seq_pair(len(tokens_a), len(tokens_b), max_seq_length - 3, rng)
    tokens_a, tokens_b = tokens_a[keep_a], tokens_b[keep_b]

    num_a, num_b = len(tokens_a) + 2, len(tokens_b) + 1  # with [CLS] A [SEP], and B [SEP]
    input_ids = np.full(max_seq_length, PAD_ID, np.int32)  # [max_seq_length]
    input_ids[:num_a + num_b] = np.concatenate([[CLS_ID], tokens_a, [SEP_ID], tokens_b, [SEP_ID]])
    segment_ids = np.zeros(max_seq_length, np.int32)  # [max_seq_length]
    segment_ids[num_a:num_a + num_b] = 1
    attention_mask = np.zeros(max_seq_length, np.int32)  # [max_seq_length]
    attention_mask[:num_a + num_b] = 1
    return {
        "input_ids": input_ids,
        "segment_ids": segment_ids,
        "attention_mask": attention_mask,
        "next_sentence_labels": np.int32(label),
        "a_doc": np.int32(doc),
        "b_doc": np.int32(b_doc),
    }


def _offsets(sentence_lengths: np.ndarray) -> np.ndarray:
    """[num_sentences + 1] start of each sentence in the document's tokens, then the total."""
    return np.concatenate([[0], np.cumsum(sentence_lengths)])


class _SentencePairs(grain.transforms.RandomMap):
    """Grain transform: chunk -> training features; a class so worker processes can pickle it."""

    def __init__(self, source, num_docs: int, max_seq_length: int):
        self._source, self._num_docs, self._max_seq_length = source, num_docs, max_seq_length

    def random_map(self, chunk: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        example = make_sentence_pair(self._source, chunk, rng, self._num_docs, self._max_seq_length)
        return {key: example[key] for key in _FEATURE_KEYS}


def _check_source(source) -> None:
    if len(source) < 2:
        raise InputError(f"next-sentence prediction needs at least 2 documents, the split has {len(source)}; "
                         "give more text with blank lines between documents.")


def make_pretraining_iterator(source, *, max_seq_length: int, short_seq_prob: float, batch_size: int,
                              seed: int, shuffle: bool = True, num_epochs: int | None = None,
                              process_index: int = 0, process_count: int = 1,
                              num_workers: int = 0) -> grain.DatasetIterator:
    """Endless (or `num_epochs`) NSP batches for this process, resumable with get_state/set_state.

    Each epoch visits every chunk once in a new order with a new A/B split; the example at a position
    depends only on `seed` and that position, and process `i` takes positions `i::process_count`, so
    processes never overlap and any process count sees the same global stream. `batch_size` is per
    process. Yields {'input_ids', 'segment_ids', 'attention_mask': int32 [batch, seq],
    'next_sentence_labels': int32 [batch]}.
    """
    _check_source(source)
    instances = index_instances(load_sentence_lengths(source), max_seq_length, short_seq_prob, seed)
    dataset = grain.MapDataset.source(instances).seed(seed)
    if shuffle:
        dataset = dataset.shuffle()  # before repeat: each epoch reshuffles, epochs never mix
    dataset = dataset.repeat(num_epochs)
    dataset = dataset.random_map(_SentencePairs(source, len(source), max_seq_length))
    dataset = dataset[process_index::process_count]
    dataset = dataset.batch(batch_size, drop_remainder=True).to_iter_dataset()
    if num_workers > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(dataset)


def make_eval_batches(source, *, max_seq_length: int, batch_size: int, num_examples: int, seed: int = 0,
                      short_seq_prob: float = 0.1) -> list[dict[str, np.ndarray]]:
    """A fixed evaluation set: the same `num_examples` NSP examples on every call, in batches.

    The examples are the first `num_examples` chunks of a seeded shuffle (spread over the whole
    split), each built with its own fixed rng; fewer if the split has fewer chunks. The last batch is
    filled with all-padding rows; `example_weights` float32 [batch] is 1 for real rows and 0 for
    those, so each real example counts exactly once in the metrics.
    """
    _check_source(source)
    instances = index_instances(load_sentence_lengths(source), max_seq_length, short_seq_prob, seed)
    chosen = np.random.default_rng(seed).permutation(len(instances))[:num_examples]
    examples = [make_sentence_pair(source, instances[i], np.random.default_rng([seed, int(i)]), len(source),
                                   max_seq_length) for i in chosen]
    padding = {"input_ids": np.full(max_seq_length, PAD_ID, np.int32),
               "segment_ids": np.zeros(max_seq_length, np.int32),
               "attention_mask": np.zeros(max_seq_length, np.int32),
               "next_sentence_labels": np.int32(0)}
    batches = []
    for start in range(0, len(examples), batch_size):
        rows = examples[start:start + batch_size]
        weights = np.zeros(batch_size, np.float32)  # [batch]
        weights[:len(rows)] = 1.0
        rows = rows + [padding] * (batch_size - len(rows))
        batch = {key: np.stack([row[key] for row in rows]) for key in _FEATURE_KEYS}
        batch["example_weights"] = weights
        batches.append(batch)
    return batches
