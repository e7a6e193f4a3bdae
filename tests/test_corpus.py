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


# ------------------------------------------------------------------ multilingual corpora

def _languages_folder(tmp_path, counts):
    """A folder per language of `counts` {language: documents}, each language's own generated text."""
    root = tmp_path / "languages"
    for offset, (language, num_docs) in enumerate(counts.items()):
        (root / language).mkdir(parents=True)
        write_corpus(root / language / "text.txt", make_documents(num_docs, seed=100 + offset))
    return root


def test_a_tagged_corpus_is_tokenized_per_language(small_tokenizer, tmp_path, monkeypatch):
    root = _languages_folder(tmp_path, {"ru": 12, "en": 30, "de": 8})
    spec = f"ru:{root / 'ru'},en:{root / 'en'}"
    splits = corpus.build_corpus(spec, "", 0.25, small_tokenizer, str(tmp_path / "tok"))
    for split in ("train", "eval"):
        assert splits[split].languages == ("en", "ru")
    for language, num_docs in (("en", 30), ("ru", 12)):
        index = splits["train"].languages.index(language)
        train, held = splits["train"].sources[index], splits["eval"].sources[index]
        assert len(train) + len(held) == num_docs and len(held) > 0
        # each language's documents, held out by their own text
        own = list(corpus.read_documents([str(root / language / "text.txt")]))
        assert len(held) == sum(corpus.held_out(d, 0.25) for d in own)
    assert splits["train"].statistics["documents"] == len(splits["train"])
    # the same corpus as language folders: the same datasets, reused from the cache
    monkeypatch.setattr(corpus.sharded_corpus, "write_sharded_corpus", lambda *a, **k: pytest.fail("tokenized again"))
    (root / "de").rename(tmp_path / "de_elsewhere")
    folders = corpus.build_corpus(str(root), "", 0.25, small_tokenizer, str(tmp_path / "tok"), language_folders=True)
    assert folders["train"].languages == ("en", "ru")
    assert [_token_set(s) for s in folders["eval"].sources] == [_token_set(s) for s in splits["eval"].sources]


def test_a_tagged_eval_corpus_gives_each_language_its_held_out_text(small_tokenizer, tmp_path):
    root = _languages_folder(tmp_path, {"en": 10, "ja": 6})
    held = _languages_folder(tmp_path / "held", {"en": 3, "ja": 2})
    splits = corpus.build_corpus(f"en:{root / 'en'},ja:{root / 'ja'}", f"ja:{held / 'ja'},en:{held / 'en'}", 0.2,
                                 small_tokenizer, str(tmp_path / "tok"))
    assert [len(s) for s in splits["train"].sources] == [10, 6]
    assert [len(s) for s in splits["eval"].sources] == [3, 2]
    with pytest.raises(InputError, match=r"missing \['ja'\]"):
        corpus.build_corpus(f"en:{root / 'en'},ja:{root / 'ja'}", f"en:{held / 'en'}", 0.2, small_tokenizer,
                            str(tmp_path / "tok"))
    evaluated = corpus.build_eval_source(f"ja:{held / 'ja'}", small_tokenizer, str(tmp_path / "tok"))
    assert evaluated.languages == ("ja",) and len(evaluated) == 2


def test_the_fingerprint_holds_each_language_and_its_files(tmp_path):
    root = _languages_folder(tmp_path, {"en": 3, "ru": 3, "de": 3})
    two = f"en:{root / 'en'},ru:{root / 'ru'}"
    base = corpus.corpus_fingerprint(two, "")
    assert base["train"]["what"] == "2 languages (en, ru)" and set(base["train"]["languages"]) == {"en", "ru"}
    assert corpus.corpus_fingerprint(f"ru:{root / 'ru'},en:{root / 'en'}", "") == base  # order is not meaning
    others = [f"{two},de:{root / 'de'}",  # another language set
              f"en:{root / 'ru'},ru:{root / 'en'}",  # the same files under other languages
              str(root / "en") + "," + str(root / "ru")]  # the same files, monolingual
    for spec in others:
        assert corpus.corpus_fingerprint(spec, "")["train"]["fingerprint"] != base["train"]["fingerprint"]
    write_corpus(root / "ru" / "more.txt", make_documents(2, seed=5))  # a file added to one language
    assert corpus.corpus_fingerprint(two, "")["train"]["fingerprint"] != base["train"]["fingerprint"]
    assert corpus.corpus_fingerprint(str(root), "", language_folders=True)["train"]["what"] == "3 languages (de, en, ru)"


