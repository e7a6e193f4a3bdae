"""SentencePiece tokenizer with BERT's special tokens at fixed ids.

The model code, the masking and the data pipeline all rely on the five special ids below, so every
model trained here puts them at ids 0..4 and `load_tokenizer` refuses a model that does not.

Train one from the command line:

  python -m bert_jax.data.tokenizer --input=corpus/ --vocab_size=8000 --output=/tmp/spm
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence

import numpy as np
import sentencepiece as spm
from absl import app, flags, logging

from bert_jax.config import InputError

PAD_ID, PAD = 0, "[PAD]"
UNK_ID, UNK = 1, "[UNK]"
CLS_ID, CLS = 2, "[CLS]"
SEP_ID, SEP = 3, "[SEP]"
MASK_ID, MASK = 4, "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # piece at index i has id i


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of BERT's special tokens in one vocabulary (0..4 for bert_jax SentencePiece models; an
    imported WordPiece vocabulary has its own, e.g. [CLS]=101)."""

    pad: int = PAD_ID
    unk: int = UNK_ID
    cls: int = CLS_ID
    sep: int = SEP_ID
    mask: int = MASK_ID


DEFAULT_SPECIAL_IDS = SpecialIds()

# SentencePiece marks the start of a word by prefixing the piece with this character (U+2581).
WORD_BOUNDARY = "\u2581"


def train_tokenizer(
    input_files: Sequence[str],
    model_prefix: str,
    vocab_size: int,
    *,
    max_sentences: int = 2_000_000,
    seed: int = 0,
) -> str:
    """Trains a SentencePiece unigram model on one-sentence-per-line text; returns the `.model` path.

    `hard_vocab_limit=False` lets a small corpus ask for a large vocabulary (the model then gets as
    many pieces as the text supports). Sampling of at most `max_sentences` lines is seeded, so the same
    input gives the same vocabulary.
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
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=list(input_files),
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
    )
    model_path = model_prefix + ".model"
    actual = load_tokenizer(model_path).vocab_size
    if actual < vocab_size:
        logging.info("Tokenizer has %d pieces, fewer than the %d requested: the corpus supports no more.",
                     actual, vocab_size)
    return model_path


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


def _strip_leading_space(text: str, spans) -> list[tuple[int, int]]:
    """Drops the whitespace a token absorbed from the front of its span: spans never cover whitespace."""
    stripped = []
    for start, end in spans:
        while start < end and text[start].isspace():
            start += 1
        stripped.append((start, end))
    return stripped


class Tokenizer:
    """A loaded SentencePiece model plus what BERT needs from it (special ids, word starts)."""

    kind = "sentencepiece"
    special_ids = DEFAULT_SPECIAL_IDS

    def __init__(self, processor: spm.SentencePieceProcessor, model_path: str):
        self._sp = processor
        self.model_path = model_path

    def __getstate__(self) -> dict[str, object]:
        # Grain worker processes receive the tokenizer by pickling; SentencePiece objects do not pickle.
        return {"model_path": self.model_path, "model_proto": self.serialized_model()}

    def __setstate__(self, state: dict[str, object]) -> None:
        self._sp = spm.SentencePieceProcessor(model_proto=state["model_proto"])
        self.model_path = state["model_path"]

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes many texts in one call (SentencePiece splits the work over threads)."""
        return self._sp.encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of `encode(text)` and, per id, the (start, end) str span of `text` it covers (SQuAD answers).

        SentencePiece reports UTF-8 byte spans that include the whitespace a '▁' absorbed; these are
        character spans without it, so `text[start:end]` is the piece's own text ("▁café" -> "café") and
        a bare '▁' piece gets the empty span at the start of the word after it.
        """
        pieces = _spm_pieces(self._sp, text)
        char_at = _char_index_of_bytes(text)  # [num_bytes + 1]
        spans = [(int(char_at[p.begin]), int(char_at[p.end])) for p in pieces]
        return [p.id for p in pieces], _strip_leading_space(text, spans)

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
        """bool [vocab_size]: tokens that are never masked nor drawn as random replacements."""
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


class _TokenizersBackend:
    """What WordPiece and byte-level BPE share: a `tokenizers.Tokenizer` serialized as its JSON."""

    kind = ""
    special_ids = DEFAULT_SPECIAL_IDS

    def __init__(self, backend, model_path: str = ""):
        self._tok = backend
        self.model_path = model_path

    @classmethod
    def from_serialized(cls, data: bytes, model_path: str = ""):
        from tokenizers import Tokenizer as Backend
        return cls(Backend.from_str(data.decode("utf-8")), model_path)

    def __getstate__(self):
        return {"model_path": self.model_path, "model_proto": self.serialized_model()}

    def __setstate__(self, state):
        self.__dict__.update(type(self).from_serialized(state["model_proto"], state["model_path"]).__dict__)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of `encode(text)` and, per id, the (start, end) str span of `text` it covers (SQuAD answers).

        `tokenizers` reports spans in the original text even where the normaliser lower-cases or strips
        accents ('cafe' spans "CAFÉ"); a byte-level token's leading space is dropped from its span, so
        `text[start:end]` never starts with whitespace.
        """
        encoding = self._tok.encode(text, add_special_tokens=False)
        return encoding.ids, _strip_leading_space(text, encoding.offsets)

    def _word_ids(self, words: Sequence[str]) -> list[list[int]]:
        """Ids of each word as the backend pre-tokenises it alone; [UNK] for a word with no tokens."""
        encoding = self._tok.encode(list(words), is_pretokenized=True, add_special_tokens=False)
        by_word = [[] for _ in words]
        for token_id, word in zip(encoding.ids, encoding.word_ids):
            by_word[word].append(token_id)
        return [ids or [self.special_ids.unk] for ids in by_word]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self._tok.id_to_token(int(token_id))

    def serialized_model(self) -> bytes:
        return self._tok.to_str().encode("utf-8")

    def save(self, path: str) -> None:
        self._tok.save(path)

    def _table(self, predicate) -> np.ndarray:
        return np.asarray([predicate(self._tok.id_to_token(i)) for i in range(self.vocab_size)], dtype=bool)


