"""SQuAD v1.1/v2.0: context windows, span decoding and the official evaluation scripts' scores.

Follows google-research/bert `run_squad.py` (`convert_examples_to_features`, `write_predictions`) with
one change: tokens carry character offsets into the original context, so an answer is read straight
out of the context instead of through run_squad's `get_final_text` re-alignment heuristics.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import string
from collections.abc import Sequence

import numpy as np
from absl import logging

from bert_jax.config import InputError


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset into the context


@dataclasses.dataclass(frozen=True)
class QAExample:
    qid: str
    question: str
    context: str
    answers: tuple[Answer, ...]  # empty for a v2.0 unanswerable question and for unlabelled test data
    is_impossible: bool = False


@dataclasses.dataclass
class QAFeatures:
    """One row per (example, context window); windows of one example share its `example_index`."""

    input_ids: np.ndarray  # int32 [num_features, max_seq_length]: [CLS] question [SEP] window [SEP] pad
    segment_ids: np.ndarray  # int32 [num_features, max_seq_length]: 0 question, 1 window and its [SEP]
    attention_mask: np.ndarray  # int32 [num_features, max_seq_length]
    start_positions: np.ndarray | None  # int32 [num_features]; 0 ([CLS]) = no answer here; None unless training
    end_positions: np.ndarray | None  # int32 [num_features]
    example_index: np.ndarray  # int32 [num_features]: index into the examples given
    token_to_char: np.ndarray  # int32 [num_features, max_seq_length, 2]: context char span, -1 elsewhere
    token_is_max_context: np.ndarray  # bool [num_features, max_seq_length]
    num_skipped: int = 0  # training examples dropped because their answer is not at its offset

    def __len__(self) -> int:
        return len(self.input_ids)


def _doc_spans(num_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """run_squad's sliding window: (start, length) spans advancing by doc_stride until the end is covered."""
    spans, start = [], 0
    while True:
        length = min(num_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, doc_stride)


def _is_max_context(doc_spans: list[tuple[int, int]], span_index: int, position: int) -> bool:
    """run_squad's `_check_is_max_context`: is this the window where the token has the most context?

    A token in several windows is scored there by min(left, right context) + 0.01 * window length;
    the first best window wins, so every token is max-context in exactly one window.
    """
    best_score, best_index = None, None
    for index, (start, length) in enumerate(doc_spans):
        end = start + length - 1
        if start <= position <= end:
            score = min(position - start, end - position) + 0.01 * length
            if best_score is None or score > best_score:
                best_score, best_index = score, index
    return span_index == best_index


def _answer_token_span(example: QAExample, offsets: list[tuple[int, int]]) -> tuple[int, int] | None:
    """Context token indices (first, last) of the first answer; None if it is not at its stated offset.

    The first token overlapping the answer's characters starts it and the last one ends it, so a
    token only partly inside the answer (e.g. "1990s" for the answer "1990") is included whole.
    """
    answer = example.answers[0]
    answer_end = answer.start + len(answer.text)
    if not answer.text or example.context[answer.start:answer_end] != answer.text:
        return None
    overlapping = [i for i, (start, end) in enumerate(offsets) if start < answer_end and end > answer.start]
    return (overlapping[0], overlapping[-1]) if overlapping else None


