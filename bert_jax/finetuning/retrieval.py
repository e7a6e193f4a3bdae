"""Retrieval evaluation of a sentence encoder on a BEIR-layout directory, and its STS counterpart.

Independent of the model: everything takes `encode(texts: list[str]) -> np.ndarray [n, dim]`.

- `read_beir(directory, split)` reads `corpus.jsonl` (`_id`, `text`, optional `title`), `queries.jsonl`
  (`_id`, `text`) and `qrels/<split>.tsv` (header `query-id<TAB>corpus-id<TAB>score`, integer graded
  relevance). A document with a title is embedded as `(title + " " + text).strip()`, otherwise as
  `text.strip()`: BEIR's SentenceBERT convention, which sentence-transformers' InformationRetrievalEvaluator
  examples also use. Every malformed input is a one-line `InputError` naming the file and line.
- `exact_search` ranks the corpus for each query by the cosine of the normalised embeddings: exact top-k in
  chunks of queries x corpus rows, each corpus chunk sharded over the devices of a 1-D mesh (top_k per shard,
  then one merge), ties broken by corpus order.
- `ranking_metrics` scores rankings as BEIR does with pytrec_eval: nDCG@k with graded gains rel / log2(rank+1)
  and the ideal DCG from every judged document of the query; MRR@k; Recall@k. A document is relevant when
  its score is > 0 (trec_eval's relevance level 1).
- `evaluate_retrieval` and `evaluate_sts` put it together and return plain Python numbers for metrics.json.

Which queries are scored: as BEIR, only the queries of the split's qrels, and of those only the ones with at
least one relevant document (a query whose judgements are all 0 has no nDCG); the rest of queries.jsonl is
not read into the score.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.config import InputError
from bert_jax.data import corpus as corpus_files
from bert_jax.finetuning import metrics

Encode = Callable[[list[str]], np.ndarray]

QRELS_HEADER = ("query-id", "corpus-id", "score")
# A corpus of at least this many documents is sharded over the local devices when there are several.
SHARD_MIN_DOCUMENTS = 16384
_AXIS = "corpus"


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    """One split of a BEIR-layout directory: the corpus in file order, the scored queries and their qrels."""

    corpus_ids: list[str]
    corpus_texts: list[str]          # title + " " + text, stripped (BEIR's convention)
    query_ids: list[str]             # queries of the split with a relevant document, in queries.jsonl order
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {corpus id: graded relevance}, only the scored queries
    num_skipped_queries: int         # queries in the split's qrels with no document scored > 0


# ----------------------------------------------------------------------------------------------- reading


def _lines(path: str, what: str):
    """(line number, text) of each non-blank line of a UTF-8 file, streamed; problems are InputErrors."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file; a BEIR-layout directory holds {what}.")
    with open(path, "rb") as f:
        if found := corpus_files.compression(f.read(8)):
            raise InputError(f"{path} is {found[0]}-compressed: decompress it first (`{found[1]} {path}`).")
        f.seek(0)
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"{path}:{number}: byte 0x{raw[error.start]:02x} is not UTF-8; save the file as "
                                 "UTF-8.") from None
            if line.strip():
                yield number, line


def _read_jsonl(path: str, kind: str) -> tuple[list[str], list[str]]:
    """Ids and texts of corpus.jsonl (kind 'document') or queries.jsonl (kind 'query'), in file order."""
    example = ('{"_id": "d1", "title": "Rivers", "text": "A river flows..."}' if kind == "document"
               else '{"_id": "q1", "text": "what is a river"}')
    ids, texts, first_line = [], [], {}
    for number, line in _lines(path, "corpus.jsonl, queries.jsonl and qrels/<split>.tsv"):
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not valid JSON ({error.msg}); write one JSON object per line, e.g. "
                             f"{example}.") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: a JSON {type(row).__name__}, not an object; write one JSON object per "
                             f"line, e.g. {example}.")
        for key in ("_id", "text"):
            if key not in row:
                raise InputError(f"{where}: no {key!r}; every {kind} needs '_id' and 'text', e.g. {example}.")
        raw_id, text, title = row["_id"], row["text"], row.get("title")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id) == "":
            raise InputError(f"{where}: _id {raw_id!r} is not a non-empty string; give each {kind} a string _id.")
        if not isinstance(text, str):
            raise InputError(f"{where}: text {text!r} is not a string; give the {kind}'s text as a JSON string.")
        if title is not None and not isinstance(title, str):
            raise InputError(f"{where}: title {title!r} is not a string; give a JSON string or leave title out.")
        identifier = str(raw_id)
        if identifier in first_line:
            raise InputError(f"{where}: _id {identifier!r} is already the _id on line {first_line[identifier]}; "
                             f"give each {kind} a unique _id.")
        first_line[identifier] = number
        ids.append(identifier)
        texts.append((title + " " + text).strip() if title is not None else text.strip())
    if not ids:
        plural = "documents" if kind == "document" else "queries"
        raise InputError(f"{path} has no {plural}; write one JSON object per line, e.g. {example}.")
    return ids, texts


