"""Language-tagged corpus specs and language folders: what they parse to, and the one-line errors of bad ones."""

import pytest

from bert_jax.config import InputError
from bert_jax.data import languages


def test_tagged_entries_parse_sorted_with_repeats_joined():
    spec = "ru:/d/ru/, en:/d/en.txt,ja:tfds:wikipedia/20230601.ja,en:/d/more/*.txt,pt_BR:/d/pt,zh-Hant:/d/zh"
    assert languages.parse(spec) == {"en": "/d/en.txt,/d/more/*.txt", "ja": "tfds:wikipedia/20230601.ja",
                                     "pt_BR": "/d/pt", "ru": "/d/ru/", "zh-Hant": "/d/zh"}
    assert list(languages.parse(spec)) == ["en", "ja", "pt_BR", "ru", "zh-Hant"]  # the language ids' order


@pytest.mark.parametrize("spec", ["", "/d/en.txt", "/d/a.txt,/d/b/", "tfds:wikipedia/20230601.en",
                                  "tfds:wiki:train", "data/*.txt", "./en:x"])
def test_untagged_specs_stay_monolingual(spec):
    assert languages.parse(spec) is None


def test_an_existing_file_with_a_colon_is_not_a_language(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes:v2").write_text("text\n")
    assert languages.parse("notes:v2") is None
    (tmp_path / "en:old.txt").write_text("text\n")
    with pytest.raises(InputError, match=r"ambiguous.*write ./en:old.txt"):
        languages.parse("en:old.txt")


@pytest.mark.parametrize("spec,message", [
    ("en:/d/en.txt,/d/ru.txt", "mixes entries with a language tag and without"),
    ("english:/d/en.txt", "'english' is not a language code"),
    ("e:/d/en.txt", "'e' is not a language code"),
    ("en:", "names language 'en' but no text"),
    ("en:/a,EN:/b", "names one language twice, as 'en' and 'EN'"),
    ("pt_BR:/a,pt-br:/b", "names one language twice"),
    ("ja:tfds:wiki,ja:/d/ja.txt", "a TFDS corpus is a language's only entry"),
])
def test_malformed_specs_are_one_line_errors(spec, message):
    with pytest.raises(InputError, match=message) as error:
        languages.parse(spec)
    assert "\n" not in str(error.value)


def test_language_folders(tmp_path):
    for name in ("ru", "en", "zh-Hant", ".cache"):
        (tmp_path / name).mkdir()
    assert languages.parse(str(tmp_path), language_folders=True) == {
        "en": str(tmp_path / "en"), "ru": str(tmp_path / "ru"), "zh-Hant": str(tmp_path / "zh-Hant")}
    (tmp_path / "README.txt").write_text("x")
    with pytest.raises(InputError, match="belongs to no language; move it"):
        languages.parse(str(tmp_path), language_folders=True)
    (tmp_path / "README.txt").unlink()
    (tmp_path / "misc").mkdir()
    with pytest.raises(InputError, match="misc is not named by a language code"):
        languages.parse(str(tmp_path), language_folders=True)
    with pytest.raises(InputError, match="is not a folder"):
        languages.parse(f"{tmp_path},{tmp_path}", language_folders=True)
    with pytest.raises(InputError, match="is not a folder"):
        languages.parse("en:/d/en.txt", language_folders=True)
    empty = tmp_path / "misc"
    with pytest.raises(InputError, match="has no language folders"):
        languages.parse(str(empty), language_folders=True)


def test_eval_spec_must_match_the_corpus_languages():
    assert languages.parse_eval("", ["en", "ru"]) is None
    assert languages.parse_eval("ru:/e/ru.txt,en:/e/en.txt", ["en", "ru"]) == {"en": "/e/en.txt", "ru": "/e/ru.txt"}
    with pytest.raises(InputError, match=r"missing \['ru'\]"):
        languages.parse_eval("en:/e/en.txt", ["en", "ru"])
    with pytest.raises(InputError, match=r"not in the corpus: \['de'\]"):
        languages.parse_eval("en:/e/en.txt,ru:/e/ru.txt,de:/e/de.txt", ["en", "ru"])
    with pytest.raises(InputError, match="has no language tags but the corpus is multilingual"):
        languages.parse_eval("/e/all.txt", ["en", "ru"])


class _Source(list):
    def __init__(self, n, tokens):
        super().__init__(range(n))
        self.statistics = {"documents": n, "sentences": 2 * n, "tokens": tokens, "shards": 1}


def test_language_sources_add_up_in_language_order():
    sources = languages.LanguageSources({"ru": _Source(3, 30), "en": _Source(5, 70)})
    assert sources.languages == ("en", "ru") and len(sources) == 8
    assert sources.statistics["documents"] == 8 and sources.statistics["tokens"] == 100
    assert sources.statistics["languages"]["ru"]["documents"] == 3
