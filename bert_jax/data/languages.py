"""Multilingual corpora (M-BERT, XLM-R): which text belongs to which language, and the per-language splits.

A corpus is multilingual when `config.data.corpus` tags its entries with language codes,
`en:/d/en.txt,ru:/d/ru/,ja:tfds:wikipedia/20230601.ja` (an entry is anything `corpus.py` reads: a file, a
folder, a glob, 'tfds:NAME'; a language given twice reads both), or when `config.data.language_folders`
makes each immediate subfolder of the corpus folder one language named by the folder. Language ids are the
indices of the languages in sorted order; the run records the list in `config.data.languages`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bert_jax.errors import InputError

# ISO 639 code with optional script/region subtags, in either spelling: en, pt_BR, zh-Hant, sr-Latn-RS.
_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*$")
_TAG = re.compile(r"^([^/\\:]+):(.*)$")
_EXAMPLE = "en:/data/en.txt,ru:/data/ru/,ja:/data/ja.txt"


def is_language_code(name: str) -> bool:
    return bool(_LANGUAGE_CODE.match(name))


def split_tag(entry: str) -> tuple[str | None, str]:
    """(language, rest) of one comma-separated corpus entry, or (None, entry) when it carries no language
    tag ('tfds:NAME' is a TFDS corpus, not a language). Raises InputError for a tag that is not a language
    code and for an entry that is both a tagged spec and an existing file's name."""
    entry = entry.strip()
    match = _TAG.match(entry)
    if not match or match.group(1) == "tfds":
        return None, entry
    tag, rest = match.group(1), match.group(2).strip()
    exists = os.path.exists(os.path.expanduser(entry))
    if not is_language_code(tag):
        if exists:
            return None, entry
        raise InputError(f"corpus entry {entry!r}: {tag!r} is not a language code (like en, pt_BR, zh-Hant); write "
                         f"multilingual entries as LANG:PATH, e.g. {_EXAMPLE!r}.")
    if exists:
        raise InputError(f"corpus entry {entry!r} is ambiguous: it is an existing file's name and also reads as "
                         f"language {tag!r} with path {rest!r}; write ./{entry} for the file or rename it.")
    if not rest:
        raise InputError(f"corpus entry {entry!r} names language {tag!r} but no text; write {tag}:PATH.")
    return tag, rest


def parse(spec: str, *, language_folders: bool = False, source: str = "config.data.corpus") -> dict[str, str] | None:
    """{language: its corpus spec} in sorted order for a multilingual `spec`, or None for a monolingual one
    (which `corpus.py` reads as it always has). Malformed or ambiguous specs are one-line InputErrors."""
    entries = [e.strip() for e in spec.split(",") if e.strip()]
    if language_folders:
        return _language_folders(entries, spec, source)
    tagged = [(split_tag(entry), entry) for entry in entries]
    untagged = [entry for (language, _), entry in tagged if language is None]
    if len(untagged) == len(entries):
        return None
    if untagged:
        raise InputError(f"{source}={spec!r} mixes entries with a language tag and without ({untagged[0]!r}); tag "
                         f"every entry (e.g. {_EXAMPLE!r}) or none.")
    languages: dict[str, list[str]] = {}
    for (language, rest), _ in tagged:
        languages.setdefault(language, []).append(rest)
    _check_distinct(list(languages), source)
    for language, parts in languages.items():
        if len(parts) > 1 and any(p.startswith("tfds:") for p in parts):
            raise InputError(f"{source} gives language {language!r} {len(parts)} times, one of them a TFDS corpus; "
                             "a TFDS corpus is a language's only entry.")
    return {language: ",".join(languages[language]) for language in sorted(languages)}


def _check_distinct(languages: Sequence[str], source: str) -> None:
    seen: dict[str, str] = {}
    for language in languages:
        key = language.lower().replace("-", "_")
        if key in seen:
            raise InputError(f"{source} names one language twice, as {seen[key]!r} and {language!r}; spell it one way.")
        seen[key] = language


def _language_folders(entries: list[str], spec: str, source: str) -> dict[str, str]:
    """Each immediate, non-hidden subfolder of the one folder in `spec` is a language named by the folder."""
    folder = os.path.expanduser(entries[0]) if len(entries) == 1 else ""
    if not folder or not os.path.isdir(folder):
        raise InputError(f"config.data.language_folders reads {source} as one folder holding a folder per language, "
                         f"but {source}={spec!r} is not a folder; give that folder, or set language_folders=False "
                         f"and tag the entries ({_EXAMPLE!r}).")
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    files = [n for n in names if not os.path.isdir(os.path.join(folder, n))]
    if files:
        raise InputError(f"{os.path.join(folder, files[0])} lies directly in the language-folders corpus {folder}, "
                         "so it belongs to no language; move it into its language's folder.")
    if not names:
        raise InputError(f"{source}={spec!r} has no language folders; config.data.language_folders needs a "
                         "subfolder per language (en/, ru/, ...).")
    wrong = [n for n in names if not is_language_code(n)]
    if wrong:
        raise InputError(f"folder {os.path.join(folder, wrong[0])} is not named by a language code (like en, pt_BR, "
                         "zh-Hant), but config.data.language_folders makes each subfolder one language; rename it.")
    _check_distinct(names, source)
    return {name: os.path.join(folder, name) for name in names}


def parse_eval(eval_spec: str, languages: Sequence[str], *, language_folders: bool = False) -> dict[str, str] | None:
    """The held-out text of a multilingual corpus of `languages`: {language: spec} from `eval_spec` given in
    the corpus's form, with exactly its languages; None when `eval_spec` is empty (eval_fraction of each)."""
    if not eval_spec:
        return None
    source = "config.data.eval_corpus"
    parsed = parse(eval_spec, language_folders=language_folders, source=source)
    if parsed is None:
        raise InputError(f"{source}={eval_spec!r} has no language tags but the corpus is multilingual; tag it the "
                         f"same way ({_EXAMPLE!r}) or leave it empty to hold out eval_fraction of each language.")
    missing, extra = sorted(set(languages) - set(parsed)), sorted(set(parsed) - set(languages))
    if missing or extra:
        raise InputError(f"{source} has held-out text for {sorted(parsed)}, the corpus for {sorted(languages)}"
                         f"{f' (missing {missing})' if missing else ''}{f' (not in the corpus: {extra})' if extra else ''}"
                         "; give one for every language of the corpus, or leave it empty.")
    return parsed


class LanguageSources:
    """One tokenized split of a multilingual corpus: a source per language, in the order of the language ids.

    `statistics` adds up the languages' (documents, sentences, tokens, shards) and keeps each under
    'languages'. Pickles as its sources, so Grain worker processes open their own readers.
    """

    def __init__(self, sources: Mapping[str, Any]):
        self.languages = tuple(sorted(sources))
        self.sources = tuple(sources[language] for language in self.languages)
        stats = [dict(getattr(s, "statistics", {})) for s in self.sources]
        self.statistics = {key: sum(int(s.get(key, 0)) for s in stats)
                           for key in ("documents", "sentences", "tokens", "shards")}
        self.statistics["languages"] = dict(zip(self.languages, stats))

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __repr__(self) -> str:
        return f"LanguageSources({', '.join(f'{lang}: {len(s)} documents' for lang, s in zip(self.languages, self.sources))})"
