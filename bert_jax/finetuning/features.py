"""Fine-tuning examples -> fixed-shape int32 arrays: [CLS] A [SEP] B [SEP] packing for classification,
first-sub-token labels for tagging, one packed pair per choice for multiple choice.

The formats are google-research/bert's `run_classifier.py` (pairs truncated longest-first, segment 0
for A and 1 for B) and the BERT paper's NER setup (a word's label on its first sub-token; the other
sub-tokens are not scored). SQuAD's sliding windows live in `qa.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bert_jax.config import InputError

IGNORED_LABEL = -1  # token-level label of positions that are not scored (sub-tokens, specials, padding)


def truncate_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int) -> None:
    """Trims the longer sequence one token at a time from its end until both fit (in place)."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        longer.pop()


def pack_pair(tokens_a: Sequence[int], tokens_b: Sequence[int] | None, special_ids,
              max_seq_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, segment_ids, attention_mask), each [max_seq_length] int32, of truncated token lists."""
    ids = [special_ids.cls, *tokens_a, special_ids.sep]
    segments = [0] * len(ids)
    if tokens_b is not None:
        ids += [*tokens_b, special_ids.sep]
        segments += [1] * (len(tokens_b) + 1)
    input_ids = np.full((max_seq_length,), special_ids.pad, np.int32)
    segment_ids = np.zeros((max_seq_length,), np.int32)
    attention_mask = np.zeros((max_seq_length,), np.int32)
    input_ids[:len(ids)] = ids
    segment_ids[:len(ids)] = segments
    attention_mask[:len(ids)] = 1
    return input_ids, segment_ids, attention_mask


def _encode_pair(tokenizer, text_a: str, text_b: str | None, max_seq_length: int):
    tokens_a = tokenizer.encode(text_a)
    tokens_b = tokenizer.encode(text_b) if text_b is not None else None
    if tokens_b is None:
        del tokens_a[max_seq_length - 2:]
    else:
        truncate_pair(tokens_a, tokens_b, max_seq_length - 3)
    return pack_pair(tokens_a, tokens_b, tokenizer.special_ids, max_seq_length)


def _stack(rows: list[tuple[np.ndarray, ...]], names: Sequence[str]) -> dict[str, np.ndarray]:
    if not rows:
        raise InputError("no examples to fine-tune or evaluate on; check the task's data files or TFDS split.")
    return {name: np.stack(column) for name, column in zip(names, zip(*rows))}


_INPUTS = ("input_ids", "segment_ids", "attention_mask")


def classification_features(examples, tokenizer, max_seq_length: int, *, regression: bool,
                            multi_label: int = 0) -> dict[str, np.ndarray]:
    """Arrays for sequence classification/regression: inputs [n, seq] and `labels` [n] (int32 or float32),
    or for `multi_label` > 0 labels, `labels` [n, multi_label] float32 multi-hot (an example's label is a
    tuple of ids).

    Unlabelled examples (test sets) get label 0 and `has_label` 0, so they can be predicted but not scored.
    """
    features = _stack([_encode_pair(tokenizer, e.text_a, e.text_b, max_seq_length) for e in examples], _INPUTS)
    if multi_label:
        labels = np.zeros((len(examples), multi_label), np.float32)
        for row, example in enumerate(examples):
            labels[row, list(example.label or ())] = 1.0
        features["labels"] = labels
    else:
        dtype = np.float32 if regression else np.int32
        features["labels"] = np.asarray([0 if e.label is None else e.label for e in examples], dtype)
    features["has_label"] = np.asarray([e.label is not None for e in examples], np.int32)
    return features


def token_classification_features(examples, tokenizer, max_seq_length: int,
                                  label_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays for tagging: inputs [n, seq], `labels` [n, seq] (IGNORED_LABEL except at each word's first
    sub-token) and `word_index` [n, seq] (the word a scored position belongs to, -1 elsewhere).

    Words that do not fit in `max_seq_length` are not scored here; `predicted_tags` predicts 'O' for them
    and the CoNLL evaluation still counts their gold entities, so truncation cannot inflate the score.
    """
    label_ids = {name: i for i, name in enumerate(label_names)}
    rows = []
    for example in examples:
        input_ids = np.full((max_seq_length,), tokenizer.special_ids.pad, np.int32)
        labels = np.full((max_seq_length,), IGNORED_LABEL, np.int32)
        word_index = np.full((max_seq_length,), -1, np.int32)
        ids = [tokenizer.special_ids.cls]
        tags = example.labels if example.labels is not None else (None,) * len(example.words)
        for i, (pieces, tag) in enumerate(zip(tokenizer.encode_words(list(example.words)), tags)):
            if tag is not None and tag not in label_ids:
                raise InputError(f"example {example.guid}: tag {tag!r} of word {example.words[i]!r} is not in "
                                 f"the task's label set {list(label_names)}; fix the data or the task's labels.")
            if len(ids) + len(pieces) > max_seq_length - 1:
                break
            if tag is not None:
                labels[len(ids)] = label_ids[tag]
            word_index[len(ids)] = i
            ids.extend(pieces)
        ids.append(tokenizer.special_ids.sep)
        input_ids[:len(ids)] = ids
        attention_mask = (np.arange(max_seq_length) < len(ids)).astype(np.int32)
        rows.append((input_ids, np.zeros_like(input_ids), attention_mask, labels, word_index))
    return _stack(rows, (*_INPUTS, "labels", "word_index"))


