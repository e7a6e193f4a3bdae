"""Text corpora: finding text files, the embedded default corpus, and their tokenized datasets.

Text follows google-research/bert: one sentence per line, documents separated by blank lines; a
prepared TFDS text dataset ('tfds:wikipedia/20230601.en', see `tfds_text.py`) works too. A corpus is
tokenized once, by parallel worker processes, into sharded array_record files whose records are
documents (`tokens`: all token ids, `sentence_lengths`: tokens per sentence; see `sharded_corpus.py`);
the Grain pipeline in `pipeline.py` reads them by random access. The cache lives under a
fingerprint of the inputs, so a changed corpus, split or tokenizer builds a new dataset instead of
reusing a stale one, and an interrupted build resumes from its complete shards.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import re
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from bert_jax.config import InputError
from bert_jax.data import languages, mixture, sharded_corpus, tfds_text
from bert_jax.data.sentencepiece_tokenizer import (
    Tokenizer,
    train_tokenizer,
    training_sentences,
)
from bert_jax.data.tokenizer_factory import load_tokenizer
from bert_jax.runtime import atomic, workdir_lock


def resolve_text_files(spec: str, source: str = "config.data.corpus") -> list[str]:
    """Expands a file, directory (recursively, hidden files skipped) or glob; commas separate several.

    `source` is what the user set (a config field or a flag), for the messages."""
    files: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if os.path.isdir(part):
            files.extend(_walk_following_links(part))
        else:
            files.extend(glob.glob(os.path.expanduser(part), recursive=True))
    files = sorted({f for f in files if os.path.isfile(f)})
    if not files:
        raise InputError(f"no text files match {source}={spec!r}; give a file, a directory or a glob.")
    return files


def _walk_following_links(directory: str) -> Iterator[str]:
    """The non-hidden files under `directory`, through symlinked folders too (os.walk skips them by default,
    which silently dropped a linked folder's text); a link back to a folder already walked is walked once."""
    seen = set()
    for root, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (os.path.join(root, n) for n in names if not n.startswith("."))


# A "sentence" longer than this is not one-sentence-per-line text (a dump with no newlines, a minified
# file): refused with a message instead of being handed, megabytes at a time, to the tokenizer.
MAX_LINE_CHARS = 1_000_000


# Compressed files are the binary files a corpus most often holds by mistake (wiki.txt.gz).
_COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip"), b"BZh": ("bzip2", "bunzip2"), b"\xfd7zXZ": ("xz", "unxz"),
               b"PK\x03\x04": ("zip", "unzip"), b"\x28\xb5\x2f\xfd": ("zstd", "unzstd")}


def compression(head: bytes) -> tuple[str, str] | None:
    """(kind, the command that decompresses it) when `head` starts like a compressed file, else None."""
    return next((found for magic, found in _COMPRESSED.items() if head.startswith(magic)), None)


def _check_not_binary(path: str, source: str) -> None:
    with open(path, "rb") as f:
        head = f.read(8192)
    if found := compression(head):
        kind, tool = found
        raise InputError(f"{path} is {kind}-compressed, not text: decompress it first (`{tool} {path}`) and "
                         f"point {source} at the text, or remove it from {source}.")
    if b"\x00" in head:  # what git and grep go by: text has no NUL bytes
        raise InputError(f"{path} looks like a binary file (it holds NUL bytes), not text: remove it from "
                         f"{source} or point {source} at the text files only.")


def _lines(path: str, source: str) -> Iterator[str]:
    """The lines of a UTF-8 text file, each read with a bounded buffer; errors name the file and the line."""
    _check_not_binary(path, source)
    line_number = 0
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                line = f.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError as e:
                raise InputError(f"{path} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} near line "
                                 f"{line_number + 1}): convert it, e.g. `iconv -f latin1 -t utf-8`, or remove it "
                                 f"from {source}.") from None
            if not line:
                return
            line_number += 1
            if len(line) > MAX_LINE_CHARS:
                raise InputError(f"{path} line {line_number} is longer than {MAX_LINE_CHARS:,} characters, so it is "
                                 "not one-sentence-per-line text: split it into one sentence per line, with blank "
                                 "lines between documents.")
            yield line


