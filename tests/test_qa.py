"""bert_jax.finetuning.qa: run_squad windowing and decoding, and the official SQuAD scripts' scores, by hand
and against the scripts' scoring functions written out here."""

import collections
import itertools
import random
import re
import string

import numpy as np
import pytest

from bert_jax.config import InputError
from bert_jax.data.vocab import SpecialIds
from bert_jax.finetuning import qa
from bert_jax.finetuning.qa import Answer, QAExample


class FakeTokenizer:
    """Words and punctuation cut into 3-, 1- and 2-character lower-cased pieces, with character offsets."""

    special_ids = SpecialIds()

    def __init__(self):
        self.vocab = {}

    def _pieces(self, text):
        for match in re.finditer(r"\w+|[^\w\s]", text):
            word, sizes, i = match.group(), itertools.cycle((3, 1, 2)), 0
            while i < len(word):
                size = next(sizes)
                yield word[i:i + size].lower(), (match.start() + i, match.start() + min(i + size, len(word)))
                i += size

    def encode_with_offsets(self, text):
        pieces = list(self._pieces(text))
        return [self.vocab.setdefault(p, 5 + len(self.vocab)) for p, _ in pieces], [span for _, span in pieces]

    def encode(self, text):
        return self.encode_with_offsets(text)[0]


WORDS = ("river mountain forest village king queen soldier farmer merchant harbor winter bridge castle "
         "garden market tower storm letter song story teacher student machine engine stone gold").split()


def _context(num_words, seed, phrase=None, at=None):
    """Random words, with `phrase` inserted after word `at`; returns (context, phrase's char offset)."""
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(num_words)]
    if phrase is None:
        return " ".join(words) + ".", None
    before = " ".join(words[:at]) + " "
    return before + phrase + " " + " ".join(words[at:]) + ".", len(before)


def _window_text(example, features, f, s, e):
    return example.context[features.token_to_char[f, s, 0]:features.token_to_char[f, e, 1]]


# --- The official scripts' normalisation and scores, with the expected values worked out by hand.

@pytest.mark.parametrize("text, expected", [
    ("The  Quick, Brown-Fox!", "quick brownfox"),  # case, punctuation (no space left), article, spaces
    ("an apple a day", "apple day"),
    ("theatre", "theatre"),  # articles only as whole words
    ("  A.  ", ""),
])
def test_normalize_answer(text, expected):
    assert qa.normalize_answer(text) == expected


def test_compute_f1_and_exact():
    # "cat sat" vs "cat sat on mat": 2 common tokens, precision 2/2, recall 2/4.
    assert qa.compute_f1("cat sat on mat", "the cat sat") == pytest.approx(2 / 3)
    assert qa.compute_f1("cat", "dog") == 0.0
    assert qa.compute_f1("cat cat", "cat") == pytest.approx(2 / 3)  # token counts, not sets
    assert qa.compute_exact("The Broncos.", "broncos") == 1.0
    assert qa.compute_f1("", "") == 1.0 and qa.compute_f1("", "the") == 1.0  # both normalise to empty
    assert qa.compute_f1("", "cat") == 0.0 and qa.compute_f1("cat", "") == 0.0
    # v1.1's f1_score: no shared token, no F1, even when both sides are empty.
    assert qa.compute_f1("", "", empty_answers_agree=False) == 0.0
    assert qa.compute_f1("a", "the", empty_answers_agree=False) == 0.0
    assert qa.compute_f1("cat sat on mat", "the cat sat", empty_answers_agree=False) == pytest.approx(2 / 3)


def test_squad_v1_scores():
    examples = [
        QAExample("q1", "?", "", (Answer("Denver Broncos", 0), Answer("Broncos", 7))),
        QAExample("q2", "?", "", (Answer("the cat sat", 0),)),
        QAExample("q3", "?", "", (Answer("dog", 0),)),
    ]
    predictions = {"q1": "the broncos.", "q2": "cat sat on mat"}  # q3 unanswered: 0, still counted
    scores = qa.squad_v1_scores(examples, predictions)
    assert scores["exact_match"] == pytest.approx(100 * 1 / 3)  # max over golds: "Broncos" matches
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    with pytest.raises(InputError, match="q4"):
        qa.squad_v1_scores([QAExample("q4", "?", "", ())], {"q4": ""})


