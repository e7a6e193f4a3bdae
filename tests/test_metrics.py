"""bert_jax.finetuning.metrics against sklearn 1.9, scipy, a line-by-line port of conlleval and hand counts."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from bert_jax.config import InputError
from bert_jax.finetuning import metrics


def _random_pairs(seed, size, num_classes):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size)
    # Correlated with the labels so the scores are far from 0 and a sign error would show.
    predictions = np.where(rng.random(size) < 0.7, labels, rng.integers(0, num_classes, size))
    return predictions, labels


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    predictions, labels = _random_pairs(seed, 50 + 13 * seed, 2)
    assert metrics.accuracy(predictions, labels) == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions))
    assert metrics.f1_binary(predictions, labels) == pytest.approx(sklearn.metrics.f1_score(labels, predictions))
    assert metrics.f1_binary(predictions, labels, positive=0) == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, pos_label=0))
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions))
    three_class = _random_pairs(seed, 40, 3)
    assert metrics.matthews_corrcoef(*three_class) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(three_class[1], three_class[0]))


def test_mcc_and_f1_degenerate_cases():
    # A constant prediction leaves MCC undefined; sklearn (and CoLA's leaderboard) report 0.
    assert metrics.matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    assert metrics.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # TP=2, FP=1, FN=1 by hand: F1 = 4 / 6.
    assert metrics.f1_binary([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(2 / 3)
    assert metrics.f1_binary([0, 0], [0, 0]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 40).astype(float)  # few distinct values: many ties
    y = x + rng.normal(0, 2, 40).round()
    assert metrics.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0])
    assert metrics.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0])
    continuous = rng.normal(size=30), rng.normal(size=30)
    assert metrics.spearman(*continuous) == pytest.approx(scipy.stats.spearmanr(*continuous)[0])
    # Ranks with ties by hand: values 10, 20, 20, 30 -> ranks 1, 2.5, 2.5, 4.
    np.testing.assert_allclose(metrics._average_ranks(np.array([20.0, 10.0, 30.0, 20.0])), [2.5, 1, 4, 2.5])


def test_correlations_of_a_constant_are_nan_as_scipy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(scipy.stats.pearsonr([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[0])
    assert math.isnan(metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(metrics.spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


def test_correlations_with_nan_are_nan_as_scipy():
    x, y = [1.0, 2.0, float("nan"), 4.0, 3.0], [1.0, 3.0, 2.0, 4.0, 5.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(scipy.stats.spearmanr(x, y)[0]) and math.isnan(scipy.stats.pearsonr(x, y)[0])
    assert math.isnan(metrics.spearman(x, y)) and math.isnan(metrics.spearman(y, x))
    assert math.isnan(metrics.pearson(x, y)) and math.isnan(metrics.pearson(y, x))
    # inf is ranked as the largest value by scipy, not a NaN.
    with_inf = [1.0, 2.0, float("inf"), 4.0, 3.0]
    assert metrics.spearman(with_inf, y) == pytest.approx(scipy.stats.spearmanr(with_inf, y)[0])


@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e200, 1e300])
def test_pearson_matches_scipy_at_any_scale(scale):
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = x + rng.normal(size=50)
    expected = scipy.stats.pearsonr(x, y)[0]
    assert 0.5 < expected < 0.9
    assert metrics.pearson(x * scale, y * scale) == pytest.approx(expected, rel=1e-12)
    assert metrics.pearson(x * scale, y) == pytest.approx(scipy.stats.pearsonr(x * scale, y)[0], rel=1e-12)
    # Shifted so no value is near 0: the centring, not only the scaling, is checked.
    assert metrics.pearson((x + 3) * scale, (y - 7) * scale) == pytest.approx(expected, rel=1e-9)
    with np.errstate(over="ignore"):  # the mse of 1e200-scale values is inf, as numpy's
        assert metrics.regression_scores(x * scale, y * scale)["pearson"] == pytest.approx(expected, rel=1e-12)


# --- Metrics of user-declared tasks against sklearn and scipy.

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_labels", [2, 3, 7])
def test_classification_scores_match_sklearn(seed, num_labels):
    predictions, labels = _random_pairs(seed, 30 + 11 * seed, num_labels)
    scores = metrics.classification_scores(predictions, labels, num_labels)
    assert scores["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions))
    assert scores["macro_f1"] == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, average="macro", zero_division=0))
    assert scores["mcc"] == pytest.approx(sklearn.metrics.matthews_corrcoef(labels, predictions))
    if num_labels == 2:
        assert scores["f1"] == pytest.approx(sklearn.metrics.f1_score(labels, predictions, zero_division=0))
    else:
        assert "f1" not in scores


@pytest.mark.parametrize("predictions, labels, num_labels", [
    ([0, 0, 1, 1, 0], [0, 1, 2, 1, 0], 4),   # class 2 never predicted; class 3 in neither (not averaged)
    ([2, 2, 2, 2], [0, 1, 2, 2], 3),         # constant prediction: MCC 0
    ([1, 1, 1], [1, 1, 1], 2),               # one class only
    ([0, 0, 0], [0, 0, 0], 2),               # no positive at all: binary F1 0
    ([3, 0, 3, 1], [3, 3, 0, 1], 5),         # class 0 predicted once and wrong
])
def test_classification_scores_edge_cases_match_sklearn(predictions, labels, num_labels):
    scores = metrics.classification_scores(np.array(predictions), np.array(labels), num_labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {"accuracy": sklearn.metrics.accuracy_score(labels, predictions),
                    "macro_f1": sklearn.metrics.f1_score(labels, predictions, average="macro", zero_division=0),
                    "mcc": sklearn.metrics.matthews_corrcoef(labels, predictions)}
        if num_labels == 2:
            expected["f1"] = sklearn.metrics.f1_score(labels, predictions, zero_division=0)
    assert scores == pytest.approx(expected)


def test_classification_scores_refuse_bad_input():
    with pytest.raises(InputError, match="0..2"):
        metrics.classification_scores([0, 3], [0, 1], 3)
    with pytest.raises(InputError, match="argmax"):
        metrics.classification_scores([0.2, 0.8], [0, 1], 2)
    with pytest.raises(InputError, match="at least 2"):
        metrics.classification_scores([0, 0], [0, 0], 1)
    with pytest.raises(InputError, match="same length"):
        metrics.classification_scores([0, 1], [0], 2)


def _multilabel_reference(predicted, gold):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"micro_f1": sklearn.metrics.f1_score(gold, predicted, average="micro", zero_division=0),
                "macro_f1": sklearn.metrics.f1_score(gold, predicted, average="macro", zero_division=0),
                "micro_precision": sklearn.metrics.precision_score(gold, predicted, average="micro",
                                                                   zero_division=0),
                "micro_recall": sklearn.metrics.recall_score(gold, predicted, average="micro", zero_division=0),
                "exact_match": sklearn.metrics.accuracy_score(gold, predicted)}


@pytest.mark.parametrize("seed", range(5))
def test_multilabel_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    num_examples, num_labels = 20 + 7 * seed, 2 + seed
    gold = (rng.random((num_examples, num_labels)) < 0.3).astype(int)
    flips = rng.random(gold.shape) < 0.15 + 0.05 * seed
    predicted = np.where(flips, 1 - gold, gold)  # mostly right, so every score is far from 0 and 1
    gold[0] = predicted[0] = 0  # an all-zero row in both
    scores = metrics.multilabel_scores(predicted, gold)
    assert scores == pytest.approx(_multilabel_reference(predicted, gold))
    assert 0 < scores["exact_match"] < 1
    assert metrics.multilabel_scores(predicted.astype(bool), gold.astype(bool)) == scores


@pytest.mark.parametrize("predicted, gold", [
    ([[0, 0, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 0]]),  # nothing predicted: precision 0 by zero_division
    ([[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]),  # no positive anywhere: every F1 0, exact match 1
    ([[1, 0, 0], [1, 0, 1]], [[1, 0, 0], [1, 1, 0]]),  # label 1 never predicted, label 2 never gold
    ([[1, 1, 1]], [[1, 1, 1]]),                        # one example, all right
])
def test_multilabel_scores_edge_cases_match_sklearn(predicted, gold):
    predicted, gold = np.array(predicted), np.array(gold)
    assert metrics.multilabel_scores(predicted, gold) == pytest.approx(_multilabel_reference(predicted, gold))


def test_multilabel_scores_refuse_bad_input():
    with pytest.raises(InputError, match="Threshold"):
        metrics.multilabel_scores(np.array([[0.2, 0.9]]), np.array([[0, 1]]))
    with pytest.raises(InputError, match="num_labels"):
        metrics.multilabel_scores(np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(InputError, match="same non-empty shape"):
        metrics.multilabel_scores(np.zeros((2, 3)), np.zeros((2, 4)))


@pytest.mark.parametrize("seed", range(5))
def test_regression_scores_match_scipy_and_numpy(seed):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, 40 + 10 * seed)
    predictions = labels + rng.normal(0, 1, labels.size)
    scores = metrics.regression_scores(predictions, labels)
    assert scores == pytest.approx({"pearson": scipy.stats.pearsonr(predictions, labels)[0],
                                    "spearman": scipy.stats.spearmanr(predictions, labels)[0],
                                    "mse": sklearn.metrics.mean_squared_error(labels, predictions),
                                    "mae": sklearn.metrics.mean_absolute_error(labels, predictions)})
    assert scores["mse"] == pytest.approx(np.mean((predictions - labels) ** 2))


def test_regression_scores_of_a_constant_prediction():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    scores = metrics.regression_scores(np.full(4, 2.5), labels)
    assert math.isnan(scores["pearson"]) and math.isnan(scores["spearman"])
    assert (scores["mse"], scores["mae"]) == pytest.approx((1.25, 1.0))


def test_glue_metrics_per_task():
    predictions, labels = _random_pairs(0, 60, 2)
    assert set(metrics.glue_metrics("cola", predictions, labels)) == {"mcc"}
    for task in ("sst2", "SST-2", "mnli", "mnli_mismatched", "mnli-mm", "qnli", "rte", "wnli"):
        assert metrics.glue_metrics(task, predictions, labels) == {
            "accuracy": pytest.approx(sklearn.metrics.accuracy_score(labels, predictions))}
    mrpc = metrics.glue_metrics("mrpc", predictions, labels)
    assert mrpc["f1"] == pytest.approx(sklearn.metrics.f1_score(labels, predictions))
    assert mrpc["combined"] == pytest.approx((mrpc["f1"] + mrpc["accuracy"]) / 2)
    scores = np.linspace(0, 5, 60)
    stsb = metrics.glue_metrics("sts-b", scores + np.sin(scores), scores)
    assert set(stsb) == {"pearson", "spearman", "combined"}
    assert [metrics.primary_metric(t) for t in ("cola", "mrpc", "qqp", "stsb", "rte")] == [
        "mcc", "f1", "f1", "spearman", "accuracy"]
    with pytest.raises(InputError, match="squad"):
        metrics.glue_metrics("squad", predictions, labels)
    with pytest.raises(InputError, match="same length"):
        metrics.accuracy([0, 1], [0])


@pytest.mark.parametrize("tags, expected", [
    # IOB2: B- starts every chunk.
    ("B-PER I-PER O B-LOC B-LOC I-LOC", {("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)}),
    # The same chunks in IOB1: I- starts a chunk; B- only separates adjacent same-type chunks.
    ("I-PER I-PER O I-LOC B-LOC I-LOC", {("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)}),
    # IOBES / BIOES.
    ("B-PER E-PER O S-LOC S-LOC B-ORG I-ORG E-ORG", {("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("ORG", 5, 7)}),
    # I-X after O starts a chunk; I-Y after I-X ends X and starts Y; a chunk may end the sentence.
    ("O I-PER I-PER I-LOC I-LOC", {("PER", 1, 2), ("LOC", 3, 4)}),
    ("B-PER I-LOC", {("PER", 0, 0), ("LOC", 1, 1)}),
    ("O O O", set()),
    # Types may contain hyphens.
    ("B-MISC-X I-MISC-X", {("MISC-X", 0, 1)}),
])
def test_conll_entities(tags, expected):
    assert metrics.conll_entities(tags.split()) == expected


def test_iob1_and_iob2_encodings_of_the_same_chunks_read_the_same():
    expected = {("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 5), ("ORG", 6, 6)}
    iob2 = "B-PER I-PER B-PER O B-LOC I-LOC B-ORG".split()
    iob1 = "I-PER I-PER B-PER O I-LOC I-LOC I-ORG".split()  # B- only where two PER chunks touch
    assert metrics.conll_entities(iob2) == metrics.conll_entities(iob1) == expected
    # B-PER after I-PER splits; I-PER after I-PER continues.
    assert metrics.conll_entities(["I-PER", "B-PER"]) == {("PER", 0, 0), ("PER", 1, 1)}
    assert metrics.conll_entities(["I-PER", "I-PER"]) == {("PER", 0, 1)}


def test_conll_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER(0,1), LOC(3,3)
            ["B-ORG", "I-ORG", "I-ORG", "O"]]       # ORG(0,2)
    pred = [["B-PER", "I-PER", "I-PER", "B-ORG", "O"],  # PER(0,2): one too long; ORG(3,3): wrong type
            ["B-ORG", "I-ORG", "I-ORG", "O"]]           # exact
    scores = metrics.conll_scores(true, pred)
    # 1 correct of 3 predicted and 3 true chunks; 7 of 9 tags right.
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(1 / 3)
    assert scores["accuracy"] == pytest.approx(7 / 9)
    assert scores["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "num_true": 1, "num_pred": 1}
    assert scores["per_type"]["LOC"]["num_pred"] == 0 and scores["per_type"]["LOC"]["recall"] == 0.0
    assert scores["per_type"]["ORG"]["precision"] == pytest.approx(0.5)
    assert scores["per_type"]["ORG"]["recall"] == pytest.approx(1.0)

    # One token too short: still both a false positive and a false negative.
    short = metrics.conll_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert (short["precision"], short["recall"], short["f1"]) == (0.0, 0.0, 0.0)
    # The same chunk at the same place in different sentences is two chunks, not one.
    two = metrics.conll_scores([["B-PER"], ["O"]], [["O"], ["B-PER"]])
    assert (two["precision"], two["recall"]) == (0.0, 0.0)
    with pytest.raises(InputError, match="sentence 0"):
        metrics.conll_scores([["O", "O"]], [["O"]])


# --- A line-by-line port of conlleval's perl counting (endOfChunk/startOfChunk and the inCorrect state
# machine), independent of the set-based implementation under test. Covers B/I/O/E tags.

def _perl_end(prev_tag, tag, prev_type, type_):
    pairs = {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}
    return (prev_tag, tag) in pairs or (prev_tag not in ("O", ".") and prev_type != type_)


def _perl_start(prev_tag, tag, prev_type, type_):
    pairs = {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}
    return (prev_tag, tag) in pairs or (tag not in ("O", ".") and prev_type != type_)


def _perl_conlleval(true_sequences, pred_sequences):
    correct_chunks = found_correct = found_guessed = correct_tags = tokens = 0
    for true_tags, pred_tags in zip(true_sequences, pred_sequences):
        last_correct, last_correct_type, last_guessed, last_guessed_type = "O", "", "O", ""
        in_correct = False
        for position, (c, g) in enumerate(zip(list(true_tags) + ["O"], list(pred_tags) + ["O"])):
            correct, _, correct_type = c.partition("-")
            guessed, _, guessed_type = g.partition("-")
            end_c = _perl_end(last_correct, correct, last_correct_type, correct_type)
            end_g = _perl_end(last_guessed, guessed, last_guessed_type, guessed_type)
            if in_correct:
                if end_c and end_g and last_guessed_type == last_correct_type:
                    in_correct = False
                    correct_chunks += 1
                elif end_c != end_g or guessed_type != correct_type:
                    in_correct = False
            start_c = _perl_start(last_correct, correct, last_correct_type, correct_type)
            start_g = _perl_start(last_guessed, guessed, last_guessed_type, guessed_type)
            if start_c and start_g and guessed_type == correct_type:
                in_correct = True
            found_correct += start_c
            found_guessed += start_g
            if position < len(true_tags):
                tokens += 1
                correct_tags += c == g
            last_correct, last_correct_type, last_guessed, last_guessed_type = (
                correct, correct_type, guessed, guessed_type)
    precision = correct_chunks / found_guessed if found_guessed else 0.0
    recall = correct_chunks / found_correct if found_correct else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1, correct_tags / tokens


@pytest.mark.parametrize("seed", range(4))
def test_conll_scores_match_perl_port_on_random_tags(seed):
    rng = np.random.default_rng(seed)
    tag_set = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    true, pred = [], []
    for _ in range(30):
        length = int(rng.integers(1, 12))
        true.append([tag_set[i] for i in rng.integers(0, len(tag_set), length)])
        # Mostly the true tags, some replaced: boundary and type errors, invalid IOB2 included.
        pred.append([t if rng.random() < 0.75 else tag_set[rng.integers(0, len(tag_set))] for t in true[-1]])
    scores = metrics.conll_scores(true, pred)
    expected = _perl_conlleval(true, pred)
    assert 0.2 < expected[2] < 0.95  # a mix of hits and misses, so the comparison means something
    assert (scores["precision"], scores["recall"], scores["f1"], scores["accuracy"]) == pytest.approx(expected)