def read_documents(files: Iterable[str], source: str = "config.data.corpus") -> Iterator[list[str]]:
    """Yields each document as its list of stripped, non-empty sentences, streaming file by file.

    Files must be UTF-8 text with lines of at most MAX_LINE_CHARS characters; InputError otherwise.
    """
    for path in files:
        document: list[str] = []
        for line in _lines(path, source):
            line = line.strip()
            if line:
                document.append(line)
            elif document:
                yield document
                document = []
        if document:  # a file ends a document
            yield document


def check_text_files(files: Iterable[str], source: str = "config.data.corpus") -> None:
    """Reads `files` through once, so bad text is refused before SentencePiece (which skips it silently)."""
    for _ in read_documents(files, source):
        pass


# ------------------------------------------------------------------ the embedded default corpus

_SKIPPED_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
_MIN_SENTENCES, _MIN_WORDS = 2, 20


def write_stdlib_docstring_corpus(output_path: str) -> str:
    """Writes the docstrings of the installed Python standard library as a corpus; returns the path.

    Every machine with Python has this ~1-2 MB of real English prose, so bert_jax can pretrain out of
    the box without downloads. Files are parsed with `ast`, never imported.
    """
    stdlib = sysconfig.get_paths()["stdlib"]
    paths = []
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        paths.extend(os.path.join(root, n) for n in names if n.endswith(".py"))
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    num_docs = 0
    with atomic.writer(output_path) as out:  # a crash mid-write never leaves a truncated corpus behind
        for path in sorted(paths):
            for docstring in _docstrings(path):
                sentences = _docstring_sentences(docstring)
                if len(sentences) >= _MIN_SENTENCES and sum(len(s.split()) for s in sentences) >= _MIN_WORDS:
                    out.write("\n".join(sentences) + "\n\n")
                    num_docs += 1
    logging.info("Wrote %d stdlib docstrings (%.1f MB) to %s.", num_docs,
                 os.path.getsize(output_path) / 1e6, output_path)
    return output_path


def _docstrings(path: str) -> list[str]:
    """Module, class and function docstrings of one file, in source order; [] if it does not parse."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree)
                      if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    return [d for d in (ast.get_docstring(n) for n in nodes) if d]


def _is_code_like(line: str) -> bool:
    if line.startswith((">>>", "...", "$ ", "%")):
        return True
    letters = sum(c.isalpha() or c.isspace() for c in line)
    return letters < 0.75 * len(line)


def _docstring_sentences(docstring: str) -> list[str]:
    """Joins each paragraph's wrapped lines and splits it into sentences; drops code-like lines."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = [ln.strip() for ln in paragraph.splitlines()]
        text = " ".join(ln for ln in lines if ln and not _is_code_like(ln))
        sentences.extend(s for s in _SENTENCE_END.split(text) if len(s.split()) >= 2)
    return sentences


# ------------------------------------------------------------------ tokenized, sharded dataset

class _Input:
    """A corpus spec: text files (file, directory, glob; commas between several) or 'tfds:NAME[:SPLIT]'."""

    def __init__(self, spec: str, source: str = "config.data.corpus"):
        self.spec, self.source = spec, source
        self.tfds = tfds_text.TfdsText.parse(spec) if tfds_text.is_tfds_spec(spec) else None
        self.files = [] if self.tfds else resolve_text_files(spec, source)

    def __str__(self) -> str:
        return str(self.tfds) if self.tfds else _shorten(self.files)

    def documents(self) -> Iterator[sharded_corpus.Document]:
        """Text files give sentence lists; TFDS gives raw text, cut into sentences in the workers."""
        return self.tfds.texts() if self.tfds else read_documents(self.files, self.source)

    def fingerprint(self) -> str:
        """Files by path, size and modification time; a TFDS split by its prepared files."""
        if self.tfds:
            return self.tfds.fingerprint()
        parts = []
        for path in self.files:
            stat = os.stat(path) if os.path.exists(path) else None
            parts.append([os.path.abspath(path), stat and stat.st_size, stat and stat.st_mtime_ns])
        return json.dumps(parts)


def _shorten(files: Sequence[str]) -> str:
    return repr(files[0]) if len(files) == 1 else f"{files[0]!r} and {len(files) - 1} more files"