def predicted_tags(examples, word_index: np.ndarray, predicted_ids: np.ndarray,
                   label_names: Sequence[str]) -> list[list[str]]:
    """Word-level tags from per-position predictions [n, seq]; words cut by truncation get 'O'."""
    tags = []
    for example, words_at, ids in zip(examples, word_index, predicted_ids):
        sentence = ["O"] * len(example.words)
        for position in np.flatnonzero(words_at >= 0):
            sentence[words_at[position]] = label_names[ids[position]]
        tags.append(sentence)
    return tags


def multiple_choice_features(examples, tokenizer, max_seq_length: int) -> dict[str, np.ndarray]:
    """Arrays for multiple choice: inputs [n, num_choices, seq], `labels` [n].

    Each choice is the pair (context, question + ' ' + ending), as in BERT's SWAG fine-tuning.
    """
    num_choices = {len(e.choices) for e in examples}
    if len(num_choices) > 1:
        raise InputError(f"examples have different numbers of choices {sorted(num_choices)}; every example of "
                         "a multiple-choice task needs the same number.")
    rows = []
    for example in examples:
        per_choice = [_encode_pair(tokenizer, example.context, f"{example.question} {choice}".strip(),
                                   max_seq_length) for choice in example.choices]
        rows.append(tuple(np.stack(column) for column in zip(*per_choice)))
    features = _stack(rows, _INPUTS)
    features["labels"] = np.asarray([0 if e.label is None else e.label for e in examples], np.int32)
    features["has_label"] = np.asarray([e.label is not None for e in examples], np.int32)
    return features


def sentence_features(examples, tokenizer, max_seq_length: int, *, scores: bool) -> dict[str, np.ndarray]:
    """Arrays for a bi-encoder: inputs [n, texts, seq], each text encoded alone as [CLS] text [SEP], and
    `labels` [n] (float32 gold scores when `scores`, else int32 class ids; 0 where there is none)."""
    num_texts = {len(e.texts) for e in examples}
    if len(num_texts) > 1:
        raise InputError(f"examples have different numbers of texts {sorted(num_texts)}; every row of a "
                         "sentence_embedding task needs the same columns.")
    rows = [tuple(np.stack(column) for column in zip(*(_encode_pair(tokenizer, text, None, max_seq_length)
                                                       for text in example.texts)))
            for example in examples]
    arrays = _stack(rows, _INPUTS)
    arrays["labels"] = np.asarray([0 if e.label is None else e.label for e in examples],
                                  np.float32 if scores else np.int32)
    arrays["has_label"] = np.asarray([e.label is not None for e in examples], np.int32)
    return arrays