def test_the_tokenizer_sample_resamples_languages_by_alpha(tmp_path):
    root = tmp_path / "text"
    root.mkdir()
    lines = {"en": 900, "ru": 90, "ja": 10}
    for language, n in lines.items():
        (root / f"{language}.txt").write_text("".join(f"{language} line {i}\n" for i in range(n)), encoding="utf-8")
    by_language = {language: str(root / f"{language}.txt") for language in sorted(lines)}
    path, coverage = corpus.write_language_sample(by_language, str(tmp_path / "tok"), 0.3)
    with open(path, encoding="utf-8") as f:
        sample = f.read().splitlines()
    shares = {language: n / 1000 for language, n in lines.items()}
    q = {language: shares[language] ** 0.3 for language in lines}
    want = {language: q[language] / sum(q.values()) * 1000 for language in lines}
    for language, available in lines.items():
        taken = [line for line in sample if line.startswith(language + " ")]
        assert abs(len(taken) - want[language]) < 1  # largest-remainder rounding of q_i * M
        if want[language] <= available:  # subsampled: no line twice
            assert len(set(taken)) == len(taken)
        else:  # upsampled: every line, each as often as the others give or take one
            counts = collections.Counter(taken)
            assert len(counts) == available and max(counts.values()) - min(counts.values()) <= 1
    assert coverage == 1.0  # small alphabets only
    assert corpus.character_coverage("Привет, 日本") == 0.9995


def _catalogue_lines(language):
    """Translated messages of the gettext catalogues installed for `language`, one per line, sorted."""
    import gettext
    import glob

    lines = set()
    for path in sorted(glob.glob(f"/usr/share/locale/{language}/LC_MESSAGES/*.mo")):
        try:
            with open(path, "rb") as f:
                catalogue = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, ValueError):  # not a catalogue this Python reads
            continue
        lines.update(" ".join(v.split()) for k, v in catalogue.items() if k and isinstance(v, str))
    return sorted(line for line in lines if len(line) >= 8)


@pytest.fixture(scope="module")
def script_corpus(tmp_path_factory):
    """Latin (de), Cyrillic (ru) and CJK (ja) text from the installed gettext catalogues: train and held-out
    lines of each, ja the low-resource language; skipped where the catalogues are not installed."""
    root = tmp_path_factory.mktemp("scripts")
    held_out = {}
    for language, limit in (("de", 3000), ("ru", 1500), ("ja", 300)):
        lines = _catalogue_lines(language)
        if len(lines) < limit + 200:
            pytest.skip(f"too few gettext catalogues for {language!r} under /usr/share/locale")
        test = [line for line in lines if corpus.held_out(line, 0.1)]
        train = [line for line in lines if not corpus.held_out(line, 0.1)]
        (root / language).mkdir()
        (root / language / "text.txt").write_text("\n".join(train[:limit]) + "\n", encoding="utf-8")
        held_out[language] = test[:200]
    return root, held_out


def _script_pieces(tokenizer, low, high):
    return sum(any(low <= ord(c) <= high for c in tokenizer.id_to_piece(i)) for i in range(tokenizer.vocab_size))


def _train_on(root, tmp_path, alpha):
    config_data = types.SimpleNamespace(corpus=f"de:{root / 'de'},ja:{root / 'ja'},ru:{root / 'ru'}",
                                        language_folders=False, tokenizer_alpha=alpha, tokenizer_model="",
                                        tokenizer_vocab_size=1500)
    return corpus._get_or_train_tokenizer(config_data, str(tmp_path), config_data.corpus)


def test_a_multilingual_tokenizer_covers_every_script_without_unk(script_corpus, tmp_path):
    root, held_out = script_corpus
    tokenizer = _train_on(root, tmp_path, 0.3)
    for language, lines in held_out.items():
        ids = [i for line in lines for i in tokenizer.encode(line)]
        assert tokenizer.special_ids.unk not in ids, language  # unseen characters fall back to bytes
        byte_share = np.mean([tokenizer.id_to_piece(i).startswith("<0x") for i in ids])
        assert byte_share < (0.3 if language == "ja" else 0.01), (language, byte_share)
    assert _script_pieces(tokenizer, 0x0400, 0x04FF) > 200  # Cyrillic
    assert _script_pieces(tokenizer, 0x3040, 0x9FFF) > 200  # kana and Han, from 300 of 4,800 lines


@pytest.mark.slow
def test_alpha_gives_the_low_resource_script_more_pieces(script_corpus, tmp_path):
    root, _ = script_corpus
    resampled = _train_on(root, tmp_path / "a", 0.3)
    proportional = _train_on(root, tmp_path / "b", 1.0)
    assert _script_pieces(resampled, 0x3040, 0x9FFF) > 1.25 * _script_pieces(proportional, 0x3040, 0x9FFF)


def test_a_workdir_inside_a_tagged_language_folder_is_refused(tmp_path):
    (tmp_path / "ru").mkdir()
    config_data = types.SimpleNamespace(corpus=f"en:{tmp_path / 'en.txt'},ru:{tmp_path / 'ru'}", eval_corpus="")
    with pytest.raises(InputError, match="is inside the corpus folder"):
        corpus.check_workdir_outside_corpus(config_data, str(tmp_path / "ru" / "run"))
    corpus.check_workdir_outside_corpus(config_data, str(tmp_path / "run"))