# The rule that holds documents out, part of the tokenized cache's key: 2 = by content (1 was by position).
HELD_OUT_RULE = 2


def held_out(document: sharded_corpus.Document, eval_fraction: float) -> bool:
    """Whether a document belongs to eval: a hash of its text, so the choice depends on nothing else.

    By content, not position: a file added to the corpus (or a reordered directory) moves no document
    between train and eval, and copies of one document always land on the same side.
    """
    text = document if isinstance(document, str) else "\n".join(document)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < eval_fraction * 2**64


def _split_documents(corpus: _Input, eval_input: _Input | None,
                     eval_fraction: float) -> Iterator[tuple[str, sharded_corpus.Document]]:
    """(split, document) in reading order. `eval` holds `eval_input` if given (then `train` is all of
    `corpus`), else the documents of `corpus` whose text hashes below `eval_fraction` (stable across runs,
    machines and edits elsewhere in the corpus). With neither there is only `train`: how
    `build_eval_source` reads a corpus."""
    if eval_input is not None:
        yield from (("train", document) for document in corpus.documents())
        yield from (("eval", document) for document in eval_input.documents())
    else:
        for document in corpus.documents():
            yield ("eval" if eval_fraction > 0 and held_out(document, eval_fraction) else "train"), document


def _empty_messages(corpus: _Input, eval_input: _Input | None, eval_fraction: float) -> dict[str, str]:
    """What to say when a split has no documents after tokenization (TFDS text or text files)."""
    no_text = ("give text with one sentence per line and blank lines between documents." if not corpus.tfds else
               "give a dataset whose examples have text.")
    messages = {"train": f"{corpus} has no documents after tokenization; {no_text}"}
    if eval_input is not None:
        messages["eval"] = f"config.data.eval_corpus {eval_input} has no documents after tokenization; {no_text}"
    elif eval_fraction > 0:
        messages["eval"] = (f"the eval split is empty: no document of {corpus} fell in eval_fraction={eval_fraction}; "
                            "give more text, raise config.data.eval_fraction or set config.data.eval_corpus.")
    return messages


def _fingerprint(corpus: _Input, eval_input: _Input | None, eval_fraction: float, tokenizer: Tokenizer,
                 docs_per_shard: int) -> str:
    """Hash of everything the dataset depends on (not the number of workers: it changes no byte)."""
    h = hashlib.sha256()
    for part in (corpus.fingerprint(), "--eval--", eval_input.fingerprint() if eval_input else "",
                 repr(float(eval_fraction)), f"docs_per_shard={docs_per_shard}",
                 f"format={sharded_corpus.FORMAT_VERSION}", f"held_out_rule={HELD_OUT_RULE}"):
        h.update(part.encode() + b"\0")
    h.update(tokenizer.serialized_model())
    return h.hexdigest()[:16]


def _prepare(corpus: _Input, eval_input: _Input | None, eval_fraction: float, tokenizer: Tokenizer,
             data_dir: str, num_workers: int, docs_per_shard: int) -> dict[str, Any]:
    """Tokenizes the inputs unless this exact dataset is already on disk; returns a source per split.

    The dataset lives in <data_dir>/<fingerprint>, so a changed corpus, split or tokenizer builds a new
    one instead of reusing a stale one; an interrupted build resumes from its complete shards.
    """
    eval_fraction = 0.0 if eval_input is not None else float(eval_fraction)
    dataset_dir = os.path.join(data_dir, _fingerprint(corpus, eval_input, eval_fraction, tokenizer, docs_per_shard))
    index = sharded_corpus.read_index(dataset_dir)
    if index is not None:
        logging.info("Reusing tokenized corpus in %s.", dataset_dir)
    else:
        num_workers = num_workers or os.cpu_count() or 1
        logging.info("Tokenizing %s into %s (%d worker processes, %d documents per shard).", corpus, dataset_dir,
                     num_workers, docs_per_shard)
        index = sharded_corpus.write_sharded_corpus(
            dataset_dir, _split_documents(corpus, eval_input, eval_fraction), tokenizer=tokenizer,
            empty_messages=_empty_messages(corpus, eval_input, eval_fraction), num_workers=num_workers,
            docs_per_shard=docs_per_shard, sentence_splitter=tfds_text.split_sentences,
            metadata={"corpus": corpus.spec, "eval_corpus": eval_input.spec if eval_input else "",
                      "eval_fraction": eval_fraction, "tokenizer_model": tokenizer.model_path})
        if "throughput" in index:
            rate = index["throughput"]
            logging.info("Tokenized %d shards in %.1f s: %.0f documents/s, %.0f tokens/s.", rate["shards_written"],
                         rate["seconds"], rate["documents_per_second"], rate["tokens_per_second"])
    for split, info in sorted(index["splits"].items()):
        logging.info("Split %s: %d documents, %d sentences, %d tokens in %d shards.", split, info["documents"],
                     info["sentences"], info["tokens"], len(info["shards"]))
    return sharded_corpus.load_sources(dataset_dir, index)


