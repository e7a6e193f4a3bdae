"""Text corpora: finding text files, the embedded default corpus, and tokenized TFDS datasets.

Text follows google-research/bert: one sentence per line, documents separated by blank lines. A
corpus is tokenized once into an array_record TFDS dataset whose examples are documents
(`tokens`: all token ids, `sentence_lengths`: tokens per sentence); the Grain pipeline in
`pretraining.py` reads it by random access. The cache lives under a fingerprint of the inputs, so a
changed corpus, split or tokenizer builds a new dataset instead of reusing a stale one.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import pathlib
import re
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from bert_jax.config import InputError
from bert_jax.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer

_DOCS_PER_TOKENIZER_CALL = 512


def resolve_text_files(spec: str) -> list[str]:
    """Expands a file, directory (recursively, hidden files skipped) or glob; commas separate several."""
    files: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if os.path.isdir(part):
            for root, dirs, names in os.walk(part):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                files.extend(os.path.join(root, n) for n in names if not n.startswith("."))
        else:
            files.extend(glob.glob(os.path.expanduser(part), recursive=True))
    files = sorted({f for f in files if os.path.isfile(f)})
    if not files:
        raise InputError(f"no text files match config.data.corpus={spec!r}; give a file, a directory or a glob.")
    return files


# A "sentence" longer than this is not one-sentence-per-line text (a dump with no newlines, a minified
# file): refused with a message instead of being handed, megabytes at a time, to the tokenizer.
MAX_LINE_CHARS = 1_000_000


def _check_not_binary(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(8192)
    if b"\x00" in head:  # what git and grep go by: text has no NUL bytes
        raise InputError(f"{path} looks like a binary file (it holds NUL bytes), not text: remove it from "
                         "config.data.corpus or point the corpus at the text files only.")


def _lines(path: str) -> Iterator[str]:
    """The lines of a UTF-8 text file, each read with a bounded buffer; errors name the file and the line."""
    _check_not_binary(path)
    line_number = 0
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                line = f.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError as e:
                raise InputError(f"{path} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} near line "
                                 f"{line_number + 1}): convert it, e.g. `iconv -f latin1 -t utf-8`, or remove it "
                                 "from config.data.corpus.") from None
            if not line:
                return
            line_number += 1
            if len(line) > MAX_LINE_CHARS:
                raise InputError(f"{path} line {line_number} is longer than {MAX_LINE_CHARS:,} characters, so it is "
                                 "not one-sentence-per-line text: split it into one sentence per line, with blank "
                                 "lines between documents.")
            yield line


def read_documents(files: Iterable[str]) -> Iterator[list[str]]:
    """Yields each document as its list of stripped, non-empty sentences, streaming file by file.

    Files must be UTF-8 text with lines of at most MAX_LINE_CHARS characters; InputError otherwise.
    """
    for path in files:
        document: list[str] = []
        for line in _lines(path):
            line = line.strip()
            if line:
                document.append(line)
            elif document:
                yield document
                document = []
        if document:  # a file ends a document
            yield document


def check_text_files(files: Iterable[str]) -> None:
    """Reads `files` through once, so bad text is refused before SentencePiece (which skips it silently)."""
    for _ in read_documents(files):
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
    tmp_path = output_path + ".tmp"
    num_docs = 0
    with open(tmp_path, "w", encoding="utf-8") as out:
        for path in sorted(paths):
            for docstring in _docstrings(path):
                sentences = _docstring_sentences(docstring)
                if len(sentences) >= _MIN_SENTENCES and sum(len(s.split()) for s in sentences) >= _MIN_WORDS:
                    out.write("\n".join(sentences) + "\n\n")
                    num_docs += 1
    os.replace(tmp_path, output_path)  # a crash mid-write never leaves a truncated corpus behind
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


# ------------------------------------------------------------------ tokenized TFDS dataset

class BertJaxCorpus(tfds.core.GeneratorBasedBuilder):
    """Tokenized documents of a text corpus, split into `train` and `eval`.

    `eval` holds `eval_files` if given (then `train` is all of `corpus_files`), else the documents of
    `corpus_files` whose index hashes below `eval_fraction` (stable across runs and machines). With
    neither, there is only `train`: that is how `build_eval_source` reads a corpus for evaluation.
    """

    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> pathlib.Path:
        """This file; TFDS's own lookup needs the `importlib_resources` backport, which we do not require."""
        return pathlib.Path(__file__)

    def __init__(self, *, corpus_files: Sequence[str], eval_files: Sequence[str], eval_fraction: float,
                 tokenizer: Tokenizer, data_dir: str):
        # Set before super().__init__, which reads `info`.
        self._corpus_files = list(corpus_files)
        self._eval_files = list(eval_files)
        self._eval_fraction = 0.0 if self._eval_files else float(eval_fraction)
        self._tokenizer = tokenizer
        self._arguments = dict(corpus_files=self._corpus_files, eval_files=self._eval_files,
                               eval_fraction=self._eval_fraction, tokenizer=tokenizer, data_dir=data_dir)
        super().__init__(data_dir=data_dir, file_format="array_record")

    def __getstate__(self):
        # Data sources carry their builder into Grain worker processes; TFDS would pickle only data_dir.
        return {"_arguments": self._arguments}

    def __setstate__(self, state):
        self.__init__(**state["_arguments"])

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Documents tokenized with a bert_jax SentencePiece model.",
            features=tfds.features.FeaturesDict({
                "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),  # [num_tokens]
                "sentence_lengths": tfds.features.Tensor(shape=(None,), dtype=np.int32),  # [num_sentences]
            }),
            disable_shuffling=True,  # keep documents in reading order: eval sets stay easy to inspect
            metadata=tfds.core.MetadataDict(
                corpus_files=self._corpus_files, eval_files=self._eval_files,
                eval_fraction=self._eval_fraction, tokenizer_model=self._tokenizer.model_path),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is local
        fraction, everything = self._eval_fraction, (lambda index: True)
        no_text = "give text with one sentence per line and blank lines between documents."
        train_empty = f"{_shorten(self._corpus_files)} has no documents after tokenization; {no_text}"
        if self._eval_files:
            return {"train": self._generate_examples(self._corpus_files, everything, train_empty),
                    "eval": self._generate_examples(self._eval_files, everything,
                                                    f"config.data.eval_corpus {_shorten(self._eval_files)} "
                                                    f"has no documents after tokenization; {no_text}")}
        if fraction <= 0:
            return {"train": self._generate_examples(self._corpus_files, everything, train_empty)}
        eval_empty = (f"the eval split is empty: no document of {_shorten(self._corpus_files)} fell in "
                      f"eval_fraction={fraction}; give more text, raise config.data.eval_fraction or set "
                      "config.data.eval_corpus.")
        return {"train": self._generate_examples(self._corpus_files, lambda i: not _held_out(i, fraction),
                                                 train_empty),
                "eval": self._generate_examples(self._corpus_files, lambda i: _held_out(i, fraction),
                                                eval_empty)}

    def _generate_examples(self, files, keep, empty_message):
        """Yields (document index, example); tokenizes many documents per SentencePiece call."""
        pending, num_examples = [], 0
        for index, document in enumerate(read_documents(files)):
            if keep(index):
                pending.append((index, document))
            if len(pending) == _DOCS_PER_TOKENIZER_CALL:
                for example in self._tokenize(pending):
                    num_examples += 1
                    yield example
                pending = []
        for example in self._tokenize(pending):
            num_examples += 1
            yield example
        if not num_examples:  # TFDS cannot write an empty split; say why it is empty instead
            raise InputError(empty_message)

    def _tokenize(self, documents):
        sentences = [s for _, document in documents for s in document]
        ids = iter(self._tokenizer.encode_batch(sentences)) if sentences else iter(())
        for index, document in documents:
            pieces = [p for p in (next(ids) for _ in document) if p]  # drop sentences with no tokens
            if pieces:
                yield index, {
                    "tokens": np.concatenate([np.asarray(p, np.int32) for p in pieces]),
                    "sentence_lengths": np.asarray([len(p) for p in pieces], np.int32),
                }