def _read_qrels(path: str, query_ids: set[str], corpus_ids: set[str],
                queries_path: str, corpus_path: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    lines = _lines(path, "qrels/<split>.tsv for the split it scores")
    header_fix = "query-id<TAB>corpus-id<TAB>score"
    number, header = next(lines, (0, ""))
    if not number:
        raise InputError(f"{path} is empty; write the header {header_fix}, then one judgement per line.")
    if tuple(field.strip() for field in header.rstrip("\r\n").split("\t")) != QRELS_HEADER:
        raise InputError(f"{path}:{number}: the first line {header.strip()!r} is not the header; start the file "
                         f"with the line {header_fix} (tab-separated).")
    for number, line in lines:
        where = f"{path}:{number}"
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 3:
            raise InputError(f"{where}: {len(fields)} tab-separated fields in {line.strip()!r}; write "
                             "query-id<TAB>corpus-id<TAB>score.")
        query_id, corpus_id, score = (field.strip() for field in fields)
        try:
            relevance = int(score)
        except ValueError:
            raise InputError(f"{where}: score {score!r} is not an integer; give graded relevance as an int "
                             "(0 not relevant, 1, 2, ... more relevant).") from None
        if query_id not in query_ids:
            raise InputError(f"{where}: query-id {query_id!r} is not an _id in {queries_path}; add the query "
                             "there or remove the judgement.")
        if corpus_id not in corpus_ids:
            raise InputError(f"{where}: corpus-id {corpus_id!r} is not an _id in {corpus_path}; add the document "
                             "there or remove the judgement.")
        if (query_id, corpus_id) in first_line:
            raise InputError(f"{where}: ({query_id!r}, {corpus_id!r}) is already judged on line "
                             f"{first_line[query_id, corpus_id]}; keep one judgement per query and document.")
        first_line[query_id, corpus_id] = number
        qrels.setdefault(query_id, {})[corpus_id] = relevance
    if not qrels:
        raise InputError(f"{path} has a header but no judgements; add query-id<TAB>corpus-id<TAB>score lines.")
    return qrels


def read_beir(directory: str, split: str = "test") -> RetrievalSet:
    """Reads one split of a BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""
    if not os.path.isdir(directory):
        raise InputError(f"{directory}: no such directory; give a BEIR-layout directory (corpus.jsonl, "
                         "queries.jsonl, qrels/<split>.tsv).")
    qrels_path = os.path.join(directory, "qrels", f"{split}.tsv")
    if not os.path.isfile(qrels_path):
        qrels_dir = os.path.join(directory, "qrels")
        found = sorted(name[:-4] for name in os.listdir(qrels_dir) if name.endswith(".tsv")) \
            if os.path.isdir(qrels_dir) else []
        raise InputError(f"{qrels_path}: no such file; give a split that has qrels "
                         f"({', '.join(found) if found else 'none in ' + qrels_dir}).")
    corpus_path, queries_path = os.path.join(directory, "corpus.jsonl"), os.path.join(directory, "queries.jsonl")
    corpus_ids, corpus_texts = _read_jsonl(corpus_path, "document")
    all_query_ids, all_query_texts = _read_jsonl(queries_path, "query")
    qrels = _read_qrels(qrels_path, set(all_query_ids), set(corpus_ids), queries_path, corpus_path)
    scored = {qid for qid, judged in qrels.items() if any(score > 0 for score in judged.values())}
    if not scored:
        raise InputError(f"{qrels_path}: no query has a document with score > 0, so there is nothing to rank; "
                         "mark the relevant documents with a positive score.")
    kept = [(qid, text) for qid, text in zip(all_query_ids, all_query_texts) if qid in scored]
    return RetrievalSet(corpus_ids=corpus_ids, corpus_texts=corpus_texts,
                        query_ids=[qid for qid, _ in kept], query_texts=[text for _, text in kept],
                        qrels={qid: qrels[qid] for qid, _ in kept}, num_skipped_queries=len(qrels) - len(scored))


# ------------------------------------------------------------------------------------------------ search


def normalize(embeddings) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32 (a zero row stays zero, so its cosine with anything is 0)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, np.finfo(np.float32).tiny)


@functools.partial(jax.jit, static_argnames=("k",))
def _merge_chunk(best_scores, best_indices, queries, chunk, offset, num_documents, *, k: int):
    """The top k of (the running best) + (queries x this corpus chunk), ties to the lower corpus index.

    `chunk` is [num_shards, shard_rows, dim], sharded over its first axis, so the scores and their top_k
    are computed on each device for its rows; only [num_shards, queries, k] candidates are gathered for the
    merge. Rows at corpus index >= num_documents are padding and score -inf.
    """
    num_shards, shard_rows, _ = chunk.shape
    scores = jnp.einsum("qd,srd->sqr", queries, chunk, precision=jax.lax.Precision.HIGHEST)
    position = offset + jnp.arange(num_shards)[:, None] * shard_rows + jnp.arange(shard_rows)[None, :]
    scores = jnp.where((position < num_documents)[:, None, :], scores, -jnp.inf)
    shard_scores, shard_rank = jax.lax.top_k(scores, min(k, shard_rows))          # [s, q, k'] per device
    shard_indices = offset + jnp.arange(num_shards)[:, None, None] * shard_rows + shard_rank
    num_queries = queries.shape[0]
    # Candidates in corpus order among equal scores: the running best (earlier chunks), then shard by shard.
    candidates = jnp.concatenate([best_scores, shard_scores.transpose(1, 0, 2).reshape(num_queries, -1)], axis=1)
    candidate_indices = jnp.concatenate(
        [best_indices, shard_indices.transpose(1, 0, 2).reshape(num_queries, -1)], axis=1)
    top_scores, top = jax.lax.top_k(candidates, k)
    return top_scores, jnp.take_along_axis(candidate_indices, top, axis=1)


def _search_devices(num_documents: int, devices) -> list:
    if devices is not None:
        devices = list(devices)
        if not devices:
            raise InputError("devices=[]; give at least one device, or None to choose automatically.")
        return devices
    local = jax.local_devices()
    return local if len(local) > 1 and num_documents >= SHARD_MIN_DOCUMENTS else local[:1]


def exact_search(query_embeddings, corpus_embeddings, k: int, *, query_chunk_size: int = 256,
                 corpus_chunk_size: int = 32768, devices: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: ([num_queries, k] float32 scores, [num_queries, k] int64 corpus indices).

    Both sides are L2-normalised here. The corpus is scored `corpus_chunk_size` rows at a time (each chunk
    sharded over `devices`) against `query_chunk_size` queries at a time, so device memory holds
    query_chunk_size x corpus_chunk_size scores at most; the corpus may be a np.memmap. `devices=None`
    shards over all local devices when there are several and the corpus has at least SHARD_MIN_DOCUMENTS
    rows, else uses one. Equal scores rank in corpus order. k is capped at the corpus size.
    """
    queries = np.asarray(query_embeddings)
    corpus = corpus_embeddings if isinstance(corpus_embeddings, np.ndarray) else np.asarray(corpus_embeddings)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise InputError(f"query embeddings {queries.shape} and corpus embeddings {tuple(corpus.shape)} must be "
                         "[n, dim] with the same dim; embed both with the same encoder.")
    num_queries, num_documents = queries.shape[0], corpus.shape[0]
    if num_documents == 0 or k < 1 or query_chunk_size < 1 or corpus_chunk_size < 1:
        raise InputError(f"exact_search needs a non-empty corpus (got {num_documents} rows), k >= 1 (got {k}) and "
                         f"chunk sizes >= 1 (got {query_chunk_size}, {corpus_chunk_size}).")
    k = min(k, num_documents)
    if num_queries == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    devices = _search_devices(num_documents, devices)
    mesh = Mesh(np.asarray(devices), (_AXIS,))
    chunk_sharding = NamedSharding(mesh, PartitionSpec(_AXIS, None, None))
    replicated = NamedSharding(mesh, PartitionSpec())
    num_shards = len(devices)
    shard_rows = -(-min(corpus_chunk_size, num_documents) // num_shards)
    chunk_rows = num_shards * shard_rows
    query_rows = min(query_chunk_size, num_queries)
    query_blocks = []  # [query block on device, best scores, best indices], one per query chunk
    queries = normalize(queries)
    for start in range(0, num_queries, query_rows):
        block = _padded(queries[start:start + query_rows], query_rows)
        query_blocks.append([jax.device_put(block, replicated),
                             jax.device_put(np.full((query_rows, k), -np.inf, np.float32), replicated),
                             jax.device_put(np.full((query_rows, k), -1, np.int32), replicated)])
    for offset in range(0, num_documents, chunk_rows):
        chunk = _padded(normalize(corpus[offset:offset + chunk_rows]), chunk_rows)
        chunk = jax.device_put(chunk.reshape(num_shards, shard_rows, -1), chunk_sharding)
        for block in query_blocks:
            block[1], block[2] = _merge_chunk(block[1], block[2], block[0], chunk, np.int32(offset),
                                              np.int32(num_documents), k=k)
            # One merge in flight at a time: XLA:CPU's collectives of several queued programs can wait on each
            # other's rendezvous for good on a machine with few cores (8 fake devices on 2 cores did).
            jax.block_until_ready(block[1])
    scores = np.concatenate([np.asarray(block[1]) for block in query_blocks])[:num_queries]
    indices = np.concatenate([np.asarray(block[2]) for block in query_blocks])[:num_queries]
    return scores, indices.astype(np.int64)


def _padded(rows: np.ndarray, num_rows: int) -> np.ndarray:
    if rows.shape[0] == num_rows:
        return rows
    return np.concatenate([rows, np.zeros((num_rows - rows.shape[0], rows.shape[1]), rows.dtype)])


# ----------------------------------------------------------------------------------------------- metrics


def ranking_metrics(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], *,
                    ndcg_at: Sequence[int] = (10,), mrr_at: Sequence[int] = (10,),
                    recall_at: Sequence[int] = (100,)) -> dict[str, float]:
    """nDCG@k, MRR@k and Recall@k ("ndcg@10", ...) averaged over the queries of `qrels` with a relevant doc.

    `rankings` maps a query id to its ranked corpus ids (best first; a query missing from it scores 0).
    Gains are the graded scores (negative ones count 0, unjudged documents 0): DCG@k = sum over ranks
    r = 1..k of rel / log2(r + 1), divided by the DCG of the query's judged documents sorted by score
    (pytrec_eval's ndcg_cut, which BEIR reports). MRR@k is 1 / the rank of the first document with
    score > 0 within k (0 if none); Recall@k is the fraction of the query's documents with score > 0
    found within k.
    """
    for name, cutoffs in (("ndcg_at", ndcg_at), ("mrr_at", mrr_at), ("recall_at", recall_at)):
        if any(not isinstance(cut, (int, np.integer)) or cut < 1 for cut in cutoffs):
            raise InputError(f"{name}={tuple(cutoffs)!r}; give positive integer cut-offs, e.g. (10,).")
    totals = {**{f"ndcg@{c}": 0.0 for c in ndcg_at}, **{f"mrr@{c}": 0.0 for c in mrr_at},
              **{f"recall@{c}": 0.0 for c in recall_at}}
    num_queries = 0
    for query_id, judged in qrels.items():
        relevant = {doc for doc, score in judged.items() if score > 0}
        if not relevant:
            continue
        num_queries += 1
        gains = [max(judged.get(doc, 0), 0) for doc in rankings.get(query_id, ())]
        ideal = sorted((score for score in judged.values() if score > 0), reverse=True)
        for cut in ndcg_at:
            totals[f"ndcg@{cut}"] += _dcg(gains[:cut]) / _dcg(ideal[:cut])
        first = next((rank for rank, gain in enumerate(gains, start=1) if gain > 0), None)
        for cut in mrr_at:
            totals[f"mrr@{cut}"] += 1.0 / first if first is not None and first <= cut else 0.0
        for cut in recall_at:
            totals[f"recall@{cut}"] += sum(gain > 0 for gain in gains[:cut]) / len(relevant)
    if not num_queries:
        raise InputError("no query in the qrels has a document with score > 0; there is nothing to score.")
    return {name: total / num_queries for name, total in totals.items()}


def _dcg(gains: Sequence[int]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


# ------------------------------------------------------------------------------------------- evaluation


def encode_all(encode: Encode, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """encode() over `texts` in batches of `batch_size`, as one float32 [len(texts), dim] array, checked."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}; give a positive number of texts per encode() call.")
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        embeddings = np.asarray(encode(batch))
        if embeddings.ndim != 2 or embeddings.shape[0] != len(batch) or embeddings.dtype.kind not in "fiu":
            raise InputError(f"encode() returned a {embeddings.dtype} array of shape {embeddings.shape} for "
                             f"{len(batch)} texts; it must return a [num_texts, dim] float array.")
        if parts and embeddings.shape[1] != parts[0].shape[1]:
            raise InputError(f"encode() returned dim {embeddings.shape[1]} after {parts[0].shape[1]}; it must "
                             "return the same embedding size for every batch.")
        if not np.isfinite(embeddings).all():
            raise InputError(f"encode() returned NaN or inf for texts {start}..{start + len(batch) - 1}; check "
                             "the model (a diverged checkpoint?) before evaluating it.")
        parts.append(embeddings.astype(np.float32, copy=False))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def evaluate_retrieval(encode: Encode, directory: str, split: str = "test", *, batch_size: int = 128,
                       ndcg_at: Sequence[int] = (10,), mrr_at: Sequence[int] = (10,),
                       recall_at: Sequence[int] = (100,), ignore_identical_ids: bool = True,
                       query_chunk_size: int = 256, corpus_chunk_size: int = 32768,
                       devices: Sequence | None = None) -> dict[str, float | int]:
    """Embeds a BEIR-layout split with `encode`, ranks the corpus by exact cosine and scores the ranking.

    Returns {"ndcg@10", "mrr@10", "recall@100" (one key per cut-off), "num_queries" (scored),
    "num_skipped_queries" (judged in the split but with no document scored > 0), "num_documents"}.
    With `ignore_identical_ids` (BEIR's default) a document whose _id is the query's _id is left out of
    that query's ranking, as BEIR does for sets such as ArguAna and Quora.
    """
    data = read_beir(directory, split)
    depth = max([*ndcg_at, *mrr_at, *recall_at])
    corpus_embeddings = encode_all(encode, data.corpus_texts, batch_size)
    query_embeddings = encode_all(encode, data.query_texts, batch_size)
    _, indices = exact_search(query_embeddings, corpus_embeddings, depth + int(ignore_identical_ids),
                              query_chunk_size=query_chunk_size, corpus_chunk_size=corpus_chunk_size,
                              devices=devices)
    rankings = {}
    for query_id, row in zip(data.query_ids, indices):
        ranked = [data.corpus_ids[index] for index in row]
        if ignore_identical_ids:
            ranked = [doc for doc in ranked if doc != query_id]
        rankings[query_id] = ranked[:depth]
    scores: dict[str, float | int] = dict(ranking_metrics(rankings, data.qrels, ndcg_at=ndcg_at, mrr_at=mrr_at,
                                                          recall_at=recall_at))
    scores.update(num_queries=len(data.query_ids), num_skipped_queries=data.num_skipped_queries,
                  num_documents=len(data.corpus_ids))
    return scores


def evaluate_sts(encode: Encode, pairs_a: Sequence[str], pairs_b: Sequence[str], gold, *,
                 batch_size: int = 128) -> dict[str, float | int]:
    """STS: {"spearman", "pearson"} of cosine(encode(a), encode(b)) against the gold scores, "num_pairs"."""
    pairs_a, pairs_b, gold = list(pairs_a), list(pairs_b), np.asarray(gold, dtype=np.float64)
    if not (len(pairs_a) == len(pairs_b) == gold.size) or gold.ndim != 1 or not pairs_a:
        raise InputError(f"{len(pairs_a)} first sentences, {len(pairs_b)} second sentences and {gold.size} gold "
                         "scores; give one (sentence, sentence, score) per pair, at least one pair.")
    scores: dict[str, float | int] = dict(metrics.sts_scores(encode_all(encode, pairs_a, batch_size),
                                                             encode_all(encode, pairs_b, batch_size), gold))
    scores["num_pairs"] = len(pairs_a)
    return scores