def build_corpus(corpus: str, eval_corpus: str, eval_fraction: float, tokenizer: Tokenizer, data_dir: str, *,
                 num_workers: int = 0, docs_per_shard: int = 50_000, language_folders: bool = False) -> dict[str, Any]:
    """Tokenizes the corpus into `data_dir` unless already there; returns {'train': src, 'eval': src}.

    `corpus` and `eval_corpus` are text files or 'tfds:NAME[:SPLIT]'. Each source is random access
    (`len`, `src[i]`), elements {'tokens', 'sentence_lengths'} as int32 numpy arrays [num_tokens] and
    [num_sentences]. `eval_corpus` empty: hold out `eval_fraction` of the corpus's documents.
    `num_workers` processes tokenize (0: one per CPU), `docs_per_shard` documents per shard.
    A multilingual corpus (`languages.parse`) gives a `languages.LanguageSources` per split instead, each
    language tokenized into a dataset of its own, so adding a language tokenizes only that one.
    """
    by_language = languages.parse(corpus, language_folders=language_folders)
    if by_language is not None:
        eval_by_language = languages.parse_eval(eval_corpus, list(by_language), language_folders=language_folders)
        return _build_languages(by_language, eval_by_language, eval_fraction, tokenizer, data_dir, num_workers,
                                docs_per_shard)
    eval_input = _Input(eval_corpus, "config.data.eval_corpus") if eval_corpus else None
    if eval_input is None and eval_fraction <= 0:
        raise InputError("no evaluation data: set config.data.eval_corpus or a config.data.eval_fraction > 0.")
    return _prepare(_Input(corpus), eval_input, eval_fraction, tokenizer, data_dir, num_workers, docs_per_shard)


def _build_languages(by_language: dict[str, str], eval_by_language: dict[str, str] | None, eval_fraction: float,
                     tokenizer: Tokenizer, data_dir: str, num_workers: int, docs_per_shard: int) -> dict[str, Any]:
    """Each language's splits, `_prepare`d apart (eval: its part of eval_corpus, else eval_fraction of it)."""
    if eval_by_language is None and eval_fraction <= 0:
        raise InputError("no evaluation data: set config.data.eval_corpus (tagged by language) or a "
                         "config.data.eval_fraction > 0.")
    splits: dict[str, dict[str, Any]] = {"train": {}, "eval": {}}
    for language, spec in by_language.items():
        eval_input = (_Input(eval_by_language[language], f"config.data.eval_corpus[{language}]")
                      if eval_by_language else None)
        logging.info("Language %s: %s.", language, spec)
        prepared = _prepare(_Input(spec, f"config.data.corpus[{language}]"), eval_input, eval_fraction, tokenizer,
                            data_dir, num_workers, docs_per_shard)
        for split, by_split in splits.items():
            by_split[language] = prepared[split]
    return {split: languages.LanguageSources(sources) for split, sources in splits.items()}


def build_eval_source(corpus_spec: str, tokenizer: Tokenizer, data_dir: str, *, num_workers: int = 0,
                      docs_per_shard: int = 50_000, source: str = "config.data.eval_corpus") -> Any:
    """Tokenizes every document of `corpus_spec` (no hold-out) to evaluate a checkpoint on it; `source`
    names where the spec came from in messages. A language-tagged spec gives a `LanguageSources`."""
    by_language = languages.parse(corpus_spec, source=source)
    if by_language is not None:
        return languages.LanguageSources({
            language: _prepare(_Input(spec, f"{source}[{language}]"), None, 0.0, tokenizer, data_dir, num_workers,
                               docs_per_shard)["train"] for language, spec in by_language.items()})
    return _prepare(_Input(corpus_spec, source), None, 0.0, tokenizer, data_dir, num_workers, docs_per_shard)["train"]


