"""Corpus files, the stdlib docstring corpus, and the tokenized splits."""

import collections
import os
import shutil
import types

import numpy as np
import pytest
from conftest import make_documents, write_corpus

from bert_jax.config import InputError
from bert_jax.data import corpus


def test_resolve_text_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.txt").write_text("x\n")
    (tmp_path / "one.txt").write_text("x\n")
    (tmp_path / ".hidden.txt").write_text("x\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("x\n")
    everything = [str(tmp_path / "b" / "two.txt"), str(tmp_path / "one.txt")]
    assert corpus.resolve_text_files(str(tmp_path)) == everything
    assert corpus.resolve_text_files(str(tmp_path / "one.txt")) == everything[1:]
    assert corpus.resolve_text_files(str(tmp_path / "**" / "*.txt")) == everything
    assert corpus.resolve_text_files(f"{tmp_path / 'one.txt'}, {tmp_path / 'b'}") == everything
    with pytest.raises(InputError, match="no text files match config.data.corpus"):
        corpus.resolve_text_files(str(tmp_path / "nothing*.txt"))


def test_read_documents_splits_on_blank_lines(tmp_path):
    first = tmp_path / "a.txt"
    first.write_text("  One.  \nTwo.\n\n\n   \nThree.\n")
    second = tmp_path / "b.txt"
    second.write_text("\nFour.\nFive.")
    assert list(corpus.read_documents([str(first), str(second)])) == [
        ["One.", "Two."], ["Three."], ["Four.", "Five."]]


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory):
    return corpus.write_stdlib_docstring_corpus(str(tmp_path_factory.mktemp("stdlib") / "docs.txt"))


def test_stdlib_corpus_is_real_english(stdlib_corpus):
    assert os.path.getsize(stdlib_corpus) > 500_000
    documents = list(corpus.read_documents([stdlib_corpus]))
    assert len(documents) > 1000
    assert all(len(d) >= 2 for d in documents)
    words = collections.Counter(w.lower() for d in documents for s in d for w in s.split())
    assert {"the", "of", "is", "a", "to"} <= {w for w, _ in words.most_common(20)}
    lines = [s for d in documents for s in d]
    assert not any(s.startswith(">>>") for s in lines)
    assert sum(s[0].isupper() for s in lines) > 0.8 * len(lines)


def test_stdlib_corpus_is_deterministic(stdlib_corpus, tmp_path):
    again = corpus.write_stdlib_docstring_corpus(str(tmp_path / "again.txt"))
    assert open(again, "rb").read() == open(stdlib_corpus, "rb").read()


def _token_set(source):
    return {tuple(source[i]["tokens"].tolist()) for i in range(len(source))}


def test_splits_hold_tokenized_documents(sources, corpus_file, small_tokenizer):
    documents = list(corpus.read_documents([corpus_file]))
    train, evaluation = sources["train"], sources["eval"]
    assert len(train) + len(evaluation) == len(documents) == 60
    assert 3 <= len(evaluation) <= 25
    expected = set()
    for document in documents:
        ids = small_tokenizer.encode_batch(document)
        expected.add(tuple(i for sentence in ids for i in sentence))
    assert _token_set(train) | _token_set(evaluation) == expected
    assert not _token_set(train) & _token_set(evaluation)
    example = train[0]
    assert example["tokens"].dtype == np.int32 and example["sentence_lengths"].dtype == np.int32
    assert example["sentence_lengths"].sum() == len(example["tokens"])
    assert (example["sentence_lengths"] > 0).all()
    # Documents keep reading order: the first training document is the first of the file not held out.
    first = next(d for d in documents if tuple(i for s in small_tokenizer.encode_batch(d) for i in s)
                 in _token_set(train))
    assert example["sentence_lengths"].tolist() == [len(s) for s in small_tokenizer.encode_batch(first)]


def test_eval_split_is_stable_and_cache_is_reused(sources, corpus_file, small_tokenizer, tmp_path, monkeypatch):
    rebuilt = corpus.build_corpus(corpus_file, "", 0.2, small_tokenizer, str(tmp_path))
    assert _token_set(rebuilt["eval"]) == _token_set(sources["eval"])
    record_files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs if "array_record" in f]
    mtimes = {f: os.stat(f).st_mtime_ns for f in record_files}

    def fail(*args, **kwargs):
        raise AssertionError("prepared twice")

    monkeypatch.setattr(corpus.sharded_corpus, "write_sharded_corpus", fail)
    again = corpus.build_corpus(corpus_file, "", 0.2, small_tokenizer, str(tmp_path))
    assert len(again["train"]) == len(rebuilt["train"])
    assert {f: os.stat(f).st_mtime_ns for f in record_files} == mtimes
    # Another hold-out fraction is another dataset, never the cached one.
    with pytest.raises(AssertionError, match="prepared twice"):
        corpus.build_corpus(corpus_file, "", 0.3, small_tokenizer, str(tmp_path))


def test_eval_corpus_replaces_hold_out(corpus_file, small_tokenizer, tmp_path):
    eval_file = write_corpus(tmp_path / "eval.txt", make_documents(7, seed=1))
    splits = corpus.build_corpus(corpus_file, eval_file, 0.2, small_tokenizer, str(tmp_path / "tfds"))
    assert len(splits["train"]) == 60 and len(splits["eval"]) == 7
    only = corpus.build_eval_source(eval_file, small_tokenizer, str(tmp_path / "tfds"))
    assert _token_set(only) == _token_set(splits["eval"])