def _shorten(files: Sequence[str]) -> str:
    return repr(files[0]) if len(files) == 1 else f"{files[0]!r} and {len(files) - 1} more files"


def _held_out(index: int, eval_fraction: float) -> bool:
    """Whether document `index` belongs to eval: a hash, so the choice never depends on the machine."""
    digest = hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < eval_fraction * 2**64


def _fingerprint(corpus_files, eval_files, eval_fraction, tokenizer: Tokenizer) -> str:
    """Hash of everything the dataset depends on; files by path, size and modification time."""
    h = hashlib.sha256()
    for path in list(corpus_files) + ["--eval--"] + list(eval_files):
        stat = os.stat(path) if os.path.exists(path) else None
        h.update(json.dumps([os.path.abspath(path), stat and stat.st_size, stat and stat.st_mtime_ns]).encode())
    h.update(repr(float(eval_fraction)).encode())
    h.update(tokenizer.serialized_model())
    return h.hexdigest()[:16]


def _builder(corpus_files, eval_files, eval_fraction, tokenizer: Tokenizer, data_dir: str) -> BertJaxCorpus:
    """The builder for these inputs, in a data_dir named by their fingerprint (so stale caches are never read)."""
    fingerprint = _fingerprint(corpus_files, eval_files, eval_fraction if not eval_files else 0.0, tokenizer)
    return BertJaxCorpus(corpus_files=corpus_files, eval_files=eval_files, eval_fraction=eval_fraction,
                         tokenizer=tokenizer, data_dir=os.path.join(data_dir, fingerprint))


