"""The official metrics of the fine-tuning tasks (GLUE, CoNLL NER, multiple choice), from their definitions,
the scores of user-declared classification, multi-label and regression tasks, and the STS scores of a
sentence encoder.

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


def _centered_scaled(values: np.ndarray) -> np.ndarray:
    """values - their mean, divided by its largest magnitude, so dot products of 1e200-scale data stay finite."""
    centered = values - values.mean()
    return centered / np.max(np.abs(centered))


def pearson(x, y) -> float:
    """Pearson correlation as scipy.stats.pearsonr: NaN when either side is constant or holds NaN or inf.

    Computed on centred vectors scaled to a largest magnitude of 1 (as scipy does), so large inputs do
    not overflow the dot products.
    """
    x, y = _pair(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")  # scipy's arithmetic turns a NaN or inf input into NaN
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")  # the correlation is undefined
    x_scaled, y_scaled = _centered_scaled(x), _centered_scaled(y)
    norm = math.sqrt(float(x_scaled @ x_scaled) * float(y_scaled @ y_scaled))
    return float(np.clip(x_scaled @ y_scaled / norm, -1.0, 1.0))


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
    """Spearman correlation: Pearson of the average ranks (scipy.stats.spearmanr); NaN when constant.

    A NaN anywhere gives NaN, as spearmanr's default nan_policy="propagate" (argsort would otherwise
    rank NaN above every number); inf is ranked as the largest value, as scipy.
    """
    x, y = _pair(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return pearson(_average_ranks(x), _average_ranks(y))


def sts_scores(embeddings_a, embeddings_b, gold) -> dict[str, float]:
    """STS scores of a sentence encoder: "spearman" (the headline number) and "pearson" of cosine(a_i, b_i)
    against the gold similarity of each pair. `embeddings_a`, `embeddings_b` are [num_pairs, dim]."""
    a, b = np.asarray(embeddings_a, dtype=np.float64), np.asarray(embeddings_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(f"embeddings {a.shape} and {b.shape} must both be [num_pairs, dim]; embed the first and "
                         "the second sentence of every pair.")
    tiny = np.finfo(np.float64).tiny  # a zero embedding has cosine 0 with anything
    cosine = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), tiny)
    return {"spearman": spearman(cosine, gold), "pearson": pearson(cosine, gold)}


def _class_ids(values: np.ndarray, name: str, num_labels: int) -> np.ndarray:
    if values.dtype.kind not in "biu" or values.min() < 0 or values.max() >= num_labels:
        raise InputError(f"{name} must be integer class ids in 0..{num_labels - 1} (num_labels={num_labels}); "
                         f"got {values.dtype} values from {values.min()} to {values.max()}. Pass "
                         "argmax(logits), not logits, and declare num_labels to cover every label.")
    return values.astype(np.int64)


def classification_scores(predictions, labels, num_labels: int) -> dict[str, float]:
    """Scores of single-label classification with `num_labels` classes (a user-declared task).

    "accuracy"; "macro_f1", the unweighted mean of per-class F1 over the classes that occur in the
    labels or the predictions (sklearn's default labels; a class never predicted scores 0); "mcc";
    and with two classes also "f1" of class 1. `predictions` and `labels` are [num_examples] class ids.
    """
    if not isinstance(num_labels, (int, np.integer)) or num_labels < 2:
        raise InputError(f"num_labels={num_labels!r}; a classification task needs an integer of at least 2.")
    predictions, labels = _pair(predictions, labels)
    predictions = _class_ids(predictions, "predictions", num_labels)
    labels = _class_ids(labels, "labels", num_labels)
    true_count = np.bincount(labels, minlength=num_labels)                   # [num_labels]
    pred_count = np.bincount(predictions, minlength=num_labels)              # [num_labels]
    true_positives = np.bincount(labels[predictions == labels], minlength=num_labels)
    present = (true_count + pred_count) > 0
    per_class_f1 = 2 * true_positives[present] / (true_count + pred_count)[present]
    scores = {"accuracy": accuracy(predictions, labels), "macro_f1": float(per_class_f1.mean()),
              "mcc": matthews_corrcoef(predictions, labels)}
    if num_labels == 2:
        scores["f1"] = f1_binary(predictions, labels, positive=1)
    return scores


def _indicator(values, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2 or not np.isin(values, (0, 1)).all():
        raise InputError(f"{name} must be a [num_examples, num_labels] array of 0/1 or booleans; got shape "
                         f"{values.shape}, dtype {values.dtype}. Threshold scores first, e.g. probs > 0.5.")
    return values.astype(bool)


def multilabel_scores(predicted, gold) -> dict[str, float]:
    """Scores of multi-label classification from [num_examples, num_labels] 0/1 indicator arrays.

    "micro_precision", "micro_recall" and "micro_f1" count true positives over every (example, label)
    cell; "macro_f1" is the mean of per-label F1 over all num_labels columns, a label with no gold and
    no predicted positive scoring 0 (sklearn's zero_division=0); "exact_match" is the fraction of
    examples whose whole label set is right (sklearn's subset accuracy).
    """
    predicted, gold = _indicator(predicted, "predicted"), _indicator(gold, "gold")
    if predicted.shape != gold.shape or predicted.size == 0:
        raise InputError(f"predicted {predicted.shape} and gold {gold.shape} must be the same non-empty shape; "
                         "pass one row of label indicators per example.")
    true_positives = np.sum(predicted & gold, axis=0)  # [num_labels]
    pred_count, true_count = predicted.sum(axis=0), gold.sum(axis=0)
    num_correct, num_pred, num_true = int(true_positives.sum()), int(pred_count.sum()), int(true_count.sum())
    denominator = pred_count + true_count
    per_label_f1 = np.where(denominator > 0, 2 * true_positives / np.maximum(denominator, 1), 0.0)
    return {"micro_f1": 2 * num_correct / (num_pred + num_true) if num_pred + num_true else 0.0,
            "macro_f1": float(per_label_f1.mean()),
            "micro_precision": num_correct / num_pred if num_pred else 0.0,
            "micro_recall": num_correct / num_true if num_true else 0.0,
            "exact_match": float(np.mean(np.all(predicted == gold, axis=1)))}


def positive_ranks(anchors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """1-based rank of each anchor's own positive among every candidate of the set, by cosine.

    anchors [n, hidden] and candidates [n, k, hidden] unit vectors; candidate [i, 0] is anchor i's positive,
    the rest (other rows' positives, every hard negative) are its negatives. Ties count against the positive.
    """
    pool = candidates.transpose(1, 0, 2).reshape(-1, candidates.shape[-1])  # positives first
    scores = anchors @ pool.T  # [n, n * k]
    own = scores[np.arange(len(anchors)), np.arange(len(anchors))]
    return (scores >= own[:, None]).sum(-1)


def ranking_scores(ranks: np.ndarray, cutoff: int = 10) -> dict[str, float]:
    """MRR@cutoff and accuracy@1 (the positive ranked first) of 1-based ranks."""
    ranks = np.asarray(ranks)
    reciprocal = np.where(ranks <= cutoff, 1.0 / ranks, 0.0)
    return {f"mrr@{cutoff}": float(reciprocal.mean()), "accuracy@1": float((ranks == 1).mean())}


def regression_scores(predictions, labels) -> dict[str, float]:
    """Scores of a regression task: "pearson", "spearman" (NaN when constant), "mse" and "mae"."""
    predictions, labels = _pair(np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    errors = predictions - labels
    return {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels),
            "mse": float(np.mean(errors**2)), "mae": float(np.mean(np.abs(errors)))}


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
