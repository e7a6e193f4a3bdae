"""bert_jax.finetuning.retrieval: BEIR-layout reading, exact (sharded, chunked) search, ranking and STS metrics.

References: a brute-force NumPy ranking (stable argsort), a loop-by-loop port of the trec_eval definitions,
sklearn's ndcg_score, scipy's spearmanr/pearsonr, and one case computed by hand.
"""

import json
import math

import jax
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from bert_jax.config import InputError
from bert_jax.finetuning import metrics, retrieval

# ------------------------------------------------------------------------------------------ ranking metrics


def test_ranking_metrics_by_hand():
    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d2": 0}}  # q2 has no relevant document: skipped
    rankings = {"q1": ["d3", "d1", "d4", "d2"], "q2": ["d2"]}
    scores = retrieval.ranking_metrics(rankings, qrels, ndcg_at=(1, 10), mrr_at=(1, 10), recall_at=(2, 100))
    dcg = 2 / math.log2(3) + 1 / math.log2(5)   # d1 (gain 2) at rank 2, d2 (gain 1) at rank 4
    ideal = 2 / math.log2(2) + 1 / math.log2(3)  # d1, then d2
    assert scores == pytest.approx({"ndcg@1": 0.0, "ndcg@10": dcg / ideal, "mrr@1": 0.0, "mrr@10": 0.5,
                                    "recall@2": 0.5, "recall@100": 1.0})
    assert scores["ndcg@10"] == pytest.approx(1.692536 / 2.630930, abs=1e-6)  # 0.643322


def _reference_metrics(rankings, qrels, cut):
    """trec_eval's definitions, written out with arrays: the independent reference."""
    ndcg, mrr, recall = [], [], []
    for query, judged in qrels.items():
        if not any(score > 0 for score in judged.values()):
            continue
        ranked = rankings.get(query, [])[:cut]
        gains = np.array([max(judged.get(doc, 0), 0) for doc in ranked], dtype=np.float64)
        discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
        ideal = np.sort(np.array([s for s in judged.values() if s > 0], dtype=np.float64))[::-1][:cut]
        ndcg.append(float(gains @ discounts) / float(ideal @ (1.0 / np.log2(np.arange(2, len(ideal) + 2)))))
        hits = np.flatnonzero(gains > 0)
        mrr.append(1.0 / (hits[0] + 1) if hits.size else 0.0)
        recall.append(np.sum(gains > 0) / sum(s > 0 for s in judged.values()))
    return np.mean(ndcg), np.mean(mrr), np.mean(recall)


@pytest.mark.parametrize("seed", range(3))
def test_ranking_metrics_match_references_on_random_rankings(seed):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(30)]
    qrels, rankings, y_true, y_score = {}, {}, [], []
    for q in range(40):
        judged = rng.choice(30, size=rng.integers(1, 12), replace=False)
        qrels[f"q{q}"] = {docs[i]: int(rng.integers(-1, 4)) for i in judged}  # graded, with 0 and -1
        order = rng.permutation(30)
        rankings[f"q{q}"] = [docs[i] for i in order]
        if any(s > 0 for s in qrels[f"q{q}"].values()):
            relevance = np.zeros(30)
            for doc, s in qrels[f"q{q}"].items():
                relevance[int(doc[1:])] = max(s, 0)
            y_true.append(relevance)
            score = np.empty(30)
            score[order] = np.arange(30, 0, -1)  # rank 1 gets the highest score, no ties
            y_score.append(score)
    for cut in (1, 5, 10):
        got = retrieval.ranking_metrics(rankings, qrels, ndcg_at=(cut,), mrr_at=(cut,), recall_at=(cut,))
        ndcg, mrr, recall = _reference_metrics(rankings, qrels, cut)
        assert got[f"ndcg@{cut}"] == pytest.approx(ndcg, rel=1e-12)
        assert got[f"ndcg@{cut}"] == pytest.approx(sklearn.metrics.ndcg_score(np.array(y_true), np.array(y_score),
                                                                                k=cut), rel=1e-12)
        assert got[f"mrr@{cut}"] == pytest.approx(mrr, rel=1e-12)
        assert got[f"recall@{cut}"] == pytest.approx(recall, rel=1e-12)