def _get_or_train_tokenizer(config_data, workdir: str, corpus: str) -> Tokenizer:
    """`config.data.tokenizer_model` if set, else the workdir's cached model, trained on first use (and
    again if the cached file does not load: it is the cache's own file, say cut short by a full disk)."""
    if config_data.tokenizer_model:
        return load_tokenizer(config_data.tokenizer_model)
    model_path = os.path.join(workdir, "tokenizer", "spm.model")
    cached = _cached_tokenizer(model_path)
    if cached is not None:
        return cached
    logging.info("Training a %d-piece tokenizer on %s.", config_data.tokenizer_vocab_size, corpus)
    by_language = languages.parse(corpus, language_folders=_language_folders(config_data))
    if by_language is not None:
        sample, coverage = write_language_sample(by_language, os.path.join(workdir, "tokenizer"),
                                                 getattr(config_data, "tokenizer_alpha", 0.3))
        byte_fallback = config_data.tokenizer_vocab_size >= MIN_BYTE_FALLBACK_VOCAB
        train_tokenizer([sample], model_path[: -len(".model")], config_data.tokenizer_vocab_size,
                        character_coverage=coverage, byte_fallback=byte_fallback)
        return load_tokenizer(model_path)
    if tfds_text.is_tfds_spec(corpus):  # SentencePiece reads text files: write a sample of the dataset
        files = [tfds_text.TfdsText.parse(corpus).write_sample(os.path.join(workdir, "tokenizer", "sample.txt"))]
    else:
        files = resolve_text_files(corpus)
        check_text_files(files)
    train_tokenizer(files, model_path[: -len(".model")], config_data.tokenizer_vocab_size)
    return load_tokenizer(model_path)


# A multilingual tokenizer falls back to UTF-8 bytes for characters it has no piece for (nothing becomes
# [UNK]) when its vocabulary has room for the 256 byte pieces besides the text's own.
MIN_BYTE_FALLBACK_VOCAB = 1024
_TOKENIZER_SAMPLE_SENTENCES = 2_000_000  # what train_tokenizer reads at most
# Scripts with thousands of characters (Han, kana, Hangul): SentencePiece's 0.9995 coverage leaves their
# rarest characters to byte fallback; small alphabets (Latin, Cyrillic, Greek, Arabic...) are covered whole.
_LARGE_SCRIPTS = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
                  (0x20000, 0x3FFFF))


def character_coverage(characters: Iterable[str]) -> float:
    """SentencePiece's character_coverage for text of these characters: 0.9995 with a large (CJK) script,
    1.0 with small alphabets only (then every character gets a piece)."""
    large = any(lo <= ord(c) <= hi for c in characters for lo, hi in _LARGE_SCRIPTS)
    return 0.9995 if large else 1.0


def _language_files(language: str, spec: str, directory: str) -> list[str]:
    """One language's text files for tokenizer training (a TFDS corpus is written out as a sample)."""
    if tfds_text.is_tfds_spec(spec):
        return [tfds_text.TfdsText.parse(spec).write_sample(os.path.join(directory, f"sample.{language}.txt"))]
    source = f"config.data.corpus[{language}]"
    files = resolve_text_files(spec, source)
    check_text_files(files, source)
    return files


