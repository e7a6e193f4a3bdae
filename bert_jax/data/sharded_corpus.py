"""Parallel, restartable tokenization of a document stream into sharded array_record files.

The main process streams documents (never a list of the whole corpus), cuts each split into chunks of
`docs_per_shard` documents and hands each chunk to a worker process, which tokenizes it and writes one
whole shard. At most `num_workers + 1` chunks are in flight, so memory stays at a few shards' worth
however large the corpus. A shard's content depends only on its chunk, so the output is byte-identical
whatever the number of workers.

Layout of a dataset directory:
  <split>-<NNNNN>.array_record  one record per document (see `encode_document`)
  <split>-<NNNNN>.json          that shard's statistics: documents, sentences, tokens
  index.json                    every shard's statistics and the totals; written last, it marks the
                                dataset complete
Each shard is written under a temporary name and renamed once complete (its statistics first), so a
re-run after a crash keeps the complete shards and tokenizes only the missing ones.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import glob
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from absl import logging
from array_record.python import array_record_data_source, array_record_module

from bert_jax.config import InputError
from bert_jax.runtime import atomic

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
# group_size:1 makes every record its own chunk, so random access reads one document, not a group
# (what TFDS writes too); zstd:1 is as small as TFDS's default brotli here and faster to write.
_WRITER_OPTIONS = "group_size:1,zstd:1"
_DOCS_PER_TOKENIZER_CALL = 512

# A document is its sentences (list[str]), or raw text (str) that the writer's `sentence_splitter`
# cuts into sentences inside the worker.
Document = Sequence[str] | str


# ------------------------------------------------------------------ records

def encode_document(sentence_ids: Sequence[Sequence[int]]) -> bytes:
    """One record: int32 little-endian [num_sentences, *sentence_lengths, *tokens]."""
    lengths = [len(ids) for ids in sentence_ids]
    flat = [len(lengths), *lengths]
    for ids in sentence_ids:
        flat.extend(ids)
    return np.asarray(flat, dtype="<i4").tobytes()


def decode_document(record: bytes) -> dict[str, np.ndarray]:
    """{'tokens': int32 [num_tokens], 'sentence_lengths': int32 [num_sentences]} of one record."""
    values = np.frombuffer(record, dtype="<i4").astype(np.int32)  # a writable, native-order copy
    num_sentences = int(values[0])
    return {"tokens": values[1 + num_sentences:], "sentence_lengths": values[1:1 + num_sentences]}


class ShardedCorpusSource:
    """Random access to one split's documents: `len(src)`, `src[i]`, `src.__getitems__(keys)`.

    Elements are what `decode_document` returns. `statistics` holds the split's totals from the index
    (documents, sentences, tokens, shards). Pickles as its file list, so Grain worker processes open
    their own readers.
    """

    def __init__(self, paths_and_sizes: Sequence[tuple[str, int]], statistics: dict[str, Any] | None = None):
        self.statistics = dict(statistics or {})
        self._paths_and_sizes = [(p, n) for p, n in paths_and_sizes if n > 0]
        # "path[start:end]" tells the reader the record count, so no file is opened until it is read.
        self._records = array_record_data_source.ArrayRecordDataSource(
            [f"{p}[0:{n}]" for p, n in self._paths_and_sizes])

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return decode_document(self._records[int(index)])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [decode_document(r) for r in self._records.__getitems__([int(i) for i in indices])]

    def __getstate__(self):
        return {"paths_and_sizes": self._paths_and_sizes, "statistics": self.statistics}

    def __setstate__(self, state):
        self.__init__(state["paths_and_sizes"], state["statistics"])

    def __repr__(self) -> str:
        return f"ShardedCorpusSource({len(self._paths_and_sizes)} shards, {len(self)} documents)"


def read_index(dataset_dir: str) -> dict[str, Any] | None:
    """The dataset's index, or None if it was never completed."""
    path = os.path.join(dataset_dir, INDEX_FILE)
    if not os.path.isfile(path):
        return None
    index = _read_cached_json(path)
    return index if index and index.get("format_version") == FORMAT_VERSION else None


