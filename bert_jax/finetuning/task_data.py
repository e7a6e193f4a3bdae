"""What differs between task kinds, in one place: features, label count, scoring and prediction files.

classification / regression (GLUE), token_classification (CoNLL NER), qa (SQuAD v1.1 / v2.0) and
multiple_choice (SWAG). The runner and the steps are the same for all of them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from bert_jax.config import InputError
from bert_jax.finetuning import features as features_lib
from bert_jax.finetuning import metrics, qa
from bert_jax.runtime import atomic

_MODEL_INPUTS = ("input_ids", "segment_ids", "attention_mask")
_TRAIN_TARGETS = {"classification": ("labels",), "multi_label_classification": ("labels",), "regression": ("labels",),
                  "token_classification": ("labels",), "multiple_choice": ("labels",),
                  "qa": ("start_positions", "end_positions"), "sentence_embedding": ("labels",)}
# Metrics where lower is better: best-checkpoint selection maximises their negation.
LOWER_IS_BETTER = ("mse", "mae")


@dataclasses.dataclass
class TaskFeatures:
    """Device arrays of one split (`arrays`) and, for SQuAD, the windows' bookkeeping (`qa`)."""

    arrays: dict[str, np.ndarray]
    qa: qa.QAFeatures | None = None


def train_keys(kind: str) -> tuple[str, ...]:
    """Arrays the train step needs: the model inputs and the kind's targets."""
    return _MODEL_INPUTS + _TRAIN_TARGETS[kind]


def num_labels(task) -> int:
    """Output width of the task head."""
    if task.kind in ("classification", "multi_label_classification", "token_classification"):
        return len(task.label_names)
    if task.kind == "sentence_embedding":  # the softmax recipe's classifier; 0: none
        return len(task.label_names)
    return {"regression": 1, "qa": 2, "multiple_choice": 1}[task.kind]


def primary_metric(task, config=None) -> str:
    """The dev metric that best-checkpoint selection optimises: config.train.primary_metric if set, else the
    benchmark's official one, else accuracy / micro F1 / Pearson / entity F1 / SQuAD F1 by kind."""
    if config is not None and config.train.primary_metric:
        return config.train.primary_metric
    if task.kind in ("classification", "regression") and not task.own:
        return metrics.primary_metric(task.name)
    if task.kind == "sentence_embedding":
        return _SENTENCE_METRIC[task.reading.get("sentence_loss", "multiple_negatives_ranking")]
    return {"classification": "accuracy", "multi_label_classification": "micro_f1", "regression": "pearson",
            "token_classification": "f1", "qa": "f1", "multiple_choice": "accuracy"}[task.kind]


# sentence_embedding: dev ranks each anchor's positive among all the split's candidates; pairs by Spearman.
_SENTENCE_METRIC = {"multiple_negatives_ranking": "mrr@10", "cosent": "spearman", "cosine_similarity": "spearman",
                    "softmax": "accuracy"}


def selection_score(task, config, split_metrics: dict) -> float:
    """The number best-checkpoint selection maximises, from one split's metrics (-inf when undefined)."""
    name = primary_metric(task, config)
    if name not in split_metrics:
        raise InputError(f"config.train.primary_metric={name!r} is not a metric of this task; its metrics are "
                         f"{', '.join(k for k, v in split_metrics.items() if isinstance(v, float))}.")
    value = float(split_metrics[name])
    if math.isnan(value):
        return -math.inf  # a constant prediction has no correlation
    return -value if name in LOWER_IS_BETTER else value