def write_language_sample(by_language: dict[str, str], directory: str, alpha: float, *,
                          max_sentences: int = _TOKENIZER_SAMPLE_SENTENCES, seed: int = 0) -> tuple[str, float]:
    """Writes the tokenizer's training text for a multilingual corpus; returns (its path, character_coverage).

    As in XLM: language i (n_i lines, p_i = its share) gives round(q_i * M) of the M = min(all lines,
    max_sentences) lines with q_i proportional to p_i^alpha, drawn without replacement while its lines last
    and as whole repeats beyond, so a low-resource language is upsampled and gets pieces of its own.
    """
    files = {language: _language_files(language, spec, directory) for language, spec in by_language.items()}
    counts = [sum(1 for _ in training_sentences(f)) for f in files.values()]
    empty = [language for language, n in zip(files, counts) if n == 0]
    if empty:
        raise InputError(f"language {empty[0]!r} of config.data.corpus has no text; give it one sentence per line.")
    weights = mixture.alpha_weights(counts, alpha)
    takes = mixture.slot_counts(weights, min(sum(counts), max_sentences))
    rng = np.random.default_rng(seed)
    path, characters = os.path.join(directory, "multilingual_sample.txt"), set()
    os.makedirs(directory, exist_ok=True)
    with atomic.writer(path) as out:
        for (language, language_files), n, take, q in zip(files.items(), counts, takes, weights):
            logging.info("Tokenizer sample: %s gives %d of its %d lines (p %.4f, q %.4f).", language, take, n,
                         n / sum(counts), q)
            whole, rest = divmod(int(take), n)
            extra = np.sort(rng.choice(n, rest, replace=False))  # [rest] line numbers taken once more
            next_extra = 0
            for line_number, line in enumerate(training_sentences(language_files)):
                repeats = whole
                if next_extra < len(extra) and extra[next_extra] == line_number:
                    repeats, next_extra = repeats + 1, next_extra + 1
                if repeats:
                    out.write((line + "\n") * repeats)
                    characters.update(line)
    return path, character_coverage(characters)


def _language_folders(config_data) -> bool:
    """`config.data.language_folders` (False for a namespace without it: configs from before the field)."""
    return bool(getattr(config_data, "language_folders", False))


def _cached_tokenizer(model_path: str) -> Tokenizer | None:
    """The workdir's cached tokenizer, or None when there is none or it does not load (it is retrained)."""
    if not os.path.isfile(model_path):
        return None
    try:
        tokenizer = load_tokenizer(model_path)
    except InputError as e:
        logging.warning("The cached tokenizer %s is damaged (%s); training it again.", model_path, e.__cause__ or e)
        return None
    logging.info("Reusing tokenizer %s.", model_path)
    return tokenizer


def default_or_given_inputs(config_data, workdir: str,
                            tokenizer: Tokenizer | None = None) -> tuple[str, Tokenizer]:
    """(corpus spec, tokenizer) of a run in `workdir`: what it trains on, before anything is tokenized.

    Empty `config.data.corpus`: the stdlib docstring corpus, written to <workdir>/corpus. Empty
    `config.data.tokenizer_model`: a tokenizer trained on the training text, cached in
    <workdir>/tokenizer. Both are written on first use only, so on a restart this reads and writes nothing
    and a resumed run can be compared with its checkpoint before it changes anything. A given
    `tokenizer` (the one stored in a checkpoint) takes precedence.
    """
    corpus = config_data.corpus
    if not corpus:
        corpus = os.path.join(workdir, "corpus", "stdlib_docstrings.txt")
        if os.path.isfile(corpus):
            logging.info("Reusing the stdlib docstring corpus %s.", corpus)
        else:
            write_stdlib_docstring_corpus(corpus)
    if tokenizer is None:
        tokenizer = _get_or_train_tokenizer(config_data, workdir, corpus)
    logging.info("Tokenizer %s: %d pieces.", tokenizer.model_path, tokenizer.vocab_size)
    return corpus, tokenizer


def _describe_input(spec: str, source: str = "config.data.corpus") -> dict[str, Any]:
    corpus = _Input(spec, source)
    sizes = [os.path.getsize(path) for path in corpus.files if os.path.exists(path)]
    return {"fingerprint": hashlib.sha256(corpus.fingerprint().encode()).hexdigest()[:16], "what": str(corpus),
            "files": len(corpus.files) if not corpus.tfds else None, "bytes": sum(sizes) if not corpus.tfds else None}


def _describe_languages(by_language: dict[str, str], source: str) -> dict[str, Any]:
    """A multilingual input: every language's files under its name, so another language set, or another
    file of one language, is another fingerprint."""
    parts = {language: _describe_input(spec, f"{source}[{language}]") for language, spec in by_language.items()}
    key = json.dumps([[language, part["fingerprint"]] for language, part in parts.items()])
    files = [part["files"] for part in parts.values()]
    return {"fingerprint": hashlib.sha256(key.encode()).hexdigest()[:16],
            "what": f"{len(parts)} languages ({', '.join(parts)})",
            "files": None if None in files else sum(files),
            "bytes": None if None in files else sum(part["bytes"] for part in parts.values()), "languages": parts}