# ----------------------------------------------------------------------------------------------------- STS


def test_sts_matches_scipy():
    rng = np.random.default_rng(0)
    sentences = [f"s{i}" for i in range(60)]
    table = {s: rng.normal(size=8).astype(np.float32) for s in sentences}
    a, b = sentences[:30], sentences[30:]
    gold = rng.integers(0, 6, size=30).astype(float)  # STS-style 0..5 with many ties
    scores = retrieval.evaluate_sts(lambda texts: np.stack([table[t] for t in texts]), a, b, gold, batch_size=7)
    cosine = [float(table[x] @ table[y] / np.linalg.norm(table[x]) / np.linalg.norm(table[y])) for x, y in zip(a, b)]
    assert scores["spearman"] == pytest.approx(scipy.stats.spearmanr(cosine, gold).statistic, abs=1e-6)
    assert scores["pearson"] == pytest.approx(scipy.stats.pearsonr(cosine, gold).statistic, abs=1e-6)
    assert scores["num_pairs"] == 30 and all(type(v) in (float, int) for v in scores.values())
    with pytest.raises(InputError, match="29 first sentences"):
        retrieval.evaluate_sts(lambda texts: np.ones((len(texts), 2)), a[:29], b, gold)


# ---------------------------------------------------------------------------------------------- exact search


def _reference_search(queries, corpus, k):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    c = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    scores = q.astype(np.float64) @ c.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: lower corpus index first
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("num_devices", [1, 8])
@pytest.mark.parametrize("query_chunk_size,corpus_chunk_size", [(1000, 100000), (5, 24), (40, 7)])
def test_exact_search_equals_numpy_argsort(num_devices, query_chunk_size, corpus_chunk_size):
    rng = np.random.default_rng(1)
    queries, corpus = rng.normal(size=(37, 16)), rng.normal(size=(101, 16)).astype(np.float32)
    for k in (1, 20, 500):  # 20 > rows per shard of the small chunks; 500 > the corpus size is capped
        scores, indices = retrieval.exact_search(queries, corpus, k, query_chunk_size=query_chunk_size,
                                                 corpus_chunk_size=corpus_chunk_size,
                                                 devices=jax.devices()[:num_devices])
        want_scores, want_indices = _reference_search(queries, corpus, k)
        np.testing.assert_array_equal(indices, want_indices)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
        assert indices.dtype == np.int64 and scores.dtype == np.float32


@pytest.mark.parametrize("num_devices", [1, 8])
@pytest.mark.parametrize("corpus_chunk_size", [100000, 24, 5])
def test_exact_search_breaks_ties_by_corpus_order(num_devices, corpus_chunk_size):
    # Entries of +-0.5 in 4 dimensions: unit vectors whose dot products are exact in any summation order,
    # so the corpus holds many exactly tied documents.
    rng = np.random.default_rng(2)
    corpus = rng.choice([-0.5, 0.5], size=(203, 4)).astype(np.float32)
    queries = rng.choice([-0.5, 0.5], size=(11, 4)).astype(np.float32)
    scores, indices = retrieval.exact_search(queries, corpus, 60, corpus_chunk_size=corpus_chunk_size,
                                             devices=jax.devices()[:num_devices])
    want_scores, want_indices = _reference_search(queries, corpus, 60)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(scores, want_scores)


def test_exact_search_shards_large_corpora_by_itself(monkeypatch):
    rng = np.random.default_rng(3)
    queries, corpus = rng.normal(size=(4, 8)), rng.normal(size=(50, 8))
    assert retrieval._search_devices(50, None) == jax.local_devices()[:1]
    monkeypatch.setattr(retrieval, "SHARD_MIN_DOCUMENTS", 10)
    assert retrieval._search_devices(50, None) == jax.local_devices()
    np.testing.assert_array_equal(retrieval.exact_search(queries, corpus, 10)[1],
                                  _reference_search(queries, corpus, 10)[1])


# ------------------------------------------------------------------------------------------------ BEIR files