def make_qa_features(examples: Sequence[QAExample], tokenizer, *, max_seq_length: int = 384,
                     doc_stride: int = 128, max_query_length: int = 64, is_training: bool,
                     skip_bad_answers: bool = False) -> QAFeatures:
    """Tokenizes examples into `[CLS] question [SEP] window [SEP]` features, run_squad style.

    The question is cut to `max_query_length` tokens and the context split into windows of the
    remaining length advancing by `doc_stride` tokens. For training, the first answer's token span is
    the label in windows that hold all of it and [CLS] (0) elsewhere and for unanswerable questions.
    A training answer that is not at its offset raises InputError, or with `skip_bad_answers` the
    example is dropped and counted in `num_skipped`.
    """
    special = tokenizer.special_ids
    rows = collections.defaultdict(list)
    num_skipped = 0
    for example_index, example in enumerate(examples):
        query_ids = tokenizer.encode(example.question)[:max_query_length]
        max_tokens_for_doc = max_seq_length - len(query_ids) - 3  # [CLS], [SEP], [SEP]
        if max_tokens_for_doc <= 0:
            raise InputError(f"max_seq_length={max_seq_length} leaves no room for the context after a "
                             f"{len(query_ids)}-token question; raise it above max_query_length + 3.")
        context_ids, offsets = tokenizer.encode_with_offsets(example.context)
        answer_span = None
        if is_training and not example.is_impossible:
            if not example.answers:
                raise InputError(f"training question {example.qid!r} has no answer and is not marked "
                                 "is_impossible; give it an answer or set is_impossible=True.")
            answer_span = _answer_token_span(example, offsets)
            if answer_span is None:
                if not skip_bad_answers:
                    answer = example.answers[0]
                    found = example.context[answer.start:answer.start + len(answer.text)]
                    raise InputError(f"question {example.qid!r}: the answer {answer.text!r} is not at its answer_start "
                                     f"{answer.start} (the context has {found!r} there); fix answer_start or the answer "
                                     "text in the SQuAD file, or "
                                     "set --config.data.skip_bad_answers=true to leave such questions out of training.")
                num_skipped += 1
                continue
        doc_spans = _doc_spans(len(context_ids), max_tokens_for_doc, doc_stride)
        for span_index, (doc_start, length) in enumerate(doc_spans):
            doc_offset = len(query_ids) + 2  # position of the window's first token
            input_ids = [special.cls, *query_ids, special.sep, *context_ids[doc_start:doc_start + length],
                         special.sep]
            num_tokens = len(input_ids)
            token_to_char = np.full((max_seq_length, 2), -1, dtype=np.int32)
            token_to_char[doc_offset:doc_offset + length] = np.asarray(
                offsets[doc_start:doc_start + length], dtype=np.int32).reshape(length, 2)
            is_max_context = np.zeros(max_seq_length, dtype=bool)
            for i in range(length):
                is_max_context[doc_offset + i] = _is_max_context(doc_spans, span_index, doc_start + i)
            start_position = end_position = 0
            if answer_span is not None and doc_start <= answer_span[0] and answer_span[1] < doc_start + length:
                start_position = answer_span[0] - doc_start + doc_offset
                end_position = answer_span[1] - doc_start + doc_offset
            rows["input_ids"].append(input_ids + [special.pad] * (max_seq_length - num_tokens))
            rows["segment_ids"].append([0] * doc_offset + [1] * (length + 1) + [0] * (max_seq_length - num_tokens))
            rows["attention_mask"].append([1] * num_tokens + [0] * (max_seq_length - num_tokens))
            rows["start_positions"].append(start_position)
            rows["end_positions"].append(end_position)
            rows["example_index"].append(example_index)
            rows["token_to_char"].append(token_to_char)
            rows["token_is_max_context"].append(is_max_context)
    if num_skipped:
        logging.warning("Skipped %d of %d SQuAD examples whose answer is not at its offset.",
                        num_skipped, len(examples))

    def array(name, dtype, shape):
        return np.asarray(rows[name], dtype=dtype).reshape(-1, *shape)

    return QAFeatures(
        input_ids=array("input_ids", np.int32, (max_seq_length,)),
        segment_ids=array("segment_ids", np.int32, (max_seq_length,)),
        attention_mask=array("attention_mask", np.int32, (max_seq_length,)),
        start_positions=array("start_positions", np.int32, ()) if is_training else None,
        end_positions=array("end_positions", np.int32, ()) if is_training else None,
        example_index=array("example_index", np.int32, ()),
        token_to_char=array("token_to_char", np.int32, (max_seq_length, 2)),
        token_is_max_context=array("token_is_max_context", bool, (max_seq_length,)),
        num_skipped=num_skipped,
    )


def _softmax(scores: list[float]) -> list[float]:
    exp = np.exp(np.asarray(scores, dtype=np.float64) - max(scores))
    return list(exp / exp.sum())