def corpus_fingerprint(corpus: str, eval_corpus: str, *, language_folders: bool = False) -> dict[str, Any]:
    """The training and held-out text as the tokenized cache tells them apart (paths, sizes, modification
    times; a TFDS split by its prepared files), without reading any text.

    A checkpoint stores it so that a resumed run notices a corpus that changed since (a file added, one
    edited): tokenizing it again would train on another stream. {'train': ..., 'eval': ... or None (the
    held-out documents come from the training corpus)}, each {'fingerprint', 'what', 'files', 'bytes'}; a
    multilingual input also has 'languages', each language's own.
    """
    by_language = languages.parse(corpus, language_folders=language_folders)
    if by_language is None:
        return {"train": _describe_input(corpus), "eval": _describe_input(eval_corpus) if eval_corpus else None}
    eval_by_language = languages.parse_eval(eval_corpus, list(by_language), language_folders=language_folders)
    return {"train": _describe_languages(by_language, "config.data.corpus"),
            "eval": _describe_languages(eval_by_language, "config.data.eval_corpus") if eval_by_language else None}


def corpus_languages(config_data, corpus: str | None = None) -> tuple[str, ...]:
    """The languages of a run's corpus in id order, () for a monolingual one: what `config.data.languages`
    records. Reads folder names only."""
    by_language = languages.parse(config_data.corpus if corpus is None else corpus,
                                  language_folders=_language_folders(config_data))
    return tuple(by_language or ())


def tokenize_splits(config_data, workdir: str, corpus: str, tokenizer: Tokenizer) -> dict[str, Any]:
    """The tokenized splits of `corpus` (and `config.data.eval_corpus`), cached in <workdir>/corpus/tokenized."""
    return build_corpus(corpus, config_data.eval_corpus, config_data.eval_fraction, tokenizer,
                        os.path.join(workdir, "corpus", "tokenized"), num_workers=config_data.preprocess_workers,
                        docs_per_shard=config_data.docs_per_shard, language_folders=_language_folders(config_data))


def prepare_default_or_given(config_data, workdir: str,
                             tokenizer: Tokenizer | None = None) -> tuple[Tokenizer, dict[str, Any]]:
    """Corpus, tokenizer and tokenized splits (`default_or_given_inputs`, then `tokenize_splits`), each
    built once per workdir: calling it again (a restart) reuses every cache."""
    corpus, tokenizer = default_or_given_inputs(config_data, workdir, tokenizer)
    return tokenizer, tokenize_splits(config_data, workdir, corpus, tokenizer)


def check_workdir_outside_corpus(config_data, workdir: str) -> None:
    """A workdir inside a corpus folder would be read as corpus: its metrics, config and tokenizer files
    would become training text, and the corpus would change under the run at every step."""
    work = os.path.realpath(workdir)
    for spec in (config_data.corpus, config_data.eval_corpus):
        for part in (languages.split_tag(p)[1] for p in spec.split(",")):
            if part and os.path.isdir(part) and (work + os.sep).startswith(os.path.realpath(part) + os.sep):
                raise InputError(f"--workdir {workdir} is inside the corpus folder {part}, so the run would read its "
                                 "own files as text; put the workdir outside the corpus folder.")


def prepare_locked(config_data, workdir: str) -> tuple[Tokenizer, dict[str, Any]]:
    """`prepare_default_or_given` with the workdir locked: what `python -m bert_jax.prepare_corpus` runs.

    A preparation then never builds the tokenizer and corpus caches of a workdir that another preparation
    or a training run is writing. The trainer calls `prepare_default_or_given` inside the lock it holds
    for the whole run; evaluation calls it without one, as it only reads caches the run has built.
    """
    check_workdir_outside_corpus(config_data, workdir)
    with workdir_lock.workdir_lock(workdir, "corpus preparation"):
        return prepare_default_or_given(config_data, workdir)