def _prepare(builder: BertJaxCorpus) -> dict[str, Any]:
    """Tokenizes the corpus unless this exact dataset is already on disk; returns a source per split."""
    if builder.is_prepared():
        logging.info("Reusing tokenized corpus in %s.", builder.data_dir)
    else:
        logging.info("Tokenizing corpus into %s.", builder.data_dir)
        tfds.display_progress_bar(False)  # progress bars would flood the training logs
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP))
    sources = {}
    for split, info in sorted(builder.info.splits.items()):
        sources[split] = builder.as_data_source(split)
        if info.num_examples <= _MAX_DOCS_TO_COUNT:
            lengths = [ex["sentence_lengths"] for ex in sources[split]]
            logging.info("Split %s: %d documents, %d sentences, %d tokens.", split, info.num_examples,
                         sum(map(len, lengths)), sum(int(x.sum()) for x in lengths))
        else:
            logging.info("Split %s: %d documents.", split, info.num_examples)
    return sources


_MAX_DOCS_TO_COUNT = 200_000  # counting sentences and tokens reads every document; skip it beyond this


def build_corpus(corpus: str, eval_corpus: str, eval_fraction: float, tokenizer: Tokenizer,
                 data_dir: str) -> dict[str, Any]:
    """Tokenizes the corpus into `data_dir` unless already there; returns {'train': src, 'eval': src}.

    Each source is random access (`len`, `src[i]`), elements {'tokens', 'sentence_lengths'} as int32
    numpy arrays [num_tokens] and [num_sentences]. `eval_corpus` empty: hold out `eval_fraction` of
    the corpus's documents.
    """
    eval_files = resolve_text_files(eval_corpus) if eval_corpus else []
    if not eval_files and eval_fraction <= 0:
        raise InputError("no evaluation data: set config.data.eval_corpus or a config.data.eval_fraction > 0.")
    builder = _builder(resolve_text_files(corpus), eval_files, eval_fraction, tokenizer, data_dir)
    return _prepare(builder)


def build_eval_source(corpus_spec: str, tokenizer: Tokenizer, data_dir: str) -> Any:
    """Tokenizes every document of `corpus_spec` (no hold-out) to evaluate a checkpoint on it."""
    builder = _builder(resolve_text_files(corpus_spec), [], 0.0, tokenizer, data_dir)
    return _prepare(builder)["train"]


def _get_or_train_tokenizer(config_data, workdir: str, corpus: str) -> Tokenizer:
    """`config.data.tokenizer_model` if set, else the workdir's cached model, trained on first use."""
    if config_data.tokenizer_model:
        return load_tokenizer(config_data.tokenizer_model)
    model_path = os.path.join(workdir, "tokenizer", "spm.model")
    if os.path.isfile(model_path):
        logging.info("Reusing tokenizer %s.", model_path)
    else:
        logging.info("Training a %d-piece tokenizer on %s.", config_data.tokenizer_vocab_size, corpus)
        check_text_files(resolve_text_files(corpus))
        train_tokenizer(resolve_text_files(corpus), model_path[: -len(".model")], config_data.tokenizer_vocab_size)
    return load_tokenizer(model_path)


def prepare_default_or_given(config_data, workdir: str,
                             tokenizer: Tokenizer | None = None) -> tuple[Tokenizer, dict[str, Any]]:
    """The trainer's one call: corpus, tokenizer and tokenized splits, each built once per workdir.

    Empty `config.data.corpus`: the stdlib docstring corpus, written to <workdir>/corpus. Empty
    `config.data.tokenizer_model`: a tokenizer trained on the training text, cached in
    <workdir>/tokenizer. Calling it again (a restart) reuses every cache. A given `tokenizer` (the one
    stored in a checkpoint) takes precedence over both.
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
    sources = build_corpus(corpus, config_data.eval_corpus, config_data.eval_fraction, tokenizer,
                           os.path.join(workdir, "corpus", "tfds"))
    return tokenizer, sources