# --- The official scripts, copied by their semantics (not from qa.py) as independent references.

def _official_normalize(s):
    """evaluate-v1.1.py / evaluate-v2.0.py normalize_answer."""
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return " ".join(remove_articles(remove_punc(s.lower())).split())


def _v11_f1_score(prediction, ground_truth):
    """evaluate-v1.1.py f1_score."""
    prediction_tokens = _official_normalize(prediction).split()
    ground_truth_tokens = _official_normalize(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _v11_evaluate(dataset, predictions):
    """evaluate-v1.1.py evaluate, on [(qid, [gold texts])]: a missing prediction scores 0 and counts."""
    f1 = exact_match = total = 0
    for qid, ground_truths in dataset:
        total += 1
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        exact_match += max(_official_normalize(prediction) == _official_normalize(g) for g in ground_truths)
        f1 += max(_v11_f1_score(prediction, g) for g in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def _v20_compute_f1(a_gold, a_pred):
    """evaluate-v2.0.py compute_f1."""
    gold_toks, pred_toks = _official_normalize(a_gold).split(), _official_normalize(a_pred).split()
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _v20_raw_scores(dataset, predictions):
    """evaluate-v2.0.py get_raw_scores + make_eval_dict (no thresholds), on [(qid, [gold texts])]."""
    exact_scores, f1_scores = {}, {}
    for qid, answers in dataset:
        gold_answers = [a for a in answers if _official_normalize(a)] or [""]
        a_pred = predictions[qid]
        exact_scores[qid] = max(int(_official_normalize(a) == _official_normalize(a_pred)) for a in gold_answers)
        f1_scores[qid] = max(_v20_compute_f1(a, a_pred) for a in gold_answers)
    total = len(dataset)
    return {"exact": 100.0 * sum(exact_scores.values()) / total, "f1": 100.0 * sum(f1_scores.values()) / total}


_ANSWER_TEXTS = ["", "a", "the", "A.", "cat", "the cat", "cat sat", "cat sat on mat", "Cat, sat!", "dog cat",
                 "cat cat", "an apple", "apple"]


def test_compute_f1_matches_both_official_scripts():
    for gold, prediction in itertools.product(_ANSWER_TEXTS, repeat=2):
        assert qa.compute_f1(gold, prediction, empty_answers_agree=False) == pytest.approx(
            _v11_f1_score(prediction, gold)), (gold, prediction)
        assert qa.compute_f1(gold, prediction) == pytest.approx(
            _v20_compute_f1(gold, prediction)), (gold, prediction)
        same_text = _official_normalize(gold) == _official_normalize(prediction)
        assert qa.compute_exact(gold, prediction) == float(same_text)


def test_squad_v1_gold_that_normalises_to_nothing_earns_no_f1():
    # Gold "a" and "The." normalise to "": evaluate-v1.1.py gives F1 0 for any prediction, "" included,
    # while exact match compares the normalised texts and so scores 1 for an empty prediction.
    examples = [QAExample("q1", "?", "", (Answer("a", 0),)), QAExample("q2", "?", "", (Answer("The.", 0),))]
    predictions = {"q1": "", "q2": "the"}
    scores = qa.squad_v1_scores(examples, predictions)
    assert scores == {"exact_match": 100.0, "f1": 0.0}
    assert scores == pytest.approx(_v11_evaluate([("q1", ["a"]), ("q2", ["The."])], predictions))


@pytest.mark.parametrize("seed", range(4))
def test_squad_scores_match_official_scripts_on_random_answers(seed):
    rng = random.Random(seed)
    examples, dataset = [], []
    for index in range(40):
        golds = rng.sample(_ANSWER_TEXTS, rng.randint(1, 3))
        examples.append(QAExample(f"q{index}", "?", "", tuple(Answer(g, 0) for g in golds)))
        dataset.append((f"q{index}", golds))
    predictions = {qid: rng.choice(_ANSWER_TEXTS) for qid, _ in dataset}
    assert qa.squad_v1_scores(examples, predictions) == pytest.approx(_v11_evaluate(dataset, predictions))
    dropped = dict(list(predictions.items())[5:])  # v1.1: missing predictions score 0 and still count
    assert qa.squad_v1_scores(examples, dropped) == pytest.approx(_v11_evaluate(dataset, dropped))
    expected_v2 = _v20_raw_scores(dataset, predictions)
    scores_v2 = qa.squad_v2_scores(examples, predictions)
    assert (scores_v2["exact"], scores_v2["f1"]) == pytest.approx((expected_v2["exact"], expected_v2["f1"]))


def test_squad_v2_scores_and_best_threshold():
    examples = [
        QAExample("q1", "?", "", (Answer("cat", 0),)),
        QAExample("q2", "?", "", (Answer("dog", 0), Answer("a", 0))),  # "a" normalises to nothing: dropped
        QAExample("q3", "?", "", (), is_impossible=True),
        QAExample("q4", "?", "", (), is_impossible=True),
    ]
    predictions = {"q1": "cat", "q2": "", "q3": "", "q4": "bird"}
    null_odds = {"q1": -2.0, "q2": 3.0, "q3": -3.0, "q4": -1.0}
    raw = qa.squad_v2_scores(examples, predictions)
    # q1 right, q2 empty on an answerable question, q3 empty on unanswerable (1), q4 answered it (0).
    assert raw == {"exact": 50.0, "f1": 50.0, "total": 4, "HasAns_exact": 50.0, "HasAns_f1": 50.0,
                   "HasAns_total": 2, "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2}
    scored = qa.squad_v2_scores(examples, predictions, null_odds, na_prob_thresh=-1.5)
    # Odds above -1.5 (q2, q4) count as "" answers: q4 now right, q2 unchanged.
    assert (scored["exact"], scored["NoAns_exact"], scored["HasAns_exact"]) == (75.0, 100.0, 50.0)
    # find_best_thresh by hand: start at 2 (no-answer questions), walk up the odds: q3 +0 (it is
    # answered ""), q1 +1 -> 3 (best, at -2.0), q4 -1 (it answered), q2 +0; best 3/4.
    assert (scored["best_exact"], scored["best_exact_thresh"]) == (75.0, -2.0)
    assert (scored["best_f1"], scored["best_f1_thresh"]) == (75.0, -2.0)
    with pytest.raises(InputError, match="q4"):
        qa.squad_v2_scores(examples, {"q1": "", "q2": "", "q3": ""})


# --- Windowing.

def test_windows_cover_the_context_and_label_the_answer_where_it_fits():
    tokenizer = FakeTokenizer()
    examples = []
    for index, at in enumerate((0, 9, 20, 38)):
        context, start = _context(40, seed=index, phrase="Ångström's Zoë", at=at)
        examples.append(QAExample(f"q{index}", "which king?", context, (Answer("Ångström's Zoë", start),)))
    max_seq_length, doc_stride = 32, 10
    features = qa.make_qa_features(examples, tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride,
                                   is_training=True)
    query_ids = tokenizer.encode("which king?")
    doc_offset, max_tokens_for_doc = len(query_ids) + 2, max_seq_length - len(query_ids) - 3
    num_labelled = 0
    for example_index, example in enumerate(examples):
        rows = np.flatnonzero(features.example_index == example_index)
        assert len(rows) >= 3
        context_ids, offsets = tokenizer.encode_with_offsets(example.context)
        for window, f in enumerate(rows):
            doc_start = window * doc_stride
            length = min(max_tokens_for_doc, len(context_ids) - doc_start)
            expected = [2, *query_ids, 3, *context_ids[doc_start:doc_start + length], 3]
            np.testing.assert_array_equal(features.input_ids[f], expected + [0] * (max_seq_length - len(expected)))
            np.testing.assert_array_equal(features.attention_mask[f], [1] * len(expected) + [0] * (32 - len(expected)))
            np.testing.assert_array_equal(features.segment_ids[f], [0] * doc_offset + [1] * (length + 1)
                                          + [0] * (max_seq_length - len(expected)))
            np.testing.assert_array_equal(features.token_to_char[f, doc_offset:doc_offset + length],
                                          offsets[doc_start:doc_start + length])
            assert (features.token_to_char[f, :doc_offset] == -1).all()
            assert (features.token_to_char[f, doc_offset + length:] == -1).all()
            answer = example.answers[0]
            window_chars = offsets[doc_start][0], offsets[doc_start + length - 1][1]
            holds_answer = window_chars[0] <= answer.start and answer.start + len(answer.text) <= window_chars[1]
            s, e = features.start_positions[f], features.end_positions[f]
            if holds_answer:
                num_labelled += 1
                assert _window_text(example, features, f, s, e) == answer.text
            else:
                assert s == e == 0
        assert doc_start + length == len(context_ids)  # the last window reaches the end
    assert num_labelled > len(examples)  # windows overlap: some answers are labelled in two windows


def test_max_context_by_hand():
    # 10 one-token words, 5-token windows advancing by 2: spans start at 0, 2, 4, 6. Token 3 ties
    # between windows 0 and 1 (first wins); token 4 is centred in window 1.
    examples = [QAExample("q", "q", "a b c d e f g h i j", ())]
    features = qa.make_qa_features(examples, FakeTokenizer(), max_seq_length=9, doc_stride=2,
                                   max_query_length=64, is_training=False)
    assert len(features) == 4 and features.start_positions is None
    chars = features.token_to_char[:, :, 0]  # [4, 9]
    owner = {int(chars[f, t]): f for f in range(4) for t in range(9) if features.token_is_max_context[f, t]}
    assert [owner[2 * i] for i in range(10)] == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert features.token_is_max_context.sum() == 10  # each token in exactly one window


def test_max_context_flags_each_token_once():
    context, _ = _context(60, seed=3)
    features = qa.make_qa_features([QAExample("q", "who", context, ())], FakeTokenizer(), max_seq_length=24,
                                   doc_stride=5, is_training=False)
    starts = features.token_to_char[..., 0][features.token_is_max_context]
    all_starts = np.unique(features.token_to_char[..., 0][features.token_to_char[..., 0] >= 0])
    assert len(features) >= 3 and sorted(starts) == list(all_starts)


def test_question_truncation_impossible_and_bad_answers():
    tokenizer = FakeTokenizer()
    context, start = _context(10, seed=0, phrase="gold", at=4)
    long_question = "which of the many kings " * 10
    examples = [QAExample("q0", long_question, context, (Answer("gold", start),)),
                QAExample("q1", "who?", context, (), is_impossible=True)]
    features = qa.make_qa_features(examples, tokenizer, max_seq_length=64, max_query_length=5, is_training=True)
    np.testing.assert_array_equal(features.input_ids[0, 1:7], tokenizer.encode(long_question)[:5] + [3])
    assert features.start_positions[1] == features.end_positions[1] == 0
    bad = QAExample("bad-qid-7", "who?", context, (Answer("gold", start + 1),))
    with pytest.raises(InputError, match="bad-qid-7"):
        qa.make_qa_features([bad], tokenizer, is_training=True)
    skipped = qa.make_qa_features([bad, *examples], tokenizer, max_seq_length=64, max_query_length=5,
                                  is_training=True, skip_bad_answers=True)
    assert skipped.num_skipped == 1 and list(skipped.example_index) == [1, 2]
    assert len(qa.make_qa_features([bad], tokenizer, is_training=False)) == 1  # offsets unused in eval


# --- Decoding.

def _decode_setup():
    context, start = _context(40, seed=1, phrase="Zoë Ångström", at=13)
    example = QAExample("q", "who?", context, (Answer("Zoë Ångström", start),))
    features = qa.make_qa_features([example], FakeTokenizer(), max_seq_length=40, doc_stride=16, is_training=True)
    s, e = features.start_positions[1], features.end_positions[1]
    assert len(features) >= 3 and features.token_is_max_context[1, s] and e - s + 1 == 5  # zoë + ång|s|tr|öm
    rng = np.random.default_rng(0)
    start_logits = rng.normal(0, 0.1, features.input_ids.shape)
    end_logits = rng.normal(0, 0.1, features.input_ids.shape)
    start_logits[1, s] = end_logits[1, e] = 10.0
    start_logits[1, s + 1] = 8.0  # runner-up: "Ångström" alone, 4 tokens
    return example, features, start_logits, end_logits


def test_decode_returns_the_original_substring_of_the_best_span():
    example, features, start_logits, end_logits = _decode_setup()
    # A higher-scoring start is ignored where its token has more context in another window.
    edge = np.flatnonzero((features.token_to_char[0, :, 0] >= 0) & ~features.token_is_max_context[0])[-1]
    start_logits[0, edge], end_logits[0, edge] = 50.0, 1.0
    predictions, null_odds, nbest = qa.decode_predictions([example], features, start_logits, end_logits)
    assert predictions == {"q": "Zoë Ångström"} and null_odds == {}
    assert nbest["q"][1]["text"] == "Ångström"
    assert sum(entry["probability"] for entry in nbest["q"]) == pytest.approx(1.0)
    assert len(nbest["q"]) == 20
    shorter, _, _ = qa.decode_predictions([example], features, start_logits, end_logits, max_answer_length=4)
    assert shorter == {"q": "Ångström"}


def test_decode_v2_null_threshold():
    example, features, start_logits, end_logits = _decode_setup()
    start_logits[:3, 0] = end_logits[:3, 0] = [12.0, 9.0, 15.0]  # null score: the minimum, 18
    start_logits[3:, 0] = end_logits[3:, 0] = 20.0
    kwargs = {"version_2_with_negative": True}
    predictions, null_odds, nbest = qa.decode_predictions([example], features, start_logits, end_logits, **kwargs)
    assert null_odds["q"] == pytest.approx(18.0 - 20.0) and predictions == {"q": "Zoë Ångström"}
    assert "" in [entry["text"] for entry in nbest["q"]]
    predictions, _, _ = qa.decode_predictions([example], features, start_logits, end_logits,
                                              null_score_diff_threshold=-2.5, **kwargs)
    assert predictions == {"q": ""}


# --- The real SentencePiece tokenizer.

def test_sentencepiece_windows_reproduce_answers(small_tokenizer):
    examples = []
    for index, at in enumerate((2, 30, 55)):
        context, start = _context(60, seed=10 + index, phrase="silver bridge", at=at)
        examples.append(QAExample(f"q{index}", "what was built?", context, (Answer("silver bridge", start),)))
    features = qa.make_qa_features(examples, small_tokenizer, max_seq_length=48, doc_stride=16, is_training=True)
    assert all(np.sum(features.example_index == i) >= 3 for i in range(3))
    labelled = np.flatnonzero(features.start_positions > 0)
    assert set(features.example_index[labelled]) == {0, 1, 2}
    for f in labelled:
        example = examples[features.example_index[f]]
        text = _window_text(example, features, f, features.start_positions[f], features.end_positions[f])
        assert text == "silver bridge"
    f = next(f for f in labelled if features.example_index[f] == 0
             and features.token_is_max_context[f, features.start_positions[f]])
    start_logits, end_logits = np.zeros((2, *features.input_ids.shape))
    start_logits[f, features.start_positions[f]] = end_logits[f, features.end_positions[f]] = 10.0
    predictions, _, _ = qa.decode_predictions(examples, features, start_logits, end_logits)
    assert predictions["q0"] == "silver bridge"