def featurize(task, examples, tokenizer, config, *, training: bool) -> TaskFeatures:
    """Examples of one split -> fixed-shape arrays of `config.data.max_seq_length` tokens."""
    length = config.data.max_seq_length
    if task.kind in ("classification", "regression", "multi_label_classification"):
        multi_label = len(task.label_names) if task.kind == "multi_label_classification" else 0
        return TaskFeatures(features_lib.classification_features(examples, tokenizer, length,
                                                                 regression=task.kind == "regression",
                                                                 multi_label=multi_label))
    if task.kind == "token_classification":
        return TaskFeatures(features_lib.token_classification_features(examples, tokenizer, length, task.label_names))
    if task.kind == "multiple_choice":
        return TaskFeatures(features_lib.multiple_choice_features(examples, tokenizer, length))
    if task.kind == "sentence_embedding":
        scores = _sentence_loss(task) in ("cosent", "cosine_similarity")
        return TaskFeatures(features_lib.sentence_features(examples, tokenizer, length, scores=scores))
    windows = qa.make_qa_features(examples, tokenizer, max_seq_length=length, doc_stride=config.data.doc_stride,
                                  max_query_length=config.data.max_query_length, is_training=training,
                                  skip_bad_answers=config.data.skip_bad_answers)
    arrays = {"input_ids": windows.input_ids, "segment_ids": windows.segment_ids,
              "attention_mask": windows.attention_mask}
    if training:
        arrays.update(start_positions=windows.start_positions, end_positions=windows.end_positions)
    return TaskFeatures(arrays, windows)


def _labelled(features: TaskFeatures) -> np.ndarray:
    return features.arrays["has_label"].astype(bool)


def score(task, examples, features: TaskFeatures, logits: np.ndarray, config) -> tuple[dict[str, Any], Any]:
    """(dev metrics, predictions payload for `write_predictions`) from the model's logits of one split."""
    if task.kind == "multi_label_classification":
        predictions = logits > 0.0  # sigmoid(logit) > 0.5
        labelled = _labelled(features)
        scores = (metrics.multilabel_scores(predictions[labelled], features.arrays["labels"][labelled] > 0.5)
                  if labelled.any() else {})
        return {k: float(v) for k, v in scores.items()}, predictions
    if task.kind == "sentence_embedding":
        return _sentence_scores(task, features, logits)
    if task.own and task.kind in ("classification", "regression"):
        labelled = _labelled(features)
        predictions = logits[:, 0] if task.kind == "regression" else logits.argmax(-1)
        labels = features.arrays["labels"][labelled]
        if not labelled.any():
            scores = {}
        elif task.kind == "regression":
            scores = metrics.regression_scores(predictions[labelled], labels)
        else:
            scores = metrics.classification_scores(predictions[labelled], labels, len(task.label_names))
        return {k: float(v) for k, v in scores.items()}, predictions
    if task.kind in ("classification", "regression", "multiple_choice"):
        predictions = logits[:, 0] if task.kind == "regression" else logits.argmax(-1)
        labelled = _labelled(features)
        labels = features.arrays["labels"][labelled]
        if not labelled.any():
            scores = {}
        elif task.kind == "multiple_choice":
            scores = {"accuracy": metrics.accuracy(predictions[labelled], labels)}
        else:
            scores = metrics.glue_metrics(task.name, predictions[labelled], labels)
        return {k: float(v) for k, v in scores.items()}, predictions
    if task.kind == "token_classification":
        tags = features_lib.predicted_tags(examples, features.arrays["word_index"], logits.argmax(-1),
                                           task.label_names)
        gold = [(e.labels, t) for e, t in zip(examples, tags) if e.labels is not None]
        if not gold:
            return {}, tags
        scores = metrics.conll_scores([g for g, _ in gold], [t for _, t in gold])
        return {k: scores[k] for k in ("precision", "recall", "f1", "accuracy")}, tags
    version_2 = task.version_2
    predictions, null_odds, _ = qa.decode_predictions(
        examples, features.qa, logits[..., 0], logits[..., 1], n_best_size=config.qa.n_best_size,
        max_answer_length=config.qa.max_answer_length, version_2_with_negative=version_2,
        null_score_diff_threshold=config.qa.null_score_diff_threshold)
    if version_2:
        scores = qa.squad_v2_scores(examples, predictions, null_odds)
    else:
        scores = qa.squad_v1_scores(examples, predictions)
    return {k: float(v) for k, v in scores.items()}, (predictions, null_odds)


