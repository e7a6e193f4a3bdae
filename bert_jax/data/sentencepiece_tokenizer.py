"""The SentencePiece tokenizer: trained here on the corpus, or ALBERT's spiece.model.

Every SentencePiece model trained here puts the five special tokens (`vocab.py`) at ids 0..4;
`load_sentencepiece` also accepts ALBERT's spiece.model (`<pad>` and `<unk>` spelled its way, same ids)
and refuses a model that has them elsewhere or not at all. Loading any tokenizer by file or kind is
`tokenizer_factory.py`'s job; training one from the command line is `python -m bert_jax.data.tokenizer`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence

import numpy as np
import sentencepiece as spm
from absl import logging

from bert_jax.config import InputError
from bert_jax.data.vocab import (
    CLS,
    DEFAULT_SPECIAL_IDS,
    MASK,
    PAD,
    PAD_ID,
    SEP,
    SPECIAL_TOKENS,
    UNK,
    UNK_ID,
    SpecialIds,
    strip_leading_space,
)
from bert_jax.runtime import atomic

# SentencePiece marks the start of a word by prefixing the piece with this character (U+2581).
WORD_BOUNDARY = "\u2581"
# Accepted spellings of SPECIAL_TOKENS in a SentencePiece model (ALBERT's spiece.model: <pad> and <unk>).
_SPM_SPECIAL_NAMES = (("[PAD]", "<pad>"), ("[UNK]", "<unk>"), ("[CLS]",), ("[SEP]",), ("[MASK]",))
# SentencePiece's ModelProto reserves field numbers >= 200 for extensions; this one holds the text
# preparation AlbertTokenizer does before SentencePiece (JSON), so checkpoints and pickles keep it.
_PREPARATION_FIELD = 1000


def train_tokenizer(
    input_files: Sequence[str],
    model_prefix: str,
    vocab_size: int,
    *,
    max_sentences: int = 2_000_000,
    seed: int = 0,
    character_coverage: float | None = None,
    byte_fallback: bool = False,
) -> str:
    """Trains a SentencePiece unigram model on one-sentence-per-line text; returns the `.model` path.

    The trainer gets the lines of `training_sentences`, not the files: SentencePiece splits files on
    '\\n' only and drops lines over 4,192 bytes, so CR-only line endings or a paragraph per line would
    leave it with no sentences although the corpus reader accepts them.

    `hard_vocab_limit=False` lets a small corpus ask for a large vocabulary (the model then gets as
    many pieces as the text supports). Sampling of at most `max_sentences` lines is seeded, so the same
    input gives the same vocabulary. SentencePiece writes the files itself, so it writes them under a
    hidden temporary prefix; they are renamed to `<model_prefix>.model` / `.vocab` only once the model
    loads with BERT's special pieces: a full disk or a kill mid-training leaves the old files or none,
    never a truncated model that a later run would blame on the user.

    `character_coverage`: the share of the text's characters that get pieces (None: SentencePiece's
    0.9995, which drops the rarest characters of a large script); `byte_fallback`: characters without a
    piece become their UTF-8 bytes (256 pieces after the special ones) instead of [UNK], as multilingual
    models need.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise InputError(f"tokenizer vocab_size={vocab_size} is too small; use at least a few hundred.")
    missing = [f for f in input_files if not os.path.isfile(f)]
    if not input_files or missing:
        raise InputError(f"tokenizer training input not found: {missing or 'no files given'}; "
                         "give existing text files.")
    if not any(_has_text(f) for f in input_files):
        raise InputError(f"tokenizer training input {list(input_files)[:3]} has no text; "
                         "give files with one sentence per line.")
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    partial = atomic.temporary_name(model_prefix)
    try:
        options = {"byte_fallback": True} if byte_fallback else {}
        if character_coverage is not None:
            options["character_coverage"] = character_coverage
        _run_trainer(input_files, partial, vocab_size, max_sentences, seed, **options)
        actual = _check_trained(partial)
        atomic.commit(partial + ".vocab", model_prefix + ".vocab")
        # last: the cache looks for this one
        atomic.write_bytes(model_prefix + ".model", _recorded_as(partial + ".model", model_prefix))
    finally:
        for suffix in (".model", ".vocab"):
            atomic.remove(partial + suffix)
    if actual < vocab_size:
        logging.info("Tokenizer has %d pieces, fewer than the %d requested: the corpus supports no more.",
                     actual, vocab_size)
    return model_prefix + ".model"