def _write(directory, corpus=None, queries=None, qrels=None, split="test"):
    corpus = corpus if corpus is not None else "\n".join([
        json.dumps({"_id": "d1", "title": "Rivers", "text": "water flows downhill"}),
        json.dumps({"_id": "d2", "text": "mountains are tall"}),
        json.dumps({"_id": "d3", "title": "", "text": "forests have trees "}),
        json.dumps({"_id": "q3", "text": "a document sharing a query id"})]) + "\n"
    queries = queries if queries is not None else "\n".join([
        json.dumps({"_id": "q1", "text": "river water"}),
        json.dumps({"_id": "q2", "text": "tall mountains"}),
        json.dumps({"_id": "q3", "text": "a query document"}),
        json.dumps({"_id": "q4", "text": "a query of another split"})]) + "\n"
    qrels = qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td2\t1\nq3\td3\t1\n"
    (directory / "qrels").mkdir(exist_ok=True)
    (directory / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (directory / "queries.jsonl").write_text(queries, encoding="utf-8")
    (directory / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")
    return str(directory)


def test_read_beir(tmp_path):
    data = retrieval.read_beir(_write(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t0\n"))
    assert data.corpus_ids == ["d1", "d2", "d3", "q3"]
    # BEIR's convention: (title + " " + text).strip() when there is a title.
    assert data.corpus_texts == ["Rivers water flows downhill", "mountains are tall", "forests have trees",
                                 "a document sharing a query id"]
    assert data.query_ids == ["q1"] and data.query_texts == ["river water"]  # q2: no relevant doc; q3, q4: unjudged
    assert data.qrels == {"q1": {"d1": 2}} and data.num_skipped_queries == 1


_WORDS = ["river", "water", "mountain", "tall", "tree", "forest", "query", "document"]


def _bag_of_words(texts):
    """A stand-in encoder: word counts over a small vocabulary (+1 so no row is zero)."""
    return np.array([[1.0 + sum(w.startswith(v) for w in t.lower().split()) for v in _WORDS] for t in texts],
                    dtype=np.float32)


@pytest.mark.parametrize("ignore_identical_ids", [True, False])
def test_evaluate_retrieval(tmp_path, ignore_identical_ids):
    directory = _write(tmp_path)
    scores = retrieval.evaluate_retrieval(_bag_of_words, directory, batch_size=2, ndcg_at=(1, 10), recall_at=(1, 100),
                                          ignore_identical_ids=ignore_identical_ids, devices=jax.devices())
    data = retrieval.read_beir(directory)
    _, order = _reference_search(_bag_of_words(data.query_texts), _bag_of_words(data.corpus_texts), 4)
    rankings = {q: [data.corpus_ids[i] for i in row if not (ignore_identical_ids and data.corpus_ids[i] == q)]
                for q, row in zip(data.query_ids, order)}
    want = retrieval.ranking_metrics(rankings, data.qrels, ndcg_at=(1, 10), recall_at=(1, 100))
    assert {k: scores[k] for k in want} == pytest.approx(want)
    assert "q3" not in rankings["q3"] if ignore_identical_ids else rankings["q3"][0] == "q3"
    assert (scores["num_queries"], scores["num_skipped_queries"], scores["num_documents"]) == (3, 0, 4)
    assert all(type(value) in (float, int) for value in scores.values())
    json.dumps(scores)


@pytest.mark.parametrize("encode,message", [
    (lambda texts: np.ones((len(texts) + 1, 3)), r"returned a float64 array of shape \(3, 3\) for 2 texts"),
    (lambda texts: np.full((len(texts), 3), np.nan), "NaN or inf"),
    (lambda texts: np.ones((len(texts), 3 if "Rivers" in texts[0] else 4)), "dim 4 after 3"),
])
def test_bad_encoder_output(tmp_path, encode, message):
    with pytest.raises(InputError, match=message):
        retrieval.evaluate_retrieval(encode, _write(tmp_path), batch_size=2)


_OK_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"
_MALFORMED = {
    # case: (files to write {name: text, or None to delete}, the file:line the message names, a phrase of the fix)
    "no corpus": ({"corpus.jsonl": None}, "corpus.jsonl: no such file", "BEIR-layout directory holds"),
    "no queries": ({"queries.jsonl": None}, "queries.jsonl: no such file", "BEIR-layout directory holds"),
    "no split": ({"qrels/test.tsv": None, "qrels/dev.tsv": _OK_QRELS}, "test.tsv: no such file", "(dev)"),
    "bad json": ({"corpus.jsonl": '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": }\n'},
                 "corpus.jsonl:2", "not valid JSON"),
    "not an object": ({"queries.jsonl": '["q1", "text"]\n'}, "queries.jsonl:1", "not an object"),
    "no _id": ({"queries.jsonl": '{"_id": "q1", "text": "a"}\n{"text": "b"}\n'}, "queries.jsonl:2", "no '_id'"),
    "no text": ({"corpus.jsonl": '{"_id": "d1", "title": "t"}\n'}, "corpus.jsonl:1", "no 'text'"),
    "bad text": ({"corpus.jsonl": '{"_id": "d1", "text": 3}\n'}, "corpus.jsonl:1", "not a string"),
    "bad title": ({"corpus.jsonl": '{"_id": "d1", "text": "a", "title": ["t"]}\n'}, "corpus.jsonl:1",
                  "leave title out"),
    "duplicate id": ({"corpus.jsonl": '{"_id": "d1", "text": "a"}\n\n{"_id": "d1", "text": "b"}\n'},
                     "corpus.jsonl:3", "already the _id on line 1"),
    "empty corpus": ({"corpus.jsonl": "\n"}, "corpus.jsonl has no documents", "one JSON object per line"),
    "empty queries": ({"queries.jsonl": ""}, "queries.jsonl has no queries", "one JSON object per line"),
    "empty qrels": ({"qrels/test.tsv": ""}, "test.tsv is empty", "write the header"),
    "no header": ({"qrels/test.tsv": "q1\td1\t1\n"}, "test.tsv:1", "start the file with the line"),
    "header only": ({"qrels/test.tsv": "query-id\tcorpus-id\tscore\n"}, "test.tsv has a header but no judgements",
                    "add query-id"),
    "unknown query": ({"qrels/test.tsv": _OK_QRELS + "q9\td1\t1\n"}, "test.tsv:3", "query-id 'q9' is not an _id"),
    "unknown doc": ({"qrels/test.tsv": _OK_QRELS + "q1\td9\t1\n"}, "test.tsv:3", "corpus-id 'd9' is not an _id"),
    "float score": ({"qrels/test.tsv": _OK_QRELS + "q2\td2\t0.5\n"}, "test.tsv:3", "score '0.5' is not an integer"),
    "two fields": ({"qrels/test.tsv": _OK_QRELS + "q2 d2 1\n"}, "test.tsv:3", "1 tab-separated fields"),
    "duplicate judgement": ({"qrels/test.tsv": _OK_QRELS + "q1\td1\t2\n"}, "test.tsv:3", "already judged on line 2"),
    "nothing relevant": ({"qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t0\n"}, "test.tsv",
                         "no query has a document with score > 0"),
    "not utf-8": ({"queries.jsonl": '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "caf\xe9"}\n'.encode("latin-1")},
                  "queries.jsonl:2", "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_malformed_beir_files_are_one_line_errors(tmp_path, case):
    files, where, fix = _MALFORMED[case]
    directory = _write(tmp_path)
    for name, text in files.items():
        path = tmp_path / name
        if text is None:
            path.unlink()
        elif isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as error:
        retrieval.read_beir(directory)
    message = str(error.value)
    assert "\n" not in message and where in message and fix in message, message


def test_missing_directory_is_one_line_error(tmp_path):
    with pytest.raises(InputError, match="no such directory"):
        retrieval.read_beir(str(tmp_path / "nowhere"))


def test_sts_scores_of_zero_and_mismatched_embeddings():
    assert metrics.sts_scores(np.eye(3), np.eye(3), [1.0, 2.0, 3.0])["spearman"] != metrics.sts_scores(
        np.eye(3), np.eye(3), [1.0, 2.0, 3.0])["spearman"]  # constant cosines: NaN, as scipy
    with pytest.raises(InputError, match="must both be"):
        metrics.sts_scores(np.ones((3, 2)), np.ones((2, 2)), [1.0, 2.0, 3.0])