def _read_cached_json(path: str) -> dict[str, Any] | None:
    """A cache file of ours, or None when it is damaged (a crash, a full disk, an edit): the cache is then
    rebuilt, never reported as the user's error."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logging.warning("%s is damaged (%s); rebuilding it.", path, error)
        return None
    return value if isinstance(value, dict) else None


def load_sources(dataset_dir: str, index: dict[str, Any]) -> dict[str, ShardedCorpusSource]:
    """A source per split of a completed dataset."""
    sources = {}
    for split, info in sorted(index["splits"].items()):
        statistics = {key: info[key] for key in ("documents", "sentences", "tokens")}
        statistics.update(shards=len(info["shards"]), directory=dataset_dir)
        sources[split] = ShardedCorpusSource([(os.path.join(dataset_dir, s["file"]), s["documents"])
                                              for s in info["shards"]], statistics)
    return sources


# ------------------------------------------------------------------ one shard (runs in a worker)

_worker_tokenizer = None  # set in each worker process by _init_worker
_worker_threads: int | None = None  # None in the main process: SentencePiece uses every core


def _init_worker(tokenizer, threads: int, parent_pid: int) -> None:
    """Each worker process tokenizes with its share of the cores, so N workers do not run N x cores threads,
    and ends itself when its parent is gone (a SIGKILLed run left ~250 MB orphans per worker)."""
    global _worker_tokenizer, _worker_threads
    _worker_tokenizer, _worker_threads = tokenizer, threads
    os.environ["RAYON_NUM_THREADS"] = str(threads)  # HF `tokenizers`' pool, read when it first starts
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Polls the parent's pid (portable, unlike Linux's PR_SET_PDEATHSIG); an orphan is re-parented."""
    while os.getppid() == parent_pid:
        time.sleep(poll_seconds)
    os._exit(1)


def _shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:05d}"


def _tokenize(tokenizer, documents: Sequence[Document], sentence_splitter) -> Iterable[list[list[int]]]:
    """Each document's non-empty sentence ids; documents without tokens give []."""
    for start in range(0, len(documents), _DOCS_PER_TOKENIZER_CALL):
        batch = documents[start:start + _DOCS_PER_TOKENIZER_CALL]
        batch = [sentence_splitter(d) if isinstance(d, str) else d for d in batch]
        sentences = [s for document in batch for s in document]
        ids = iter(tokenizer.encode_batch(sentences, num_threads=_worker_threads) if sentences else ())
        for document in batch:
            yield [p for p in (next(ids) for _ in document) if p]  # drop sentences with no tokens


def write_shard(dataset_dir: str, split: str, shard: int, documents: Sequence[Document],
                sentence_splitter: Callable[[str], list[str]] | None = None, tokenizer=None) -> dict[str, Any]:
    """Tokenizes `documents` into shard `shard` of `split`; returns its statistics.

    Files appear under their final names only when complete: statistics first, records last.
    """
    tokenizer = tokenizer or _worker_tokenizer
    name = _shard_name(split, shard)
    path = os.path.join(dataset_dir, name + ".array_record")
    tmp = f"{path}.tmp-{os.getpid()}"
    stats = {"split": split, "file": os.path.basename(path), "documents": 0, "sentences": 0, "tokens": 0,
             "input_documents": len(documents)}
    try:
        writer = array_record_module.ArrayRecordWriter(tmp, _WRITER_OPTIONS)
        try:
            for sentence_ids in _tokenize(tokenizer, documents, sentence_splitter):
                if sentence_ids:
                    writer.write(encode_document(sentence_ids))
                    stats["documents"] += 1
                    stats["sentences"] += len(sentence_ids)
                    stats["tokens"] += sum(map(len, sentence_ids))
        finally:
            writer.close()
    except BaseException as error:
        atomic.remove(tmp)  # a partial shard only holds the space a full disk needs back
        converted = _as_os_error(error, path)
        if converted is error:
            raise
        raise converted from None
    atomic.write_json(os.path.join(dataset_dir, name + ".json"), stats, indent=1)
    atomic.commit(tmp, path)
    return stats


# array_record reports a failed write as a RuntimeError with the C library's text: made an OSError again,
# so that a full disk is said in one line (bert_jax.cli) and not as a worker's traceback.
_ERRNO_TEXTS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                "Permission denied": errno.EACCES, "Read-only file system": errno.EROFS}


def _as_os_error(error: BaseException, path: str) -> BaseException:
    for text, number in _ERRNO_TEXTS.items():
        if isinstance(error, RuntimeError) and text in str(error):
            return OSError(number, text, path)
    return error


def _complete_shard(dataset_dir: str, split: str, shard: int) -> dict[str, Any] | None:
    """The statistics of a shard a previous run finished, or None."""
    name = _shard_name(split, shard)
    stats_path = os.path.join(dataset_dir, name + ".json")
    if not (os.path.isfile(os.path.join(dataset_dir, name + ".array_record")) and os.path.isfile(stats_path)):
        return None
    return _read_cached_json(stats_path)


# ------------------------------------------------------------------ the whole dataset (main process)