def _run_trainer(input_files: Sequence[str], model_prefix: str, vocab_size: int, max_sentences: int,
                 seed: int, **options) -> None:
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=training_sentences(input_files),
        model_prefix=model_prefix,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        pad_id=PAD_ID, pad_piece=PAD,
        unk_id=UNK_ID, unk_piece=UNK,
        bos_id=-1, eos_id=-1,
        control_symbols=[CLS, SEP, MASK],  # take the next free ids, 2, 3, 4, in this order
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1,
        minloglevel=1,
        **options,
    )


def _check_trained(prefix: str) -> int:
    """The piece count of the model SentencePiece just wrote at `prefix`, once it loads with the special
    pieces and its .vocab lists every piece. Anything short of that is a write cut short (a full disk),
    said as such: the user's input was fine."""
    processor = spm.SentencePieceProcessor()
    try:
        processor.load(prefix + ".model")
        with open(prefix + ".vocab", encoding="utf-8") as f:
            listed = sum(1 for _ in f)
    except (OSError, RuntimeError, UnicodeDecodeError) as e:
        raise _cut_short(prefix, f"does not load ({e})") from e
    missing = _spm_special_ids(processor)[1]
    if missing:
        raise _cut_short(prefix, f"lacks the pieces {', '.join(missing)}")
    if listed != processor.get_piece_size():
        raise _cut_short(prefix, f"has a .vocab of {listed} of its {processor.get_piece_size()} pieces")
    return processor.get_piece_size()


def _recorded_as(model_file: str, model_prefix: str) -> bytes:
    """The model's bytes with `model_prefix` as the prefix it records: SentencePiece stores the prefix it
    wrote to in the model, and a temporary one would make every training's bytes differ (they fingerprint
    the tokenized corpus, so the same text must give the same bytes)."""
    from sentencepiece import sentencepiece_model_pb2
    with open(model_file, "rb") as f:
        model = sentencepiece_model_pb2.ModelProto.FromString(f.read())
    model.trainer_spec.model_prefix = model_prefix
    return model.SerializeToString()


def _cut_short(prefix: str, problem: str) -> InputError:
    return InputError(f"the tokenizer SentencePiece just wrote to {prefix}.model {problem}: was the disk full? "
                      "Free some space and run again (nothing was kept).")


# SentencePiece's trainer drops longer lines (its max_sentence_length, 4,192 bytes) without a word.
_MAX_TRAINING_LINE_BYTES = 4000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def training_sentences(input_files: Sequence[str]) -> Iterator[str]:
    """The non-blank lines of `input_files` (any line ending), each cut to at most 4,000 UTF-8 bytes: a
    longer line is split after sentence ends, then at spaces, then (a run without spaces) anywhere."""
    for path in input_files:
        with open(path, encoding="utf-8", errors="replace") as f:  # the corpus reader refuses bad UTF-8 first
            for line in f:
                line = line.rstrip("\n")
                if line.strip():
                    yield from _short_lines(line)


def _short_lines(line: str) -> Iterator[str]:
    if len(line.encode("utf-8")) <= _MAX_TRAINING_LINE_BYTES:
        yield line
        return
    pending = ""
    for unit in _units(line):
        if pending and len((pending + " " + unit).encode("utf-8")) > _MAX_TRAINING_LINE_BYTES:
            yield pending
            pending = ""
        pending = f"{pending} {unit}" if pending else unit
    if pending:
        yield pending


