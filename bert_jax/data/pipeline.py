"""BERT, ALBERT and RoBERTa pretraining examples, built on the fly by one Grain pipeline.

Follows google-research/bert `create_pretraining_data.py`, split in two so that nothing is written to
disk per epoch: `index_instances` chunks each document into runs of consecutive sentences once (it
reads only sentence lengths), and `make_sentence_pair` turns a chunk into `[CLS] A [SEP] B [SEP]` with
a fresh random split and partner every time Grain visits it. Masking happens later, on the device, so
batches here carry no MLM labels, only `mask_seeds` for static masking.

Options, as in the papers:
  objective 'mlm_nsp' (BERT): B is the chunk's rest (IsNext) or text of another document (NotNext).
  objective 'mlm_sop' (ALBERT): A and B are the chunk's two halves, swapped half of the time.
  objective 'mlm' (RoBERTa): no pair task; a chunk is one segment `[CLS] chunk [SEP]`, or with
    instance_format 'full_sentences' a pack of whole sentences across documents (`full_sentences.py`).
  objective 'mlm_sbo' (SpanBERT): the instances of 'mlm'; the span boundaries come from the device's masks.
  objective 'electra' (ELECTRA): the instances of 'mlm'; the replacements are made on the device.
  dynamic_masking=False (BERT's precomputed data): an example depends only on (seed, instance,
    epoch mod dupe_factor), never on where the stream visits it, so the data repeat every
    `dupe_factor` epochs and `mask_seeds` tells the device to repeat the masks with them.
  pack_sequences (MLPerf BERT): several built instances share one row (`sequence_packing.py`).

Differences from the original, on purpose: each chunk draws its own target length (the original
draws one per document), and a NotNext B never puts the chunk's unused sentences back, because the
chunking is fixed before any pair is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grain
import numpy as np
from absl import logging

from bert_jax.config import SINGLE_SEGMENT_OBJECTIVES, InputError
from bert_jax.data import mixture, sequence_packing
from bert_jax.data.full_sentences import full_sentence_pieces, index_packs
from bert_jax.data.languages import LanguageSources
from bert_jax.data.sequence_packing import PackedInstances
from bert_jax.data.vocab import DEFAULT_SPECIAL_IDS, SpecialIds

# Columns of the instance index.
DOC, FIRST_SENTENCE, END_SENTENCE, TARGET_LENGTH = range(4)
IS_NEXT, NOT_NEXT = 0, 1  # next_sentence_labels for NSP, as in BERT and HF
IN_ORDER, SWAPPED = 0, 1  # next_sentence_labels for SOP, as in ALBERT
OBJECTIVES = ("mlm_nsp", "mlm_sop", "mlm", "mlm_sbo", "electra")
INSTANCE_FORMATS = ("sentence_pairs", "full_sentences", "translation_pairs")

_FEATURE_KEYS = ("input_ids", "segment_ids", "attention_mask", "next_sentence_labels")
_PACKED_PREFETCH = 4  # packed batches built ahead in a background thread when there are no workers
_MASK_SEED_DOMAIN = 0x6D61736B  # "mask": keeps mask seeds apart from other hashes of the same numbers


def load_sentence_lengths(source, chunk_size: int = 1024) -> list[np.ndarray]:
    """Reads `sentence_lengths` of every document of a data source, in batches of reads."""
    lengths = []
    for start in range(0, len(source), chunk_size):
        keys = list(range(start, min(start + chunk_size, len(source))))
        examples = source.__getitems__(keys) if hasattr(source, "__getitems__") else [source[k] for k in keys]
        lengths.extend(np.asarray(ex["sentence_lengths"]) for ex in examples)
    return lengths


def index_instances(sentence_lengths_per_doc: Sequence[np.ndarray], max_seq_length: int,
                    short_seq_prob: float, seed: int, num_special_tokens: int = 3) -> np.ndarray:
    """Chunks every document into runs of consecutive sentences, as google-research/bert does.

    A chunk grows until its tokens reach a target length: `max_seq_length - num_special_tokens` (3 for
    [CLS] A [SEP] B [SEP], 2 for one segment), or with probability `short_seq_prob` a random length in
    [2, that], so the model also sees short sequences. A document's last chunk may be shorter.

    Returns: int64 [num_instances, 4], rows (doc, first_sentence, end_sentence, target_length) with
    `end_sentence` exclusive. `target_length` tells a NotNext B how much text to take.
    """
    max_num_tokens = max_seq_length - num_special_tokens
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
                       max_seq_length: int, objective: str = "mlm_nsp",
                       special_ids: SpecialIds = DEFAULT_SPECIAL_IDS) -> dict[str, Any]:
    """Builds one pair example `[CLS] A [SEP] B [SEP]` + padding from a chunk of `index_instances`.

    A is the chunk's first 1..n-1 sentences. 'mlm_nsp': B is, with probability 0.5 or always for a
    one-sentence chunk, text from a random other document starting at a random sentence (label
    NotNext = 1; needs `num_docs >= 2`), else the rest of the chunk (label IsNext = 0). 'mlm_sop': B
    is always the rest of the chunk (a one-sentence chunk is cut inside its sentence), and after
    truncation A and B trade places with probability 0.5 (label Swapped = 1), so a negative holds
    exactly the tokens of its positive. A one-token chunk has an empty B and is never swapped.

    Returns int32 arrays `input_ids`, `segment_ids`, `attention_mask` [max_seq_length], scalars
    `next_sentence_labels`, and `a_doc`, `b_doc` (the documents A and B came from).
    """
    if objective not in ("mlm_nsp", "mlm_sop"):
        raise ValueError(f"make_sentence_pair builds NSP or SOP pairs, not objective={objective!r}.")
    doc, first, end, target = (int(x) for x in chunk[:4])
    document = source[doc]
    tokens, offsets = document["tokens"], _offsets(document["sentence_lengths"])
    num_sentences = end - first
    a_end = first + (int(rng.integers(1, num_sentences)) if num_sentences >= 2 else 1)
    split = offsets[a_end]
    if objective == "mlm_sop" and num_sentences == 1 and offsets[end] - offsets[first] >= 2:
        split = offsets[first] + int(rng.integers(1, offsets[end] - offsets[first]))
    tokens_a, b_doc = tokens[offsets[first]:split], doc
    if objective == "mlm_nsp" and (num_sentences == 1 or rng.random() < 0.5):
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
        label = IS_NEXT  # == IN_ORDER
        tokens_b = tokens[split:offsets[end]]
    keep_a, keep_b = truncate_seq_pair(len(tokens_a), len(tokens_b), max_seq_length - 3, rng)
    tokens_a, tokens_b = tokens_a[keep_a], tokens_b[keep_b]
    if objective == "mlm_sop" and len(tokens_b) and rng.random() < 0.5:
        label, tokens_a, tokens_b = SWAPPED, tokens_b, tokens_a
    return _layout([tokens_a, tokens_b], [0, 1], max_seq_length, special_ids) | {
        "next_sentence_labels": np.int32(label), "a_doc": np.int32(doc), "b_doc": np.int32(b_doc)}


def make_single_segment(source, chunk: np.ndarray, rng: np.random.Generator, max_seq_length: int,
                        special_ids: SpecialIds = DEFAULT_SPECIAL_IDS) -> dict[str, Any]:
    """Builds `[CLS] chunk [SEP]` + padding for MLM alone; a long chunk loses tokens at random ends.

    Returns the features of `make_sentence_pair`, with `next_sentence_labels` 0 and no segment 1.
    """
    doc, first, end = (int(x) for x in chunk[:3])
    document = source[doc]
    offsets = _offsets(document["sentence_lengths"])
    tokens = document["tokens"][offsets[first]:offsets[end]]
    keep, _ = truncate_seq_pair(len(tokens), 0, max_seq_length - 2, rng)
    return _layout([tokens[keep]], [0], max_seq_length, special_ids) | {
        "next_sentence_labels": np.int32(0), "a_doc": np.int32(doc), "b_doc": np.int32(doc)}


def _layout(pieces: Sequence[np.ndarray], segments: Sequence[int], max_seq_length: int,
            special_ids: SpecialIds = DEFAULT_SPECIAL_IDS) -> dict[str, np.ndarray]:
    """`[CLS] piece [SEP] piece [SEP] ...` + padding; each piece and its [SEP] get that piece's segment id."""
    ids, segment_ids = [np.asarray([special_ids.cls])], [np.zeros(1, np.int64)]
    for piece, segment in zip(pieces, segments):
        ids += [piece, np.asarray([special_ids.sep])]
        segment_ids.append(np.full(len(piece) + 1, segment))
    length = sum(map(len, ids))
    input_ids = np.full(max_seq_length, special_ids.pad, np.int32)  # [max_seq_length]
    input_ids[:length] = np.concatenate(ids)
    segment_row = np.zeros(max_seq_length, np.int32)  # [max_seq_length]
    segment_row[:length] = np.concatenate(segment_ids)
    attention_mask = np.zeros(max_seq_length, np.int32)  # [max_seq_length]
    attention_mask[:length] = 1
    return {"input_ids": input_ids, "segment_ids": segment_row, "attention_mask": attention_mask}