class _ShardPool:
    """Runs shard tasks in at most `num_workers` processes (or here, for 1), `num_workers + 1` in flight.

    Processes start only when the first full shard is ready, so a corpus smaller than a shard never
    pays for them. They are spawned, not forked: the caller may hold JAX's threads.
    """

    def __init__(self, num_workers: int, tokenizer):
        self._num_workers, self._tokenizer = num_workers, tokenizer
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._in_flight: set[concurrent.futures.Future] = set()
        self.results: list[dict[str, Any]] = []

    def submit(self, *args, full: bool) -> None:
        if self._num_workers <= 1 or (self._executor is None and not full):
            self.results.append(write_shard(*args, tokenizer=self._tokenizer))
            return
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self._num_workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._tokenizer, max(1, (os.cpu_count() or 1) // self._num_workers), os.getpid()))
        while len(self._in_flight) > self._num_workers:  # every worker busy and one chunk queued
            self._collect(concurrent.futures.FIRST_COMPLETED)
        self._in_flight.add(self._executor.submit(write_shard, *args))

    def _collect(self, return_when) -> None:
        done, self._in_flight = concurrent.futures.wait(self._in_flight, return_when=return_when)
        self.results.extend(future.result() for future in done)  # re-raises a worker's error here

    def close(self, *, failed: bool = False) -> None:
        """Waits for the shards in flight; after a failure, only for those already running."""
        try:
            if not failed:
                self._collect(concurrent.futures.ALL_COMPLETED)
        finally:
            if self._executor is not None:
                self._executor.shutdown(cancel_futures=True)


def write_sharded_corpus(dataset_dir: str, documents: Iterable[tuple[str, Document]], *, tokenizer,
                         empty_messages: dict[str, str], num_workers: int, docs_per_shard: int,
                         sentence_splitter: Callable[[str], list[str]] | None = None,
                         metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tokenizes `(split, document)` pairs into `dataset_dir`; returns (and writes) the index.

    `empty_messages` names every split and what to tell the user if it ends up with no documents
    (InputError). Shards finished by an earlier, interrupted call are kept, not tokenized again.
    """
    os.makedirs(dataset_dir, exist_ok=True)
    for leftover in glob.glob(os.path.join(dataset_dir, "*.tmp-*")):  # a crashed run's partial files
        os.remove(leftover)
    start_time = time.perf_counter()
    pool = _ShardPool(num_workers, tokenizer)
    chunks: dict[str, list[Document]] = {split: [] for split in empty_messages}
    num_shards = collections.Counter()
    kept = []

    def submit(split: str, full: bool) -> None:
        shard = num_shards[split]
        num_shards[split] += 1
        done = _complete_shard(dataset_dir, split, shard)
        if done is not None:
            kept.append(done)
        else:
            pool.submit(dataset_dir, split, shard, chunks[split], sentence_splitter, full=full)
        chunks[split] = []

    try:
        for split, document in documents:
            chunks[split].append(document)
            if len(chunks[split]) == docs_per_shard:
                submit(split, full=True)
        for split, chunk in list(chunks.items()):
            if chunk or not num_shards[split]:  # the last, partial shard; one empty shard for an empty split
                submit(split, full=False)
    except BaseException:
        pool.close(failed=True)
        raise
    pool.close()
    seconds = time.perf_counter() - start_time
    index = _index(pool.results + kept, empty_messages, metadata, docs_per_shard)
    if pool.results:
        index["throughput"] = _throughput(pool.results, seconds, num_workers)
    atomic.write_json(os.path.join(dataset_dir, INDEX_FILE), index, indent=1)
    return index


def _index(shard_stats, empty_messages, metadata, docs_per_shard) -> dict[str, Any]:
    splits = {}
    for split, message in empty_messages.items():
        shards = sorted((s for s in shard_stats if s["split"] == split), key=lambda s: s["file"])
        totals = {key: sum(s[key] for s in shards) for key in ("documents", "sentences", "tokens")}
        if not totals["documents"]:  # no index is written, so a re-run says this again
            raise InputError(message)
        splits[split] = {**totals, "shards": shards}
    return {"format_version": FORMAT_VERSION, "docs_per_shard": docs_per_shard, "metadata": metadata or {},
            "splits": splits}


def _throughput(results, seconds: float, num_workers: int) -> dict[str, float]:
    """What this call tokenized per second (wall clock, process start-up included)."""
    documents = sum(s["input_documents"] for s in results)
    tokens = sum(s["tokens"] for s in results)
    return {"seconds": round(seconds, 3), "workers": num_workers, "shards_written": len(results),
            "documents_per_second": round(documents / seconds, 1), "tokens_per_second": round(tokens / seconds, 1)}