def decode_predictions(examples: Sequence[QAExample], features: QAFeatures, start_logits, end_logits, *,
                       n_best_size: int = 20, max_answer_length: int = 30,
                       version_2_with_negative: bool = False, null_score_diff_threshold: float = 0.0,
                       ) -> tuple[dict[str, str], dict[str, float], dict[str, list[dict]]]:
    """run_squad's `write_predictions`: the best answer span of each example over all its windows.

    `start_logits`/`end_logits` are [num_features, max_seq_length]. Candidate spans pair the top
    `n_best_size` starts and ends of each window, must lie in the context, start at a max-context
    token and be at most `max_answer_length` tokens. For v2.0 the null score is the lowest [CLS]
    score over the windows, and the answer is "" when it beats the best span by more than
    `null_score_diff_threshold`. Returns (predictions, null_odds (v2.0 only), nbest) keyed by qid;
    nbest entries are {"text", "probability", "start_logit", "end_logit"}.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    if start_logits.shape != features.input_ids.shape or end_logits.shape != features.input_ids.shape:
        raise InputError(f"logits {start_logits.shape}/{end_logits.shape} do not match the features "
                         f"{features.input_ids.shape}; pass one row of logits per feature, in order.")
    features_of = collections.defaultdict(list)
    for feature_index, example_index in enumerate(features.example_index):
        features_of[int(example_index)].append(feature_index)
    predictions, null_odds, all_nbest = {}, {}, {}
    for example_index, example in enumerate(examples):
        candidates = []  # (start_logit, end_logit, text)
        null_start = null_end = None
        for f in features_of[example_index]:
            if version_2_with_negative:
                null_score = start_logits[f, 0] + end_logits[f, 0]
                if null_start is None or null_score < null_start + null_end:
                    null_start, null_end = float(start_logits[f, 0]), float(end_logits[f, 0])
            chars = features.token_to_char[f]  # [max_seq_length, 2]
            for s in np.argsort(-start_logits[f], kind="stable")[:n_best_size]:
                for e in np.argsort(-end_logits[f], kind="stable")[:n_best_size]:
                    if (chars[s, 0] < 0 or chars[e, 0] < 0 or not features.token_is_max_context[f, s]
                            or e < s or e - s + 1 > max_answer_length):
                        continue
                    text = example.context[chars[s, 0]:chars[e, 1]].strip()
                    if text:
                        candidates.append((float(start_logits[f, s]), float(end_logits[f, e]), text))
        if null_start is not None:
            candidates.append((null_start, null_end, ""))
        candidates.sort(key=lambda c: c[0] + c[1], reverse=True)
        nbest, seen = [], set()
        for start_logit, end_logit, text in candidates:
            if len(nbest) == n_best_size:
                break
            if text not in seen:
                seen.add(text)
                nbest.append({"text": text, "start_logit": start_logit, "end_logit": end_logit})
        if null_start is not None and "" not in seen:
            nbest.append({"text": "", "start_logit": null_start, "end_logit": null_end})
        if not nbest:  # no window had a valid span (run_squad's "empty" nonce)
            nbest.append({"text": "", "start_logit": 0.0, "end_logit": 0.0})
        for entry, probability in zip(nbest, _softmax([e["start_logit"] + e["end_logit"] for e in nbest])):
            entry["probability"] = float(probability)
        all_nbest[example.qid] = nbest
        best_non_null = next((entry for entry in nbest if entry["text"]), None)
        if not version_2_with_negative:
            predictions[example.qid] = nbest[0]["text"]
            continue
        if best_non_null is None:
            null_odds[example.qid], predictions[example.qid] = float("inf"), ""
            continue
        score_diff = null_start + null_end - best_non_null["start_logit"] - best_non_null["end_logit"]
        null_odds[example.qid] = score_diff
        predictions[example.qid] = "" if score_diff > null_score_diff_threshold else best_non_null["text"]
    return predictions, null_odds, all_nbest


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official scripts' normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def compute_f1(gold: str, prediction: str, *, empty_answers_agree: bool = True) -> float:
    """Token-overlap F1 of normalised answers.

    With `empty_answers_agree` (the v2.0 script's compute_f1), a gold and a prediction that both
    normalise to nothing score 1, where a no-answer question was answered ""; one empty side scores 0.
    Without it (the v1.1 script's f1_score, which returns 0 when no token is shared) any empty side
    scores 0, so a v1.1 gold such as "a" earns no F1 even for an empty prediction.
    """
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:
        return float(empty_answers_agree and gold_tokens == pred_tokens)
    num_same = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def compute_exact(gold: str, prediction: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(prediction))


def squad_v1_scores(examples: Sequence[QAExample], predictions: dict[str, str]) -> dict[str, float]:
    """The v1.1 evaluation script: max over gold answers of exact match and F1, in percent.

    As the script, a question without a prediction scores 0 and still counts in the total, and a gold
    answer that normalises to nothing earns no F1 (exact match still compares the normalised texts).
    """
    exact = f1 = 0.0
    for example in examples:
        if not example.answers:
            raise InputError(f"question {example.qid!r} has no gold answer; SQuAD v1.1 scoring needs one "
                             "(use squad_v2_scores for unanswerable questions).")
        if example.qid in predictions:
            golds = [answer.text for answer in example.answers]
            exact += max(compute_exact(g, predictions[example.qid]) for g in golds)
            f1 += max(compute_f1(g, predictions[example.qid], empty_answers_agree=False) for g in golds)
    total = len(examples)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def _best_threshold(examples, predictions, scores, null_odds) -> tuple[float, float]:
    """v2.0 script's `find_best_thresh`: answer "" wherever null odds exceed t; the best score and t."""
    current = best = sum(1 for example in examples if not example.answers)
    best_thresh = 0.0
    for example in sorted(examples, key=lambda example: null_odds[example.qid]):
        if example.answers:
            current += scores[example.qid]
        elif predictions[example.qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, null_odds[example.qid]
    return 100.0 * best / len(examples), best_thresh


def squad_v2_scores(examples: Sequence[QAExample], predictions: dict[str, str],
                    null_odds: dict[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict[str, float]:
    """The v2.0 evaluation script: exact and F1 in percent overall, on HasAns and on NoAns questions.

    Gold answers are the ones that normalise to non-empty text, or [""] for an unanswerable question.
    With `null_odds` (decode_predictions' scores), questions whose odds exceed `na_prob_thresh` count
    as answered "" (the script's --na-prob-thresh, default 1.0), and best_exact/best_f1 with their
    thresholds report the best cut-off, as the script's `find_all_best_thresh`.
    """
    missing = [example.qid for example in examples if example.qid not in predictions]
    if missing or not examples:
        raise InputError(f"no prediction for {len(missing)} questions (e.g. {missing[:3]}); predict every "
                         "question of the eval set.")
    if null_odds is not None and any(example.qid not in null_odds for example in examples):
        raise InputError("null_odds lacks some questions; pass the null_odds decode_predictions returned.")
    exact_raw, f1_raw = {}, {}
    for example in examples:
        golds = [answer.text for answer in example.answers if normalize_answer(answer.text)] or [""]
        exact_raw[example.qid] = max(compute_exact(g, predictions[example.qid]) for g in golds)
        f1_raw[example.qid] = max(compute_f1(g, predictions[example.qid]) for g in golds)
    exact, f1 = dict(exact_raw), dict(f1_raw)
    for example in examples:
        if null_odds is not None and null_odds[example.qid] > na_prob_thresh:
            exact[example.qid] = f1[example.qid] = float(not example.answers)

    def summary(subset):
        return (100.0 * sum(exact[e.qid] for e in subset) / len(subset),
                100.0 * sum(f1[e.qid] for e in subset) / len(subset), len(subset))

    result = dict(zip(("exact", "f1", "total"), summary(examples)))
    for prefix, subset in (("HasAns", [e for e in examples if e.answers]),
                           ("NoAns", [e for e in examples if not e.answers])):
        if subset:
            result.update(zip((f"{prefix}_exact", f"{prefix}_f1", f"{prefix}_total"), summary(subset)))
    if null_odds is not None:
        result["best_exact"], result["best_exact_thresh"] = _best_threshold(examples, predictions, exact_raw,
                                                                            null_odds)
        result["best_f1"], result["best_f1_thresh"] = _best_threshold(examples, predictions, f1_raw, null_odds)
    return result