def _offsets(sentence_lengths: np.ndarray) -> np.ndarray:
    """[num_sentences + 1] start of each sentence in the document's tokens, then the total."""
    return np.concatenate([[0], np.cumsum(sentence_lengths)])


def mask_seed(seed: int, instance: int, copy: int) -> np.int32:
    """A 31-bit hash of (seed, instance, copy): the same example copy gets the same masks on any host."""
    state = np.random.SeedSequence([_MASK_SEED_DOMAIN, seed, instance, copy]).generate_state(1)
    return np.int32(state[0] >> 1)


class _InstanceBuilder:
    """Instance index + rng -> features, for every objective and format; picklable for Grain workers.

    The index (chunks or packs) is computed once here, from sentence lengths only.
    """

    def __init__(self, source, *, max_seq_length: int, short_seq_prob: float, seed: int, objective: str,
                 instance_format: str, special_ids: SpecialIds):
        self._source, self._max_seq_length, self._objective = source, max_seq_length, objective
        self._special_ids = special_ids
        self._packed = instance_format == "full_sentences"
        lengths = load_sentence_lengths(source)
        if self._packed:
            self.index = index_packs(lengths, max_seq_length)  # [num_instances, 4]
        else:
            num_special_tokens = 2 if objective in SINGLE_SEGMENT_OBJECTIVES else 3
            self.index = index_instances(lengths, max_seq_length, short_seq_prob, seed, num_special_tokens)

    def __len__(self) -> int:
        return len(self.index)

    def __call__(self, instance: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        row = self.index[instance]
        if self._packed:
            pieces = full_sentence_pieces(self._source, row)
            example = _layout(pieces, [0] * len(pieces), self._max_seq_length, self._special_ids)
            example["next_sentence_labels"] = np.int32(0)
        elif self._objective in SINGLE_SEGMENT_OBJECTIVES:
            example = make_single_segment(self._source, row, rng, self._max_seq_length, self._special_ids)
        else:
            example = make_sentence_pair(self._source, row, rng, len(self._source), self._max_seq_length,
                                         self._objective, self._special_ids)
        return {key: example[key] for key in _FEATURE_KEYS}


class _LanguageBuilder:
    """The instances of several languages as one range: language l's local instance i is instance
    offsets[l] + i, and its features carry `languages` = l (int32). Picklable for Grain workers."""

    def __init__(self, builders: Sequence[_InstanceBuilder]):
        self.builders = list(builders)
        self.offsets = np.concatenate([[0], np.cumsum([len(b) for b in self.builders])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __call__(self, instance: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        language = int(np.searchsorted(self.offsets, instance, side="right")) - 1
        example = self.builders[language](instance - int(self.offsets[language]), rng)
        return example | {"languages": np.int32(language)}


class _MixtureInstances(grain.transforms.MapWithIndex):
    """Stream position -> (language builder's instance, visit) by `mixture.Mixture`: which language, which
    of its instances, and how many times the language's walk has been through all of them before."""

    def __init__(self, mix: mixture.Mixture, offsets: np.ndarray):
        self._mix, self._offsets = mix, offsets

    def map_with_index(self, index: int, _) -> np.ndarray:
        language, local, visit = self._mix.locate(index)
        return np.asarray([self._offsets[language] + local, visit], np.int64)  # [2]


class _DynamicInstances(grain.transforms.RandomMap):
    """Dynamic masking: a new example from the stream position's rng; keeps the instance for its mask seed."""

    def __init__(self, build: _InstanceBuilder):
        self._build = build

    def random_map(self, instance: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        instance = np.asarray(instance).reshape(-1)[0]  # a mixture's [instance, visit], or the instance
        return self._build(int(instance), rng) | {"instance": instance}


class _DynamicMaskSeeds(grain.transforms.MapWithIndex):
    """Adds `mask_seeds` hashed from (seed, instance, epoch); the trainer ignores them when dynamic."""

    def __init__(self, seed: int, num_instances: int):
        self._seed, self._num_instances = seed, num_instances

    def map_with_index(self, index: int, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        example = dict(example)
        instance = int(example.pop("instance"))
        example["mask_seeds"] = mask_seed(self._seed, instance, index // self._num_instances)
        return example


class _StaticInstances(grain.transforms.MapWithIndex):
    """Static masking: example and mask seed from (seed, instance, epoch mod dupe_factor) alone.

    `index` is the position in the repeated stream (this map runs after `repeat`, before sharding), so
    `index // num_instances` is the epoch however the epoch was shuffled. From a language mixture the
    element is [instance, visit], and the copy is the visit: each instance gets `dupe_factor` masks over
    its own visits, however often its language is sampled.
    """

    def __init__(self, build: _InstanceBuilder | _LanguageBuilder, seed: int, dupe_factor: int):
        self._build, self._seed, self._dupe_factor = build, seed, dupe_factor

    def map_with_index(self, index: int, instance: np.ndarray) -> dict[str, np.ndarray]:
        instance = np.asarray(instance).reshape(-1)
        visit = int(instance[1]) if len(instance) == 2 else index // len(self._build)
        instance, copy = int(instance[0]), visit % self._dupe_factor
        example = self._build(instance, np.random.default_rng([self._seed, instance, copy]))
        example["mask_seeds"] = mask_seed(self._seed, instance, copy)
        return example


class _ProcessRows(grain.MapDataset):
    """This process's rows of every global batch: process i of P takes rows [i*L, (i+1)*L) of each
    block of P*L consecutive examples (L = the per-process batch size).

    So the global batch, assembled from the processes' parts in process order, holds the same examples
    in the same order whatever the process count, and a run on 2 hosts computes what a run on 1 does.
    """

    def __init__(self, parent: grain.MapDataset, process_index: int, process_count: int, rows: int):
        super().__init__(parent)
        self._index, self._count, self._rows = process_index, process_count, rows

    def __len__(self) -> int:
        return len(self._parent) // self._count

    def _global_index(self, index: int) -> int:
        block, row = divmod(index, self._rows)
        return block * self._rows * self._count + self._index * self._rows + row

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._global_index(index)]

    def __str__(self) -> str:
        return f"_ProcessRows(process {self._index} of {self._count}, {self._rows} rows)"


def _check_options(source, objective: str, instance_format: str, pack_sequences: bool = False,
                   max_instances_per_pack: int = 1) -> None:
    if objective not in OBJECTIVES:
        raise InputError(f"config.objective={objective!r} is not one of {OBJECTIVES}.")
    if instance_format not in INSTANCE_FORMATS:
        raise InputError(f"config.data.instance_format={instance_format!r} is not one of {INSTANCE_FORMATS}.")
    if instance_format == "full_sentences" and objective not in SINGLE_SEGMENT_OBJECTIVES:
        raise InputError(f"config.data.instance_format='full_sentences' packs sentences across documents, so it "
                         f"has no sentence pairs for config.objective={objective!r}; use one of "
                         f"{SINGLE_SEGMENT_OBJECTIVES} with it, or config.data.instance_format='sentence_pairs' for NSP or SOP.")
    if instance_format == "translation_pairs" and (objective != "mlm" or not hasattr(source, "instance_builder")):
        raise InputError("config.data.instance_format='translation_pairs' builds XLM's TLM rows from a parallel corpus "
                         f"(config.data.parallel_corpus) with config.objective='mlm'; got objective {objective!r} and "
                         f"{type(source).__name__} data (a monolingual corpus has no translation pairs).")
    if pack_sequences and instance_format != "sentence_pairs":
        raise InputError("config.data.pack_sequences packs sentence-pair instances, but "
                         f"config.data.instance_format is {instance_format!r}, whose rows are already full; "
                         "turn pack_sequences off.")
    if pack_sequences and max_instances_per_pack < 1:
        raise InputError(f"config.data.max_instances_per_pack must be at least 1, got {max_instances_per_pack}.")
    if objective == "mlm_nsp" and len(source) < 2:
        raise InputError(f"next-sentence prediction needs at least 2 documents, the split has {len(source)}; "
                         "give more text with blank lines between documents.")


def not_next_fraction(index: np.ndarray) -> float:
    """The share of NSP pairs that will be NotNext: a one-sentence chunk (a one-sentence document, or a
    sentence as long as the target) always is, any other half the time."""
    one_sentence = float(np.mean(index[:, 2] - index[:, 1] == 1)) if len(index) else 0.0
    return one_sentence + 0.5 * (1.0 - one_sentence)


def _report_not_next_fraction(index: np.ndarray) -> None:
    """Degenerate text (documents of one sentence) makes almost every pair NotNext, so nsp_acc near 1.0
    says nothing: said once, with the figure, when the run starts."""
    fraction = not_next_fraction(index)
    if fraction > 0.75:
        logging.warning("%.0f%% of the NSP pairs will be NotNext (50%% is BERT's): most chunks are a single "
                        "sentence, so nsp accuracy measures little; give documents of several sentences, one "
                        "sentence per line with blank lines between documents, or use config.objective='mlm'.",
                        100 * fraction)
    else:
        logging.info("%.1f%% of the NSP pairs will be NotNext.", 100 * fraction)


def _builder(source, *, max_seq_length: int, short_seq_prob: float, seed: int, objective: str, instance_format: str,
             special_ids: SpecialIds):
    """The instance builder of a split: `_InstanceBuilder`, or the one a parallel corpus's source gives
    (`translation_pairs.ParallelSource`, XLM's TLM rows), which has the same interface."""
    if instance_format == "translation_pairs":
        return source.instance_builder(max_seq_length=max_seq_length, special_ids=special_ids)
    return _InstanceBuilder(source, max_seq_length=max_seq_length, short_seq_prob=short_seq_prob, seed=seed,
                            objective=objective, instance_format=instance_format, special_ids=special_ids)


def make_pretraining_iterator(source, *, max_seq_length: int, short_seq_prob: float, batch_size: int,
                              seed: int, shuffle: bool = True, num_epochs: int | None = None,
                              process_index: int = 0, process_count: int = 1, num_workers: int = 0,
                              objective: str = "mlm_nsp", instance_format: str = "sentence_pairs",
                              dynamic_masking: bool = True, dupe_factor: int = 10,
                              special_ids: SpecialIds = DEFAULT_SPECIAL_IDS, pack_sequences: bool = False,
                              max_instances_per_pack: int = 3, language_alpha: float = 0.7) -> grain.DatasetIterator:
    """Endless (or `num_epochs`) batches for this process, resumable with get_state/set_state.

    Instances are chunks of `index_instances` ('sentence_pairs') or packs of `index_packs`
    ('full_sentences', which ignores `short_seq_prob`: RoBERTa fills every sequence). Each epoch
    visits every instance once in a new order. With `dynamic_masking` the example at a
    position depends only on `seed` and that position (a new A/B split every epoch); without it, only
    on (seed, instance, epoch mod dupe_factor). Process `i` takes positions `i::process_count`, so
    processes never overlap and any process count sees the same global stream. `batch_size` is per
    process. `special_ids` are the tokenizer's [CLS]/[SEP]/[PAD]. Yields {'input_ids', 'segment_ids',
    'attention_mask': int32 [batch, seq],
    'next_sentence_labels', 'mask_seeds': int32 [batch]}; 'translation_pairs' (a ParallelSource) adds
    'position_ids' and 'language_ids': int32 [batch, seq] (see translation_pairs.py).

    With `pack_sequences`, up to `max_instances_per_pack` (K) whole instances share each row and
    batches hold `instance_packing.PACKED_FEATURE_KEYS`: 'input_ids', 'segment_ids', 'attention_mask'
    (k-th instance k, padding 0), 'position_ids': int32 [batch, seq]; 'pair_positions',
    'next_sentence_labels': int32 and 'pair_weights': float32 [batch, K]; 'mask_seeds': int32 [batch].
    Then process `i` packs its own instances, those at positions `i::process_count` of the stream:
    processes stay disjoint and together complete, but the global batch depends on the process count
    (and on `num_workers`, as each worker packs a slice of the process's instances).

    A multilingual `source` (`languages.LanguageSources`) is sampled by language: language i with
    probability q_i proportional to p_i^language_alpha (p_i: its share of the instances), exactly
    round(q_i * N) of each epoch's N = all-instances positions, by `mixture.Mixture` (`shuffle` is implied);
    each unpacked row carries its int32 `languages` id (packed rows may mix languages and carry none).
    A `tlm_mixture.MixedSource` mixes monolingual rows and translation pairs by its tlm_ratio the same way.
    """
    if not dynamic_masking and dupe_factor < 1:
        raise InputError(f"config.masking.dupe_factor must be at least 1 for static masking, got {dupe_factor}.")
    options = {"max_seq_length": max_seq_length, "short_seq_prob": short_seq_prob, "seed": seed,
               "objective": objective, "instance_format": instance_format, "special_ids": special_ids}
    if hasattr(source, "mixed_stream"):  # tlm_mixture.MixedSource: XLM's MLM and TLM rows in one stream
        build, dataset = source.mixed_stream(options, language_alpha)
        dataset = dataset.repeat(num_epochs)
    elif isinstance(source, LanguageSources):
        build, dataset = _language_stream(source, options, language_alpha, pack_sequences, max_instances_per_pack)
        dataset = dataset.repeat(num_epochs)
    else:
        _check_options(source, objective, instance_format, pack_sequences, max_instances_per_pack)
        build = _builder(source, **options)
        dataset = grain.MapDataset.source(np.arange(len(build))).seed(seed)
        if shuffle:
            dataset = dataset.shuffle()  # before repeat: each epoch reshuffles, epochs never mix
        dataset = dataset.repeat(num_epochs)
    if objective == "mlm_nsp" and instance_format == "sentence_pairs":
        _report_not_next_fraction(np.concatenate([b.index for b in getattr(build, "builders", [build])]))
    if dynamic_masking:
        dataset = dataset.random_map(_DynamicInstances(build))
        dataset = dataset.map_with_index(_DynamicMaskSeeds(seed, len(build)))
    else:
        dataset = dataset.map_with_index(_StaticInstances(build, seed, dupe_factor))
    if pack_sequences:
        dataset = PackedInstances(dataset[process_index::process_count], max_seq_length=max_seq_length,
                                  max_instances_per_pack=max_instances_per_pack, pad_id=special_ids.pad)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        if num_workers == 0:  # pack in a background thread, as the unpacked path reads in threads
            dataset = grain.experimental.ThreadPrefetchIterDataset(dataset, prefetch_buffer_size=_PACKED_PREFETCH)
    else:
        dataset = _ProcessRows(dataset, process_index, process_count, batch_size)
        dataset = dataset.batch(batch_size, drop_remainder=True).to_iter_dataset()
    if num_workers > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(dataset)


def _language_builders(source: LanguageSources, options: dict, pack_sequences: bool = False,
                       max_instances_per_pack: int = 1) -> _LanguageBuilder:
    for language, language_source in zip(source.languages, source.sources):
        try:
            _check_options(language_source, options["objective"], options["instance_format"], pack_sequences,
                           max_instances_per_pack)
        except InputError as e:
            raise InputError(f"language {language!r}: {e}") from None
    return _LanguageBuilder([_InstanceBuilder(s, **options) for s in source.sources])


def _language_stream(source: LanguageSources, options: dict, alpha: float, pack_sequences: bool,
                     max_instances_per_pack: int) -> tuple[_LanguageBuilder, grain.MapDataset]:
    """(the languages' builder, one epoch of [instance, visit] elements): languages sampled with
    q_i proportional to p_i^alpha over the instances, by `mixture.Mixture` (which also does the shuffling)."""
    build = _language_builders(source, options, pack_sequences, max_instances_per_pack)
    sizes = [len(b) for b in build.builders]
    if min(sizes) == 0:
        empty = source.languages[sizes.index(0)]
        raise InputError(f"language {empty!r} has no training instances; give it text or leave it out.")
    mix = mixture.Mixture(sizes, mixture.alpha_weights(sizes, alpha), seed=options["seed"])
    check_not_starved(mix, source.languages, "lower config.data.language_alpha (0: every language alike) or give "
                      "it more text")
    _log_sampling_table(source.languages, mix, alpha)
    dataset = grain.MapDataset.range(len(mix)).seed(options["seed"])
    return build, dataset.map_with_index(_MixtureInstances(mix, build.offsets))


def check_not_starved(mix: mixture.Mixture, names: Sequence[str], fix: str) -> None:
    """Refuses a mixture in which a component would never be drawn: its share of an epoch rounds to no row."""
    starved = [names[i] for i in mix.starved()]
    if starved:
        raise InputError(f"{', '.join(map(repr, starved))} would get no row in an epoch of {len(mix):,} rows (its "
                         f"sampling share rounds to 0), so it would never be trained on; {fix}.")


def _log_sampling_table(languages: Sequence[str], mix: mixture.Mixture, alpha: float) -> None:
    """The languages' shares of the instances (p_i) and of the stream (q_i), said once when the run starts."""
    width = max(8, *map(len, languages))
    lines = [f"{'language':<{width}} {'instances':>10} {'p_i':>7} {'q_i':>7} {'epochs/pass':>11}"]
    for language, row in zip(languages, mix.table()):
        lines.append(f"{language:<{width}} {row['instances']:>10,} {row['p']:>7.4f} {row['q']:>7.4f} "
                     f"{row['epochs_per_pass']:>11.2f}")
    logging.info("Sampling %d languages with q_i proportional to p_i^%g (config.data.language_alpha):\n%s",
                 len(languages), alpha, "\n".join(lines))


def iterator_from_config(config, source, special_ids: SpecialIds, batch_size: int, *, process_index: int,
                         process_count: int, num_workers: int | None = None) -> grain.DatasetIterator:
    """`make_pretraining_iterator` as a run's config asks for it: this process's `batch_size` rows
    (training and the benchmark's pipeline measurement build it the same way)."""
    return make_pretraining_iterator(
        source, max_seq_length=config.data.max_seq_length, short_seq_prob=config.data.short_seq_prob,
        batch_size=batch_size, seed=config.train.seed, process_index=process_index, process_count=process_count,
        num_workers=config.data.num_workers if num_workers is None else num_workers, objective=config.objective,
        instance_format=config.data.instance_format, dynamic_masking=config.masking.dynamic,
        dupe_factor=config.masking.dupe_factor, special_ids=special_ids,
        pack_sequences=config.data.pack_sequences, max_instances_per_pack=config.data.max_instances_per_pack,
        language_alpha=config.data.language_alpha)


def _find_states(state, is_wanted) -> list[dict]:
    """The dicts of a (nested) iterator state for which `is_wanted` holds, outermost first, in order."""
    if isinstance(state, dict):
        if is_wanted(state):
            return [state]
        return [found for value in state.values() for found in _find_states(value, is_wanted)]
    if isinstance(state, list):
        return [found for value in state for found in _find_states(value, is_wanted)]
    return []


def _is_packing_state(state: dict) -> bool:
    return "open_rows" in state


def _is_batch_position(state: dict) -> bool:
    return set(state) == {"next_index"}


def examples_taken(state, batch_size: int) -> int | None:
    """How many examples of its stream an iterator had taken, read from a saved state of either layout
    (unpacked: batches of `batch_size` rows, summed over worker processes; packed: instances, those of
    open rows included), or None for a state of another form.

    A resume whose saved position belongs to another layout (packing toggled, another batch size or
    worker count) carries this number over instead of the state itself, which would not restore.
    """
    packing = _find_states(state, _is_packing_state)
    if packing:
        return sum(int(s["next_index"]) for s in packing)
    batches = _find_states(state, _is_batch_position)
    if not batches:
        return None
    return sum(int(s["next_index"]) for s in batches) * batch_size


def restart_at(train_iter, examples: int, *, pack_sequences: bool, batch_size: int) -> int | None:
    """Moves a new iterator `examples` into its stream without building what it skips; returns the
    position it starts at (rounded up to a whole batch of unpacked rows), or None if its layout cannot
    be moved there (several worker processes share the stream)."""
    if not pack_sequences:
        batches = -(-examples // batch_size)
        try:
            grain.experimental.set_next_index(train_iter, batches)
        except NotImplementedError:
            return None
        return batches * batch_size
    state = train_iter.get_state()
    packing = _find_states(state, _is_packing_state)
    if len(packing) != 1:
        return None
    new_state = sequence_packing.state_at(packing[0], examples)
    train_iter.set_state(new_state if packing[0] is state else _replaced(state, packing[0], new_state))
    return examples


def _replaced(state, old: dict, new: dict):
    """`state` with the dict `old` (found in it by identity) replaced by `new`."""
    if state is old:
        return new
    if isinstance(state, dict):
        return {key: _replaced(value, old, new) for key, value in state.items()}
    if isinstance(state, list):
        return [_replaced(value, old, new) for value in state]
    return state


def make_eval_batches(source, *, max_seq_length: int, batch_size: int, num_examples: int, seed: int = 0,
                      short_seq_prob: float = 0.1, objective: str = "mlm_nsp",
                      instance_format: str = "sentence_pairs",
                      special_ids: SpecialIds = DEFAULT_SPECIAL_IDS,
                      language_ids: Sequence[str] | None = None) -> list[dict[str, np.ndarray]]:
    """A fixed evaluation set: the same `num_examples` examples on every call, in batches.

    The examples are the first `num_examples` instances of a seeded shuffle (spread over the whole
    split), each built with its own fixed rng and `mask_seeds` (so its masks are fixed too); fewer if
    the split has fewer instances. The last batch is filled with all-padding rows; `example_weights`
    float32 [batch] is 1 for real rows and 0 for those, so each real example counts exactly once.

    A multilingual `source` gives `num_examples` of each language (so each has its own held-out figure),
    language by language, with int32 `languages` [batch]: the index of the language in `language_ids`
    (the run's languages; default: the source's own).
    """
    options = {"max_seq_length": max_seq_length, "short_seq_prob": short_seq_prob, "seed": seed,
               "objective": objective, "instance_format": instance_format, "special_ids": special_ids}
    padding = {"input_ids": np.full(max_seq_length, special_ids.pad, np.int32),
               "segment_ids": np.zeros(max_seq_length, np.int32),
               "attention_mask": np.zeros(max_seq_length, np.int32),
               "next_sentence_labels": np.int32(0), "mask_seeds": np.int32(0)}
    if hasattr(source, "eval_examples"):  # tlm_mixture.MixedSource
        examples = source.eval_examples(options, num_examples)
        padding["languages"] = np.int32(0)
    elif isinstance(source, LanguageSources):
        examples = _language_eval_examples(source, options, num_examples, language_ids)
        padding["languages"] = np.int32(0)
    else:
        _check_options(source, objective, instance_format)
        examples = fixed_examples(_builder(source, **options), seed, num_examples)
    for key in ("position_ids", "language_ids"):  # TLM rows carry them: the filler rows get zeros
        if examples and key in examples[0]:
            padding[key] = np.zeros(max_seq_length, np.int32)
    batches = []
    for start in range(0, len(examples), batch_size):
        rows = examples[start:start + batch_size]
        weights = np.zeros(batch_size, np.float32)  # [batch]
        weights[:len(rows)] = 1.0
        rows = rows + [padding] * (batch_size - len(rows))
        batch = {key: np.stack([row[key] for row in rows]) for key in padding}
        batch["example_weights"] = weights
        batches.append(batch)
    return batches


def fixed_examples(build, seed: int, num_examples: int, offset: int = 0) -> list[dict[str, np.ndarray]]:
    """The first `num_examples` instances of a seeded shuffle of `build`'s, each from its own fixed rng, with
    its mask seed (`offset` + instance keys it, so builders sharing a held-out set give distinct seeds)."""
    chosen = np.random.default_rng(seed).permutation(len(build))[:num_examples]
    return [build(int(i), np.random.default_rng([seed, int(i)])) | {"mask_seeds": mask_seed(seed, offset + int(i), 0)}
            for i in chosen]


def _language_eval_examples(source: LanguageSources, options: dict, num_examples: int,
                            language_ids: Sequence[str] | None) -> list[dict[str, np.ndarray]]:
    """`num_examples` fixed examples of each language of `source`, carrying their ids in `language_ids`."""
    language_ids = list(source.languages if language_ids is None else language_ids)
    unknown = [language for language in source.languages if language not in language_ids]
    if unknown:
        raise InputError(f"the evaluation text has languages {unknown} that the run was not trained on "
                         f"({language_ids}); evaluate on the run's languages.")
    build = _language_builders(source, options)
    seed, examples = options["seed"], []
    for language, language_build, offset in zip(source.languages, build.builders, build.offsets):
        language_id = language_ids.index(language)
        chosen = np.random.default_rng([seed, language_id]).permutation(len(language_build))[:num_examples]
        examples += [language_build(int(i), np.random.default_rng([seed, language_id, int(i)]))
                     | {"mask_seeds": mask_seed(seed, int(offset + i), 0), "languages": np.int32(language_id)}
                     for i in chosen]
    return examples


def padding_fraction(batches: Iterable[dict[str, np.ndarray]]) -> float:
    """Fraction of all positions that are padding (`attention_mask` 0): compute spent on nothing."""
    padded = total = 0
    for batch in batches:
        mask = np.asarray(batch["attention_mask"])  # [batch, seq]
        padded, total = padded + int((mask == 0).sum()), total + mask.size
    return padded / max(total, 1)
