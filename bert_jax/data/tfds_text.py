"""Text corpora from prepared TFDS datasets: `config.data.corpus = 'tfds:NAME[:SPLIT]'`.

For example 'tfds:wikipedia/20230601.en', 'tfds:c4/en', 'tfds:bookcorpus' or 'tfds:c4/en:validation'
(SPLIT defaults to 'train' and may be a TFDS slice such as 'train[:10%]'). The dataset must already be
prepared in array_record format under $TFDS_DATA_DIR (default ~/tensorflow_datasets): it is read with
random access through `as_data_source`, never downloaded and never read through TensorFlow. Each
example's 'text' feature is one document, cut into sentences by `split_sentences`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from bert_jax.config import InputError
from bert_jax.runtime import atomic

PREFIX = "tfds:"
TEXT_FEATURE = "text"  # what wikipedia, c4 and bookcorpus call it
_READ_BATCH = 1024  # examples per read call


def is_tfds_spec(spec: str) -> bool:
    return spec.strip().startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class TfdsText:
    """One split of a prepared TFDS text dataset."""

    name: str
    split: str
    data_dir: str

    @classmethod
    def parse(cls, spec: str) -> TfdsText:
        """'tfds:NAME[:SPLIT]' -> TfdsText; the data dir is TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
        name, _, split = spec.strip()[len(PREFIX):].partition(":")
        if not name:
            raise InputError(f"config.data.corpus={spec!r} names no dataset; write tfds:NAME[:SPLIT], "
                             "e.g. tfds:wikipedia/20230601.en or tfds:c4/en:validation.")
        return cls(name.strip(), split.strip() or "train", tfds.core.constants.get_default_data_dir())

    def __str__(self) -> str:
        return f"TFDS {self.name} split {self.split!r}"

    def open(self) -> tuple[Any, tfds.core.DatasetBuilder]:
        """(random-access source, builder); one InputError line if it is not prepared or has no text."""
        build = f"tfds build {self.name} --file_format=array_record --data_dir={self.data_dir}"
        not_prepared = (f"TFDS dataset {self.name} is not prepared in {self.data_dir} (or is not a TFDS name); "
                        f"prepare it where there is network with `{build}` and copy that directory here, or set "
                        "TFDS_DATA_DIR to where it is prepared.")
        try:
            builder = tfds.builder(self.name, data_dir=self.data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise InputError(not_prepared) from None
        if not builder.is_prepared():
            raise InputError(not_prepared)
        features = builder.info.features
        if TEXT_FEATURE not in features or not isinstance(features[TEXT_FEATURE], tfds.features.Text):
            raise InputError(f"{self} has no text feature {TEXT_FEATURE!r} (its features: {', '.join(features)}); "
                             "give a text corpus such as tfds:wikipedia/20230601.en, tfds:c4/en or tfds:bookcorpus.")
        try:
            return builder.as_data_source(split=self.split), builder
        except NotImplementedError:
            raise InputError(f"{self} in {self.data_dir} is stored as {builder.info.file_format.value}, which "
                             f"cannot be read without TensorFlow; rebuild it with `{build}`.") from None
        except (KeyError, ValueError) as e:
            raise InputError(f"{self.name} in {self.data_dir} has no split {self.split!r} ({e}); it has "
                             f"{', '.join(builder.info.splits)}.") from None

    def fingerprint(self) -> str:
        """Changes when the prepared dataset (its version, files or split) changes."""
        _, builder = self.open()
        info_file = os.path.join(builder.data_dir, "dataset_info.json")
        stat = os.stat(info_file) if os.path.exists(info_file) else None
        return json.dumps([self.name, self.split, builder.data_dir, str(builder.version),
                           stat and stat.st_size, stat and stat.st_mtime_ns])

    def texts(self) -> Iterator[str]:
        """Every example's text, in order, read a batch at a time (the split is never held in memory)."""
        source, _ = self.open()
        for start in range(0, len(source), _READ_BATCH):
            for example in source.__getitems__(list(range(start, min(start + _READ_BATCH, len(source))))):
                yield _text(example[TEXT_FEATURE])

    def write_sample(self, path: str, max_sentences: int = 2_000_000, max_documents: int = 100_000) -> str:
        """Writes sentences of up to `max_documents` evenly spaced documents (one per line) for tokenizer training."""
        source, _ = self.open()
        picks = np.unique(np.linspace(0, len(source) - 1, min(len(source), max_documents)).astype(int)).tolist()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        num_sentences = 0
        with atomic.writer(path) as out:
            for start in range(0, len(picks), _READ_BATCH):
                for example in source.__getitems__(picks[start:start + _READ_BATCH]):
                    sentences = split_sentences(_text(example[TEXT_FEATURE]))
                    out.write("".join(s + "\n" for s in sentences) + "\n")
                    num_sentences += len(sentences)
                if num_sentences >= max_sentences:
                    break
        return path


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


# A sentence ends at . ! or ? (then any closing quotes or brackets) before whitespace and a capital
# letter, digit or opening quote/bracket. Abbreviations ("Dr. Watson") are cut too: a known, harmless
# error for BERT's sentence pairs. Scripts without spaces between sentences stay whole lines.
_SENTENCE_BREAK = re.compile(r"[.!?][\"'”’)\]]*(\s+)(?=[\"'“‘(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Cuts a document's text into sentences: first at newlines (paragraphs and lines), then after
    sentence-ending punctuation (see `_SENTENCE_BREAK`); strips whitespace, drops empty pieces."""
    sentences = []
    for line in text.splitlines():
        start = 0
        for match in _SENTENCE_BREAK.finditer(line):
            sentences.append(line[start:match.start(1)].strip())
            start = match.end(1)
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]