def _units(line: str) -> Iterator[str]:
    """Sentences of `line`; a sentence still too long, its words; a word still too long, its byte-bounded runs."""
    for sentence in _SENTENCE_END.split(line):
        if len(sentence.encode("utf-8")) <= _MAX_TRAINING_LINE_BYTES:
            yield sentence
            continue
        for word in sentence.split():
            while len(word.encode("utf-8")) > _MAX_TRAINING_LINE_BYTES:
                cut = len(word.encode("utf-8")[:_MAX_TRAINING_LINE_BYTES].decode("utf-8", errors="ignore"))
                yield word[:cut]
                word = word[cut:]
            if word:
                yield word


def _has_text(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return any(line.strip() for line in f)


def _spm_pieces(processor: spm.SentencePieceProcessor, text: str):
    """SentencePiece's pieces of `text` with their UTF-8 byte spans (`.id`, `.begin`, `.end`)."""
    try:
        return processor.encode(text, return_type="proto").pieces
    except TypeError:  # sentencepiece 0.2.0 spells it out_type="immutable_proto"
        return processor.encode(text, out_type="immutable_proto").pieces


def _char_index_of_bytes(text: str) -> np.ndarray:
    """int [num_utf8_bytes + 1]: the str index of the character each UTF-8 byte of `text` belongs to."""
    lengths = [len(c.encode("utf-8")) for c in text]
    return np.concatenate([np.repeat(np.arange(len(text)), lengths), [len(text)]]).astype(np.int64)


def _spm_special_ids(processor: spm.SentencePieceProcessor) -> tuple[SpecialIds | None, list[str]]:
    """(SpecialIds found by piece name, or None; the names of those missing)."""
    ids, missing = [], []
    for names in _SPM_SPECIAL_NAMES:
        found = [processor.piece_to_id(n) for n in names if processor.id_to_piece(processor.piece_to_id(n)) == n]
        ids.append(found[0] if found else -1)
        missing += [] if found else ["/".join(names)]
    return (None if missing else SpecialIds(*ids)), missing


@functools.lru_cache(maxsize=1 << 16)
def _prepare_char(char: str, lowercase: bool, strip_accents: bool) -> str:
    """One character as tokenizers' NFKD + StripAccents + Lowercase leave it (character by character)."""
    if strip_accents:
        char = "".join(c for c in unicodedata.normalize("NFKD", char) if unicodedata.category(c) != "Mn")
    return char.lower() if lowercase else char


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `position`."""
    value, shift = 0, 0
    while True:
        value |= (data[position] & 0x7F) << shift
        shift, position = shift + 7, position + 1
        if data[position - 1] < 0x80:
            return value, position


def _proto_fields(data: bytes):
    """Yields (field number, start, end, payload of a length-delimited field or None) of each top-level
    field of a serialized protobuf message."""
    position = 0
    while position < len(data):
        start = position
        key, position = _read_varint(data, position)  # field number << 3 | wire type
        payload = None
        if key & 7 == 0:
            position = _read_varint(data, position)[1]
        elif key & 7 == 2:
            length, position = _read_varint(data, position)
            payload, position = data[position:position + length], position + length
        else:  # 1: 64-bit, 5: 32-bit; ModelProto has no groups
            position += 8 if key & 7 == 1 else 4
        yield key >> 3, start, position, payload


def _read_preparation(model_proto: bytes) -> dict:
    """The text-preparation options stored by `with_text_preparation` ({} for a plain model)."""
    for number, _, _, payload in _proto_fields(model_proto):
        if number == _PREPARATION_FIELD:
            return json.loads(payload.decode("utf-8"))
    return {}


def with_text_preparation(model_proto: bytes, *, lowercase: bool, strip_accents: bool) -> bytes:
    """A SentencePiece model's bytes that also ask `Tokenizer` for AlbertTokenizer's text preparation.

    Stored as a protobuf extension field, so SentencePiece itself (and transformers) still load the file.
    """
    kept = b"".join(model_proto[s:e] for n, s, e, _ in _proto_fields(model_proto) if n != _PREPARATION_FIELD)
    if not (lowercase or strip_accents):
        return kept
    payload = json.dumps({"do_lower_case": lowercase, "keep_accents": not strip_accents}).encode("utf-8")
    return kept + _varint(_PREPARATION_FIELD << 3 | 2) + _varint(len(payload)) + payload


class Tokenizer:
    """A loaded SentencePiece model plus what BERT needs from it (special ids, word starts).

    An imported ALBERT model also lower-cases and strips accents before SentencePiece, as
    AlbertTokenizer does; those options travel inside the model bytes (see `with_text_preparation`).
    """

    kind = "sentencepiece"

    def __init__(self, processor: spm.SentencePieceProcessor, model_path: str):
        self._sp = processor
        self.model_path = model_path
        self.special_ids = _spm_special_ids(processor)[0] or DEFAULT_SPECIAL_IDS
        options = _read_preparation(processor.serialized_model_proto())
        self.lowercase = bool(options.get("do_lower_case", False))
        self.strip_accents = not options.get("keep_accents", True)

    def __getstate__(self) -> dict[str, object]:
        # Grain worker processes receive the tokenizer by pickling; SentencePiece objects do not pickle.
        return {"model_path": self.model_path, "model_proto": self.serialized_model()}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(spm.SentencePieceProcessor(model_proto=state["model_proto"]), state["model_path"])

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def _prepare(self, text: str) -> tuple[str, list[tuple[int, int]] | None]:
        """AlbertTokenizer's text preparation (`` and '' -> ", NFKD minus accents, lower case), with the
        span of `text` each prepared character comes from; (text, None) when there is nothing to do."""
        if not (self.lowercase or self.strip_accents):
            return text, None
        chars, origins, i = [], [], 0
        while i < len(text):
            if text[i:i + 2] in ("``", "''"):
                chars.append('"')
                origins.append((i, i + 2))
                i += 2
                continue
            prepared = _prepare_char(text[i], self.lowercase, self.strip_accents)
            chars.extend(prepared)
            origins.extend([(i, i + 1)] * len(prepared))
            i += 1
        return "".join(chars), origins

    def _prepared_text(self, text: str) -> str:
        """`_prepare(text)[0]` without the spans (the quote patterns share no character, so replacing
        one after the other is the same as the left-to-right scan)."""
        if not (self.lowercase or self.strip_accents):
            return text
        text = text.replace("``", '"').replace("''", '"')
        return "".join([_prepare_char(c, self.lowercase, self.strip_accents) for c in text])

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(self._prepared_text(text), out_type=int)

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """Encodes many texts in one call, SentencePiece splitting the work over `num_threads` threads
        (default: every core; parallel preprocessing gives each worker process its share)."""
        prepared = [self._prepared_text(t) for t in texts]
        return self._sp.encode(prepared, out_type=int, num_threads=num_threads or os.cpu_count() or 1)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of `encode(text)` and, per id, the (start, end) str span of `text` it covers (SQuAD answers).

        SentencePiece reports UTF-8 byte spans that include the whitespace a '▁' absorbed; these are
        character spans without it, so `text[start:end]` is the piece's own text ("▁café" -> "café") and
        a bare '▁' piece gets the empty span at the start of the word after it. With ALBERT's text
        preparation, spans point into the original text (pieces of one expanded character share its span).
        """
        prepared, origins = self._prepare(text)
        pieces = _spm_pieces(self._sp, prepared)
        char_at = _char_index_of_bytes(prepared)  # [num_bytes + 1]
        spans = strip_leading_space(prepared, [(int(char_at[p.begin]), int(char_at[p.end])) for p in pieces])
        if origins is not None:
            origins = origins + [(len(text), len(text))]  # [len(prepared) + 1]: empty spans at the end
            spans = [(origins[s][0], origins[s][0] if s == e else origins[e - 1][1]) for s, e in spans]
        return [p.id for p in pieces], spans

    def encode_words(self, words: Sequence[str]) -> list[list[int]]:
        """Ids of each word of a pre-split sentence (CoNLL), as `encode(" ".join(words))` splits them: every
        word gets its own '▁'-prefixed pieces. A word with no pieces gets [UNK], so every word has a token."""
        return [ids or [self.special_ids.unk] for ids in self.encode_batch(words)] if words else []

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def serialized_model(self) -> bytes:
        """The model file's bytes; fingerprints caches and travels inside checkpoints."""
        return self._sp.serialized_model_proto()

    def special_table(self) -> np.ndarray:
        """bool [vocab_size]: tokens that are never masked nor drawn as random replacements (ids 0..4,
        which `load_tokenizer` checks)."""
        return np.arange(self.vocab_size) < len(SPECIAL_TOKENS)

    def word_start_table(self) -> np.ndarray:
        """Returns bool [vocab_size]: True where a piece starts a word (whole-word masking groups the rest).

        Special and unknown tokens count as word starts so they never join the word before them.
        """
        table = np.zeros(self.vocab_size, dtype=bool)  # [vocab_size]
        for i in range(self.vocab_size):
            table[i] = (self._sp.id_to_piece(i).startswith(WORD_BOUNDARY)
                        or self._sp.is_control(i) or self._sp.is_unknown(i))
        return table


def load_sentencepiece(path: str, *, lowercase: bool | None = None, strip_accents: bool | None = None) -> Tokenizer:
    """Loads a SentencePiece model trained by `train_tokenizer`, or ALBERT's spiece.model.

    `lowercase` / `strip_accents` (AlbertTokenizer's do_lower_case / not keep_accents) set the model's
    text preparation; None keeps what the file says (nothing, for a model trained here).
    """
    if os.path.isdir(path):
        raise InputError(f"tokenizer model {path} is a directory; set config.data.tokenizer_model to the "
                         f".model file in it (e.g. {os.path.join(path, 'spm.model')}) or leave it empty to train one.")
    if not os.path.isfile(path):
        raise InputError(f"tokenizer model not found: {path}; set config.data.tokenizer_model to a "
                         "SentencePiece .model file or leave it empty to train one.")
    if os.path.getsize(path) == 0:
        raise InputError(f"tokenizer model {path} is empty (0 bytes: a copy or a download cut short?); give a "
                         ".model file written by bert_jax.data.tokenizer, or leave config.data.tokenizer_model "
                         "empty to train one.")
    processor = spm.SentencePieceProcessor()
    try:
        processor.load(path)
    except (OSError, RuntimeError) as e:
        raise InputError(f"{path} is not a SentencePiece model ({e}); give a .model file "
                         "written by bert_jax.data.tokenizer.") from e
    special_ids, missing = _spm_special_ids(processor)
    if missing or set(dataclasses.astuple(special_ids)) != set(range(len(SPECIAL_TOKENS))):
        found = tuple(processor.id_to_piece(i) for i in range(min(len(SPECIAL_TOKENS), processor.get_piece_size())))
        raise InputError(f"tokenizer {path} has {found} at ids 0-4, not {SPECIAL_TOKENS} (or ALBERT's <pad> <unk>): "
                         "it was not trained by bert_jax; train one with `python -m bert_jax.data.tokenizer`.")
    if lowercase is not None or strip_accents is not None:
        current = Tokenizer(processor, path)
        processor = spm.SentencePieceProcessor(model_proto=with_text_preparation(
            processor.serialized_model_proto(),
            lowercase=current.lowercase if lowercase is None else lowercase,
            strip_accents=current.strip_accents if strip_accents is None else strip_accents))
    return Tokenizer(processor, path)
