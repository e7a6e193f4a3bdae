"""Parallel sharded tokenization (bert_jax/data/sharded_corpus.py), TFDS text corpora by name
(bert_jax/data/tfds_text.py) and the prepare_corpus entrypoint."""

import json
import os
import pathlib
import pickle
import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import make_documents, prepare_fake_tfds, write_corpus

from bert_jax.config import InputError
from bert_jax.data import corpus, sharded_corpus, tfds_text
from bert_jax.data.tokenizer_factory import load_tokenizer

DOCS_PER_SHARD = 40


def _files(dataset_dir) -> dict[str, bytes]:
    """Every file of a dataset directory, the index without its (timing-dependent) throughput."""
    contents = {}
    for name in sorted(os.listdir(dataset_dir)):
        data = pathlib.Path(dataset_dir, name).read_bytes()
        if name == sharded_corpus.INDEX_FILE:
            index = json.loads(data)
            index.pop("throughput", None)
            data = json.dumps(index, sort_keys=True).encode()
        contents[name] = data
    return contents


def _dataset_dir(sources) -> str:
    return sources["train"].statistics["directory"]


@pytest.fixture(scope="module")
def big_corpus_file(tmp_path_factory):
    """300 documents: 6 train shards and 2 eval shards of (up to) 40 documents."""
    return write_corpus(tmp_path_factory.mktemp("text") / "big.txt", make_documents(300, seed=3))


@pytest.fixture(scope="module")
def one_worker(big_corpus_file, small_tokenizer, tmp_path_factory):
    return corpus.build_corpus(big_corpus_file, "", 0.2, small_tokenizer, str(tmp_path_factory.mktemp("one")),
                               num_workers=1, docs_per_shard=DOCS_PER_SHARD)


def test_records_round_trip():
    record = sharded_corpus.encode_document([[5, 6, 7], [8], [9, 10]])
    example = sharded_corpus.decode_document(record)
    assert example["tokens"].tolist() == [5, 6, 7, 8, 9, 10]
    assert example["sentence_lengths"].tolist() == [3, 1, 2]
    assert example["tokens"].dtype == np.int32 and example["tokens"].flags.writeable