class WordPieceTokenizer(_TokenizersBackend):
    """A BERT WordPiece vocabulary (e.g. of an imported HF checkpoint), run by HF's `tokenizers` library.

    Built from `vocab.txt` with BERT's normalisation (cleaning, optional lower-casing and accent
    stripping, CJK spacing) and pre-tokenisation, so ids match transformers' BertTokenizer. Serialized
    as the `tokenizers` JSON, which is what checkpoints carry.
    """

    kind = "wordpiece"
    _BRACKETED = re.compile(r"^\[[^\]]+\]$")  # [PAD], [CLS], [unused12], ...

    def __init__(self, backend, model_path: str = ""):
        super().__init__(backend, model_path)
        vocab = backend.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise InputError(f"the WordPiece vocabulary {model_path or ''} lacks {missing}; BERT needs "
                             f"{list(SPECIAL_TOKENS)}.")
        self.special_ids = SpecialIds(*(vocab[t] for t in SPECIAL_TOKENS))
        normalizer = json.loads(backend.to_str()).get("normalizer") or {}
        self.lowercase = bool(normalizer.get("lowercase", False))
        self.strip_accents = normalizer.get("strip_accents")

    @classmethod
    def from_vocab(cls, vocab_path: str, *, lowercase: bool = True, strip_accents: bool | None = None):
        from tokenizers import Tokenizer as Backend, decoders, models, normalizers, pre_tokenizers
        if not os.path.isfile(vocab_path):
            raise InputError(f"WordPiece vocabulary not found: {vocab_path}.")
        backend = Backend(models.WordPiece.from_file(vocab_path, unk_token=UNK, max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                        strip_accents=strip_accents, lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        return cls(backend, vocab_path)

    def encode_words(self, words: Sequence[str]) -> list[list[int]]:
        """Ids of each word of a pre-split sentence (CoNLL), each word through BERT's normaliser and
        pre-tokeniser alone (as in `encode(" ".join(words))`); [UNK] for a word with no tokens."""
        return self._word_ids(words) if words else []

    def special_table(self) -> np.ndarray:
        """bool [vocab_size]: [PAD] [UNK] [CLS] [SEP] [MASK] and the [unusedN] slots."""
        return self._table(lambda token: bool(self._BRACKETED.match(token)))

    def word_start_table(self) -> np.ndarray:
        """bool [vocab_size]: pieces that do not continue a word (no '##' prefix)."""
        return self._table(lambda token: not token.startswith("##"))


def check_fits_model(tokenizer, vocab_size: int) -> None:
    """A tokenizer whose ids would index past the model's embedding table is a user error, said plainly."""
    if tokenizer.vocab_size > vocab_size:
        raise InputError(f"the tokenizer {tokenizer.model_path} has {tokenizer.vocab_size} pieces but "
                         f"config.model.vocab_size is {vocab_size}; raise config.model.vocab_size or use a "
                         "smaller tokenizer.")


def tokenizer_from_serialized(kind: str, data: bytes, model_path: str = ""):
    """Rebuilds the tokenizer stored in a checkpoint (SentencePiece model or WordPiece JSON)."""
    if kind == WordPieceTokenizer.kind:
        return WordPieceTokenizer.from_serialized(data, model_path)
    processor = spm.SentencePieceProcessor(model_proto=data)
    return Tokenizer(processor, model_path)


def load_tokenizer(path: str):
    """Loads a SentencePiece model trained by `train_tokenizer` (checking its special ids), or a WordPiece
    tokenizer saved as `tokenizers` JSON (a `.json` file)."""
    if path.endswith(".json") and os.path.isfile(path):
        with open(path, "rb") as f:
            return WordPieceTokenizer.from_serialized(f.read(), path)
    if not os.path.isfile(path):
        raise InputError(f"tokenizer model not found: {path}; set config.data.tokenizer_model to a "
                         "SentencePiece .model file or leave it empty to train one.")
    processor = spm.SentencePieceProcessor()
    try:
        processor.load(path)
    except (OSError, RuntimeError) as e:
        raise InputError(f"{path} is not a SentencePiece model ({e}); give a .model file "
                         "written by bert_jax.data.tokenizer.") from e
    found = tuple(processor.id_to_piece(i) for i in range(min(len(SPECIAL_TOKENS), processor.get_piece_size())))
    if found != SPECIAL_TOKENS:
        raise InputError(f"tokenizer {path} has {found} at ids 0-4, not {SPECIAL_TOKENS}: it was not trained "
                         "by bert_jax; train one with `python -m bert_jax.data.tokenizer`.")
    return Tokenizer(processor, path)


def _define_flags() -> None:
    # Only when run as a script: importing the library must not add flags to a trainer's command line.
    flags.DEFINE_string("input", None, "Text: a file, a directory or a glob; comma-separated list allowed.")
    flags.DEFINE_integer("vocab_size", 30522, "Requested vocabulary size.")
    flags.DEFINE_string("output", None, "Model prefix; writes <output>.model and <output>.vocab.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Imported here: corpus builds on this module, and only the command line needs file resolution.
    from bert_jax.data.corpus import resolve_text_files  # pylint: disable=import-outside-toplevel
    args = flags.FLAGS
    try:
        if not args.input or not args.output:
            raise InputError("--input and --output are required, e.g. --input=corpus/ --output=/tmp/spm.")
        model_path = train_tokenizer(resolve_text_files(args.input), args.output, args.vocab_size)
        print(f"{model_path} vocab_size={load_tokenizer(model_path).vocab_size}")
    except InputError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