def test_empty_inputs_raise_input_error(corpus_file, small_tokenizer, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n\n")
    with pytest.raises(InputError, match="has no documents after tokenization"):
        corpus.build_corpus(str(blank), "", 0.5, small_tokenizer, str(tmp_path / "a"))
    with pytest.raises(InputError, match="no evaluation data"):
        corpus.build_corpus(corpus_file, "", 0.0, small_tokenizer, str(tmp_path / "b"))
    tiny = write_corpus(tmp_path / "tiny.txt", make_documents(2, seed=2))
    with pytest.raises(InputError, match="eval split is empty"):
        corpus.build_corpus(tiny, "", 0.001, small_tokenizer, str(tmp_path / "c"))
    with pytest.raises(InputError, match="no text files match"):
        corpus.build_corpus(str(tmp_path / "missing"), "", 0.1, small_tokenizer, str(tmp_path / "d"))


def test_prepare_default_or_given_trains_once_and_reuses(corpus_file, tmp_path, monkeypatch):
    config_data = types.SimpleNamespace(corpus=corpus_file, eval_corpus="", eval_fraction=0.2,
                                        tokenizer_model="", tokenizer_vocab_size=300,
                                        preprocess_workers=1, docs_per_shard=50_000)
    tokenizer, splits = corpus.prepare_default_or_given(config_data, str(tmp_path))
    assert tokenizer.model_path == str(tmp_path / "tokenizer" / "spm.model")
    assert len(splits["train"]) + len(splits["eval"]) == 60
    mtime = os.stat(tokenizer.model_path).st_mtime_ns

    monkeypatch.setattr(corpus, "train_tokenizer", lambda *a, **k: pytest.fail("tokenizer trained twice"))
    monkeypatch.setattr(corpus.sharded_corpus, "write_sharded_corpus", lambda *a, **k: pytest.fail("prepared twice"))
    again_tokenizer, again = corpus.prepare_default_or_given(config_data, str(tmp_path))
    assert os.stat(again_tokenizer.model_path).st_mtime_ns == mtime
    assert _token_set(again["eval"]) == _token_set(splits["eval"])


def test_a_cached_tokenizer_cut_short_is_trained_again(corpus_file, tmp_path):
    config_data = types.SimpleNamespace(corpus=corpus_file, eval_corpus="", eval_fraction=0.2,
                                        tokenizer_model="", tokenizer_vocab_size=300,
                                        preprocess_workers=1, docs_per_shard=50_000)
    tokenizer, _ = corpus.prepare_default_or_given(config_data, str(tmp_path))
    model = tmp_path / "tokenizer" / "spm.model"
    whole = model.read_bytes()
    model.write_bytes(whole[:len(whole) // 2])  # what a full disk left before the model was written atomically
    again, splits = corpus.prepare_default_or_given(config_data, str(tmp_path))
    assert model.read_bytes() == whole and again.serialized_model() == tokenizer.serialized_model()
    assert len(splits["train"]) + len(splits["eval"]) == 60
    assert sorted(os.listdir(tmp_path / "tokenizer")) == ["spm.model", "spm.vocab"]


def test_prepare_default_corpus(tmp_path):
    config_data = types.SimpleNamespace(corpus="", eval_corpus="", eval_fraction=0.05, tokenizer_model="",
                                        preprocess_workers=0, docs_per_shard=50_000,
                                        tokenizer_vocab_size=8000)
    tokenizer, splits = corpus.prepare_default_or_given(config_data, str(tmp_path))
    assert os.path.getsize(tmp_path / "corpus" / "stdlib_docstrings.txt") > 500_000
    assert 1000 < tokenizer.vocab_size <= 8000
    assert len(splits["train"]) > 1000 and len(splits["eval"]) > 20


def test_symlinked_folders_are_followed_once(tmp_path):
    """os.walk skips linked folders by default: a corpus of 1 real and 1 linked folder read only half."""
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "b.txt").write_text("Linked text.\n", encoding="utf-8")
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    (corpus_dir / "a.txt").write_text("Real text.\n", encoding="utf-8")
    os.symlink(real, corpus_dir / "linked")
    os.symlink(corpus_dir, corpus_dir / "linked" / "back_to_corpus")  # a loop through both folders
    os.symlink(real, corpus_dir / "same_folder_again")
    files = corpus.resolve_text_files(str(corpus_dir))
    assert [os.path.basename(f) for f in files] == ["a.txt", "b.txt"]  # each real file once, the loop cut
    assert [d for d in corpus.read_documents(files)] == [["Real text."], ["Linked text."]]


def test_cr_only_line_endings_split_like_newlines(tmp_path):
    path = tmp_path / "old_mac.txt"
    path.write_bytes(b"First sentence.\rSecond sentence.\r\rNext document.\r")
    assert list(corpus.read_documents([str(path)])) == [["First sentence.", "Second sentence."], ["Next document."]]


def test_a_file_added_to_the_corpus_moves_no_document_between_train_and_eval(corpus_file, small_tokenizer,
                                                                            tmp_path):
    """Held out by text, not by position: a file that sorts before the others (it shifts every index)
    leaves every old document on its side, and a copy of a document lands where the original did."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(corpus_file, folder / "b_original.txt")
    before = corpus.build_corpus(str(folder), "", 0.2, small_tokenizer, str(tmp_path / "before"))
    originals = list(corpus.read_documents([corpus_file]))
    write_corpus(folder / "a_added.txt", make_documents(40, seed=9) + originals[:10])  # 10 copies, too
    after = corpus.build_corpus(str(folder), "", 0.2, small_tokenizer, str(tmp_path / "after"))
    for split in ("train", "eval"):
        assert _token_set(before[split]) <= _token_set(after[split])  # nothing changed sides
    held_out = [corpus.held_out(d, 0.2) for d in originals]
    assert 0 < sum(held_out) < len(originals) and len(before["eval"]) == sum(held_out)