def _sentence_loss(task) -> str:
    return task.reading.get("sentence_loss", "multiple_negatives_ranking")


def _sentence_scores(task, features: TaskFeatures, outputs: np.ndarray) -> tuple[dict[str, Any], Any]:
    """Dev figures of a sentence encoder, and per-row predictions: the class (softmax), the cosine of the pair
    (scored pairs), or the rank of each anchor's positive among every candidate of the split (in-batch)."""
    loss, labelled = _sentence_loss(task), _labelled(features)
    labels = features.arrays["labels"]
    if loss == "softmax":
        predictions = outputs.argmax(-1)
        scores = (metrics.classification_scores(predictions[labelled], labels[labelled], len(task.label_names))
                  if labelled.any() else {})
        return {k: float(v) for k, v in scores.items()}, predictions
    unit = outputs / np.maximum(np.linalg.norm(outputs, axis=-1, keepdims=True), 1e-12)  # [n, texts, hidden]
    if loss in ("cosent", "cosine_similarity"):
        cosines = (unit[:, 0] * unit[:, 1]).sum(-1)
        scores = metrics.regression_scores(cosines[labelled], labels[labelled]) if labelled.sum() > 1 else {}
        return {k: float(v) for k, v in scores.items() if k in ("spearman", "pearson")}, cosines
    ranks = metrics.positive_ranks(unit[:, 0], unit[:, 1:])
    return metrics.ranking_scores(ranks), ranks


def write_predictions(prefix: str, task, examples, payload) -> list[str]:
    """Writes one split's predictions next to `prefix`; returns the paths.

    GLUE/SWAG: `<prefix>.tsv` (guid, prediction: a label name, or the STS-B score); NER: `<prefix>.txt`
    in CoNLL columns (word, gold tag, predicted tag: conlleval's input); SQuAD: `<prefix>.json`
    (qid -> answer, the official script's input) and, for v2.0, `<prefix>_null_odds.json`.
    """
    if task.kind == "sentence_embedding":
        path = prefix + ".tsv"
        column = {"softmax": "prediction", "multiple_negatives_ranking": "rank_of_positive"}.get(
            _sentence_loss(task), "cosine")
        with atomic.writer(path) as f:
            f.write(f"guid\t{column}\n")
            for example, value in zip(examples, payload):
                shown = (task.label_names[int(value)] if column == "prediction" else
                         str(int(value)) if column == "rank_of_positive" else f"{float(value):.6f}")
                f.write(f"{example.guid}\t{shown}\n")
        return [path]
    if task.kind == "multi_label_classification":
        path = prefix + ".tsv"
        with atomic.writer(path) as f:
            f.write("guid\tprediction\n")
            for example, row in zip(examples, payload):
                names = [task.label_names[i] for i in np.flatnonzero(row)]
                f.write(f"{example.guid}\t{task.reading.get('label_separator', ',').join(names)}\n")
        return [path]
    if task.kind in ("classification", "regression", "multiple_choice"):
        path = prefix + ".tsv"
        with atomic.writer(path) as f:
            f.write("guid\tprediction\n")
            for example, prediction in zip(examples, payload):
                value = (f"{float(prediction):.6f}" if task.kind == "regression"
                         else task.label_names[int(prediction)] if task.label_names else str(int(prediction)))
                f.write(f"{example.guid}\t{value}\n")
        return [path]
    if task.kind == "token_classification":
        path = prefix + ".txt"
        with atomic.writer(path) as f:
            for example, tags in zip(examples, payload):
                gold = example.labels if example.labels is not None else ["-"] * len(tags)
                f.writelines(f"{w} {g} {p}\n" for w, g, p in zip(example.words, gold, tags))
                f.write("\n")
        return [path]
    predictions, null_odds = payload
    paths = [prefix + ".json"]
    atomic.write_json(paths[0], predictions, indent=1, ensure_ascii=False)
    if null_odds:
        paths.append(prefix + "_null_odds.json")
        atomic.write_json(paths[1], null_odds, indent=1)
    return paths