def test_shards_hold_the_documents_with_statistics(one_worker, big_corpus_file, small_tokenizer):
    documents = list(corpus.read_documents([big_corpus_file]))
    held_out = [corpus.held_out(d, 0.2) for d in documents]
    for split, source in one_worker.items():
        expected = [d for d, out in zip(documents, held_out) if out == (split == "eval")]
        assert len(source) == len(expected)
        for i in (0, len(source) // 2, len(source) - 1):  # reading order kept across shard boundaries
            ids = small_tokenizer.encode_batch(expected[i])
            assert source[i]["sentence_lengths"].tolist() == [len(s) for s in ids]
            assert source[i]["tokens"].tolist() == [t for s in ids for t in s]
        index = sharded_corpus.read_index(_dataset_dir(one_worker))
        shards = index["splits"][split]["shards"]
        assert len(shards) == -(-len(expected) // DOCS_PER_SHARD)
        assert all(s["documents"] == DOCS_PER_SHARD for s in shards[:-1])
        examples = source.__getitems__(range(len(source)))
        assert source.statistics["documents"] == sum(s["documents"] for s in shards) == len(source)
        assert source.statistics["tokens"] == sum(s["tokens"] for s in shards) == sum(len(e["tokens"]) for e in examples)
        assert source.statistics["sentences"] == sum(len(e["sentence_lengths"]) for e in examples)
    again = pickle.loads(pickle.dumps(one_worker["eval"]))  # what Grain worker processes receive
    assert again[3]["tokens"].tolist() == one_worker["eval"][3]["tokens"].tolist()


def test_two_workers_write_the_same_bytes(one_worker, big_corpus_file, small_tokenizer, tmp_path):
    two = corpus.build_corpus(big_corpus_file, "", 0.2, small_tokenizer, str(tmp_path), num_workers=2,
                              docs_per_shard=DOCS_PER_SHARD)
    assert os.path.basename(_dataset_dir(two)) == os.path.basename(_dataset_dir(one_worker))  # same cache key
    assert _files(_dataset_dir(two)) == _files(_dataset_dir(one_worker))
    throughput = sharded_corpus.read_index(_dataset_dir(two))["throughput"]
    assert throughput["workers"] == 2 and throughput["shards_written"] == 8


def test_documents_are_streamed_not_collected(big_corpus_file, small_tokenizer, tmp_path, monkeypatch):
    read = []
    documents = corpus.read_documents

    def counting(files, *args, **kwargs):
        for document in documents(files, *args, **kwargs):
            read.append(document)
            yield document

    write_shard, checked = sharded_corpus.write_shard, []

    def checking(dataset_dir, split, shard, chunk, *args, **kwargs):
        if len(chunk) == DOCS_PER_SHARD:  # written as soon as it fills, before the next document is read
            assert read[-1] is chunk[-1], (split, shard, len(read))
        checked.append(shard)
        return write_shard(dataset_dir, split, shard, chunk, *args, **kwargs)

    monkeypatch.setattr(corpus, "read_documents", counting)
    monkeypatch.setattr(sharded_corpus, "write_shard", checking)
    corpus.build_corpus(big_corpus_file, "", 0.2, small_tokenizer, str(tmp_path), num_workers=1,
                        docs_per_shard=DOCS_PER_SHARD)
    assert len(read) == 300 and len(checked) == 8


def test_restart_after_a_crash_writes_only_missing_shards(one_worker, big_corpus_file, small_tokenizer,
                                                          tmp_path, monkeypatch):
    write_shard, calls = sharded_corpus.write_shard, []

    def crash_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise RuntimeError("worker died")
        calls.append(args[1:3])
        return write_shard(*args, **kwargs)

    def build(workers):
        return corpus.build_corpus(big_corpus_file, "", 0.2, small_tokenizer, str(tmp_path), num_workers=workers,
                                   docs_per_shard=DOCS_PER_SHARD)

    with monkeypatch.context() as patch:
        patch.setattr(sharded_corpus, "write_shard", crash_after_three)
        with pytest.raises(RuntimeError, match="worker died"):
            build(1)
    [dataset_dir] = [str(p) for p in tmp_path.iterdir()]
    assert sorted(f for f in os.listdir(dataset_dir) if f.endswith(".array_record")) == [
        "train-00000.array_record", "train-00001.array_record", "train-00002.array_record"]
    assert sharded_corpus.read_index(dataset_dir) is None  # not complete, so not reused as it is
    pathlib.Path(dataset_dir, "train-00003.array_record.tmp-999").write_bytes(b"half a shard")
    kept = {f: os.stat(os.path.join(dataset_dir, f)).st_mtime_ns for f in os.listdir(dataset_dir)
            if f.startswith(("train-00000", "train-00001", "train-00002"))}

    resumed = build(2)  # another worker count resumes it just as well
    assert sharded_corpus.read_index(dataset_dir)["throughput"]["shards_written"] == 8 - 3
    assert {f: os.stat(os.path.join(dataset_dir, f)).st_mtime_ns for f in kept} == kept
    assert _files(_dataset_dir(resumed)) == _files(_dataset_dir(one_worker))


def test_cache_key_follows_shard_size_and_tokenizer(corpus_file, small_tokenizer, tmp_path):
    base = corpus.build_corpus(corpus_file, "", 0.2, small_tokenizer, str(tmp_path), num_workers=1)
    other_shards = corpus.build_corpus(corpus_file, "", 0.2, small_tokenizer, str(tmp_path), num_workers=1,
                                       docs_per_shard=7)
    assert _dataset_dir(other_shards) != _dataset_dir(base)
    assert other_shards["train"].statistics["shards"] == -(-len(base["train"]) // 7)
    assert _files(_dataset_dir(corpus.build_corpus(corpus_file, "", 0.2, small_tokenizer, str(tmp_path),
                                                   num_workers=2))) == _files(_dataset_dir(base))
    lowercasing = load_tokenizer(small_tokenizer.model_path, lowercase=True)  # another model proto
    assert _dataset_dir(corpus.build_corpus(corpus_file, "", 0.2, lowercasing, str(tmp_path))) != _dataset_dir(base)
    assert len(os.listdir(tmp_path)) == 3


# ------------------------------------------------------------------ TFDS text corpora by name

def test_split_sentences():
    text = ("Anarchism is a political philosophy. It is sceptical of authority!\n\nHistory\n"
            "Did it start in 1840? \"Yes.\" (Proudhon wrote it.) Mr. Smith disagreed. e.g. not here.\n")
    assert tfds_text.split_sentences(text) == [
        "Anarchism is a political philosophy.", "It is sceptical of authority!", "History",
        "Did it start in 1840?", "\"Yes.\"", "(Proudhon wrote it.)", "Mr.", "Smith disagreed. e.g. not here."]
    assert tfds_text.split_sentences("  \n\n ") == []


def _article(document) -> dict:
    """A wikipedia-like example: the title line, then paragraphs of sentences joined by spaces."""
    middle = len(document) // 2
    return {"title": document[0].split()[0],
            "text": " ".join(document[:middle]) + "\n\n" + " ".join(document[middle:])}


@pytest.fixture(scope="module")
def tfds_data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    text = {"title": tfds.features.Text(), "text": tfds.features.Text()}
    prepare_fake_tfds(data_dir, "wikipedia", "20230601.en", text,
                  {"train": [_article(d) for d in make_documents(50, seed=5)] + [{"title": "", "text": ""}],
                   "validation": [_article(d) for d in make_documents(6, seed=6)]})
    prepare_fake_tfds(data_dir, "blank_text", None, text, {"train": [{"title": "t", "text": " \n "}] * 3})
    prepare_fake_tfds(data_dir, "sentences_only", None, {"sentence": tfds.features.Text()},
                  {"train": [{"sentence": "One sentence."}]})
    return str(data_dir)


@pytest.fixture
def offline_tfds(tfds_data_dir, monkeypatch):
    """TFDS_DATA_DIR points at the tiny prepared datasets; nothing may reach the network or prepare data."""
    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to reach the network or prepare a dataset")
    monkeypatch.setenv("TFDS_DATA_DIR", tfds_data_dir)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    return tfds_data_dir


def test_tfds_corpus_by_name(offline_tfds, small_tokenizer, tmp_path):
    spec = "tfds:wikipedia/20230601.en"
    splits = corpus.build_corpus(spec, f"{spec}:validation", 0.0, small_tokenizer, str(tmp_path), num_workers=1)
    raw = list(tfds_text.TfdsText.parse(spec).texts())  # in the dataset's (shuffled) order
    texts = [t for t in raw if t]
    assert sorted(texts) == sorted(_article(d)["text"] for d in make_documents(50, seed=5))
    assert len(splits["train"]) == 50 and len(splits["eval"]) == 6  # the empty article is no document
    for i in (0, 49):
        sentences = tfds_text.split_sentences(texts[i])
        assert " ".join(sentences) == texts[i].replace("\n\n", " ")  # every sentence found again
        ids = small_tokenizer.encode_batch(sentences)
        assert splits["train"][i]["sentence_lengths"].tolist() == [len(s) for s in ids]
        assert splits["train"][i]["tokens"].tolist() == [t for s in ids for t in s]
    held_out = corpus.build_corpus(spec, "", 0.2, small_tokenizer, str(tmp_path), num_workers=1)
    assert len(held_out["train"]) + len(held_out["eval"]) == 50 and len(held_out["eval"]) > 3
    sliced = corpus.build_eval_source(f"{spec}:train[:10]", small_tokenizer, str(tmp_path))
    assert len(sliced) == sum(map(bool, raw[:10]))
    assert sliced[len(sliced) - 1]["tokens"].tolist() == splits["train"][len(sliced) - 1]["tokens"].tolist()


def test_tfds_corpus_trains_its_tokenizer(offline_tfds, tmp_path):
    from bert_jax import config as config_lib
    from bert_jax import prepare_corpus

    config = config_lib.default_config()
    config.data.corpus = "tfds:wikipedia/20230601.en"
    config.data.eval_fraction, config.data.tokenizer_vocab_size = 0.2, 300
    config.data.preprocess_workers, config.data.docs_per_shard = 1, 16
    summary = prepare_corpus.prepare(config, str(tmp_path))
    assert os.path.isfile(tmp_path / "tokenizer" / "sample.txt") and summary["vocab_size"] > 100
    assert summary["splits"]["train"]["documents"] + summary["splits"]["eval"]["documents"] == 50
    assert summary["splits"]["train"]["shards"] == -(-summary["splits"]["train"]["documents"] // 16)
    assert summary["throughput"]["documents_per_second"] > 0


@pytest.mark.parametrize("spec, message", [
    ("tfds:no_such_corpus/en", (r"TFDS dataset no_such_corpus/en is not prepared in .* \(or is not a TFDS name\); "
                                r"prepare it where there is network with `tfds build no_such_corpus/en "
                                r"--file_format=array_record --data_dir=.*`")),
    ("tfds:", "names no dataset; write tfds:NAME"),
    ("tfds:sentences_only", r"TFDS sentences_only split 'train' has no text feature 'text' \(its features: sentence\)"),
    ("tfds:blank_text", "TFDS blank_text split 'train' has no documents after tokenization"),
    ("tfds:wikipedia/20230601.en:test", r"wikipedia/20230601.en in .* has no split 'test'"),
])
def test_tfds_corpus_errors(offline_tfds, small_tokenizer, tmp_path, spec, message):
    with pytest.raises(InputError, match=message) as error:
        corpus.build_corpus(spec, "", 0.2, small_tokenizer, str(tmp_path), num_workers=1)
    assert "\n" not in str(error.value)


_ORPHAN_PARENT = """
import concurrent.futures, multiprocessing, os, time
from bert_jax.data import sharded_corpus
if __name__ == "__main__":
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=sharded_corpus._init_worker, initargs=(None, 1, os.getpid()))
    print(pool.submit(os.getpid).result(), flush=True)
    time.sleep(600)
"""


def test_workers_end_when_their_parent_is_killed(tmp_path):
    """A SIGKILLed preparation used to leave its tokenizing workers running (~250 MB each), forever."""
    import signal
    import subprocess
    import sys
    import time

    import psutil
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_PARENT, encoding="utf-8")
    root = str(pathlib.Path(__file__).resolve().parents[1])
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=root,
                              env={**os.environ, "PYTHONPATH": root})
    worker = psutil.Process(int(parent.stdout.readline()))
    assert worker.is_running() and worker.ppid() == parent.pid
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.2)
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, "the worker outlived its parent"


def test_a_damaged_index_or_shard_statistics_is_rebuilt(one_worker, big_corpus_file, small_tokenizer, tmp_path):
    """index.json and the shard statistics are the cache's own files: cut or garbled, they are rebuilt (the
    damaged shard rewritten, the others kept), never reported as the user's error."""
    def build():
        return corpus.build_corpus(big_corpus_file, "", 0.2, small_tokenizer, str(tmp_path), num_workers=1,
                                   docs_per_shard=DOCS_PER_SHARD)

    dataset_dir = _dataset_dir(build())
    index_path = pathlib.Path(dataset_dir, sharded_corpus.INDEX_FILE)
    index_path.write_bytes(index_path.read_bytes()[:40])  # a write cut short
    stats_path = pathlib.Path(dataset_dir, "train-00001.json")
    stats_path.write_bytes(b"\x00garbage")
    untouched = os.stat(os.path.join(dataset_dir, "train-00002.array_record")).st_mtime_ns
    rebuilt = build()
    assert sharded_corpus.read_index(dataset_dir)["throughput"]["shards_written"] == 1  # only the damaged one
    assert os.stat(os.path.join(dataset_dir, "train-00002.array_record")).st_mtime_ns == untouched
    assert _files(_dataset_dir(rebuilt)) == _files(_dataset_dir(one_worker))
