"""The official metrics of the fine-tuning tasks (GLUE, CoNLL NER, multiple choice), from their definitions.

Written out in NumPy rather than imported so the library needs neither sklearn, scipy nor seqeval;
tests/test_metrics.py checks each against those references. Scores are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from bert_jax.config import InputError


def _pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise InputError(f"predictions {predictions.shape} and labels {labels.shape} must be 1-D of the "
                         "same length; pass one prediction per example.")
    if predictions.size == 0:
        raise InputError("no predictions to score; evaluate on a non-empty set.")
    return predictions, labels


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to their label (GLUE classification tasks, multiple choice)."""
    predictions, labels = _pair(predictions, labels)
    return float(np.mean(predictions == labels))


def f1_binary(predictions, labels, positive=1) -> float:
    """F1 of the `positive` class, 2TP / (2TP + FP + FN); 0 when there is no positive at all (as sklearn)."""
    predictions, labels = _pair(predictions, labels)
    predicted, actual = predictions == positive, labels == positive
    true_positives = np.sum(predicted & actual)
    denominator = np.sum(predicted) + np.sum(actual)
    return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation (CoLA's metric) from the confusion matrix; 0 when undefined, as sklearn.

    The K-class form (Gorodkin 2004) equals the binary (TP*TN - FP*FN) / sqrt(...) for two classes.
    """
    predictions, labels = _pair(predictions, labels)
    classes, indices = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    true_index, pred_index = indices[:labels.size], indices[labels.size:]
    confusion = np.zeros((classes.size, classes.size), dtype=np.float64)  # [true, predicted]
    np.add.at(confusion, (true_index, pred_index), 1)
    true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    num_samples = confusion.sum()
    cov_true_pred = np.trace(confusion) * num_samples - true_sum @ pred_sum
    cov_pred_pred = num_samples**2 - pred_sum @ pred_sum
    cov_true_true = num_samples**2 - true_sum @ true_sum
    if cov_pred_pred * cov_true_true == 0:
        return 0.0
    return float(cov_true_pred / math.sqrt(cov_true_true * cov_pred_pred))


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either side is constant (the correlation is undefined), as scipy."""
    x, y = _pair(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    x_centered, y_centered = x - x.mean(), y - y.mean()
    norm = math.sqrt(float(x_centered @ x_centered) * float(y_centered @ y_centered))
    if norm == 0.0:
        return float("nan")
    return float(np.clip(x_centered @ y_centered / norm, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span (scipy.stats.rankdata 'average')."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    is_new = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    group = np.cumsum(is_new) - 1  # tie-group index of each sorted position
    starts = np.flatnonzero(is_new)
    ends = np.concatenate([starts[1:], [values.size]])
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]  # mean of ranks start+1 .. end
    return ranks


def spearman(x, y) -> float:
    """Spearman correlation: Pearson of the average ranks (scipy.stats.spearmanr); NaN when constant."""
    x, y = _pair(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return pearson(_average_ranks(x), _average_ranks(y))


# GLUE task -> its official metrics (Wang et al. 2019, Table 1). The MNLI matched and mismatched dev
# sets are scored separately with the same metric; AX (the diagnostic set) with R3, i.e. MCC.
_GLUE_METRICS = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("mcc",),
}
# What the BERT paper reports per task (Devlin et al. 2019, Table 1 caption): F1 for QQP and MRPC,
# Spearman for STS-B, MCC for CoLA, accuracy elsewhere. Best-checkpoint selection maximises it.
_PRIMARY_METRIC = {"cola": "mcc", "ax": "mcc", "mrpc": "f1", "qqp": "f1", "stsb": "spearman"}
_ALIASES = {"sst": "sst2", "sts": "stsb", "mnlim": "mnli_matched", "mnlimm": "mnli_mismatched"}


def _task(task_name: str) -> str:
    key = task_name.lower().replace("-", "_")
    key = _ALIASES.get(key.replace("_", ""), key)
    key = {k.replace("_", ""): k for k in _GLUE_METRICS}.get(key.replace("_", ""), key)
    if key not in _GLUE_METRICS:
        raise InputError(f"unknown GLUE task {task_name!r}; use one of {sorted(_GLUE_METRICS)}.")
    return key


def glue_metrics(task_name: str, predictions, labels) -> dict[str, float]:
    """The GLUE metrics of one task on one eval set, plus "combined" (their mean) where there are two.

    `predictions` are class ids, or scores for STS-B (a regression task).
    """
    task = _task(task_name)
    functions = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef,
                 "pearson": pearson, "spearman": spearman}
    scores = {name: functions[name](predictions, labels) for name in _GLUE_METRICS[task]}
    if len(scores) > 1:
        scores["combined"] = float(np.mean(list(scores.values())))
    return scores


def primary_metric(task_name: str) -> str:
    """The key of `glue_metrics` that best-checkpoint selection maximises for this task."""
    return _PRIMARY_METRIC.get(_task(task_name), "accuracy")


def _split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''). Types may contain hyphens (conlleval splits at the first)."""
    prefix, _, chunk_type = tag.partition("-")
    return prefix, chunk_type


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, chunk_type: str) -> bool:
    """conlleval's endOfChunk: does a chunk end just before the current token?

    The S (single) rules come from the conlleval Python ports; for IOB1, IOB2 and IOE the rules are
    the perl script's.
    """
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != chunk_type


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, chunk_type: str) -> bool:
    """conlleval's startOfChunk: does a chunk start at the current token?

    So an I-X after O starts a chunk (IOB1, or a malformed IOB2 sequence), and I-Y after I-X ends X
    and starts Y.
    """
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != chunk_type


def conll_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The chunks of one sentence as conlleval reads them: {(type, start, end)}, end inclusive.

    One reading serves IOB1 (CoNLL-2003's original: B-X only between adjacent same-type chunks),
    IOB2 (B-X starts every chunk), IOE and IOBES/BIOES, as conlleval's does.
    """
    entities = set()
    prev_tag, prev_type, start = "O", "", None
    for position, full_tag in enumerate(list(tags) + ["O"]):  # the final O closes an open chunk
        tag, chunk_type = _split_tag(full_tag)
        if start is not None and _end_of_chunk(prev_tag, tag, prev_type, chunk_type):
            entities.add((prev_type, start, position - 1))
            start = None
        if _start_of_chunk(prev_tag, tag, prev_type, chunk_type):
            start = position
        prev_tag, prev_type = tag, chunk_type
    return entities


def _precision_recall_f1(num_correct: int, num_pred: int, num_true: int) -> dict[str, float]:
    precision = num_correct / num_pred if num_pred else 0.0
    recall = num_correct / num_true if num_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def conll_scores(true_sequences: Sequence[Sequence[str]],
                 pred_sequences: Sequence[Sequence[str]]) -> dict[str, object]:
    """conlleval's scores: micro-averaged chunk precision/recall/F1 over all sentences, token accuracy.

    A predicted chunk counts only if its type, start and end all match a true one, so a span one
    token too long is both a false positive and a false negative. Returns {"precision", "recall",
    "f1", "accuracy", "per_type": {type: {"precision", "recall", "f1", "num_true", "num_pred"}}}.
    """
    if len(true_sequences) != len(pred_sequences):
        raise InputError(f"{len(true_sequences)} true and {len(pred_sequences)} predicted sentences; "
                         "pass one predicted tag sequence per sentence.")
    true_chunks, pred_chunks = set(), set()
    num_tokens = num_correct_tokens = 0
    for index, (true_tags, pred_tags) in enumerate(zip(true_sequences, pred_sequences)):
        if len(true_tags) != len(pred_tags):
            raise InputError(f"sentence {index} has {len(true_tags)} true and {len(pred_tags)} predicted "
                             "tags; predict one tag per token.")
        true_chunks |= {(index, *chunk) for chunk in conll_entities(true_tags)}
        pred_chunks |= {(index, *chunk) for chunk in conll_entities(pred_tags)}
        num_tokens += len(true_tags)
        num_correct_tokens += sum(t == p for t, p in zip(true_tags, pred_tags))
    correct = true_chunks & pred_chunks
    scores: dict[str, object] = _precision_recall_f1(len(correct), len(pred_chunks), len(true_chunks))
    scores["accuracy"] = num_correct_tokens / num_tokens if num_tokens else 0.0
    num_true, num_pred, num_correct = (Counter(chunk[1] for chunk in chunks)
                                       for chunks in (true_chunks, pred_chunks, correct))
    per_type = {}
    for chunk_type in sorted(num_true | num_pred):
        per_type[chunk_type] = _precision_recall_f1(num_correct[chunk_type], num_pred[chunk_type],
                                                    num_true[chunk_type])
        per_type[chunk_type].update(num_true=num_true[chunk_type], num_pred=num_pred[chunk_type])
    scores["per_type"] = per_type
    return scores
