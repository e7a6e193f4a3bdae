"""Tokenizers of imported Hugging Face checkpoints: BERT's WordPiece and RoBERTa's byte-level BPE.

They exist so a checkpoint imported from transformers keeps the vocabulary it was trained with: both are
run by HF's `tokenizers` library (imported lazily, it is part of the [hf] extra), so their ids match
transformers' BertTokenizer and RobertaTokenizer exactly. They offer the same interface as the
SentencePiece `Tokenizer` in `sentencepiece_tokenizer.py`; `tokenizer_factory.py` loads all three kinds
(`load_tokenizer`, `tokenizer_from_serialized`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence

import numpy as np

from bert_jax.config import InputError
from bert_jax.data.vocab import DEFAULT_SPECIAL_IDS, SPECIAL_TOKENS, UNK, SpecialIds, strip_leading_space

# RoBERTa's pieces that play the parts of [PAD] [UNK] [CLS] [SEP] [MASK]; ModernBERT's byte-level BPE
# spells them BERT's way.
BPE_SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")


class _TokenizersBackend:
    """What WordPiece and byte-level BPE share: a `tokenizers.Tokenizer` serialized as its JSON."""

    kind = ""
    special_ids = DEFAULT_SPECIAL_IDS
    # The vocabulary's pieces for [PAD] [UNK] [CLS] [SEP] [MASK] (SpecialIds order), and how an error
    # names the vocabulary and who needs those pieces.
    _special_pieces: tuple[str, ...] = ()
    _vocabulary_name = ""
    _needed_by = ""

    def __init__(self, backend, model_path: str = ""):
        self._tok = backend
        self.model_path = model_path
        vocab = backend.get_vocab()
        missing = [t for t in self._special_pieces if t not in vocab]
        if missing:
            raise InputError(f"the {self._vocabulary_name} {model_path or ''} lacks {missing}; {self._needed_by} "
                             f"{list(self._special_pieces)}.")
        self.special_ids = SpecialIds(*(vocab[t] for t in self._special_pieces))

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

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """Encodes many texts in one call; `tokenizers` sizes its thread pool from RAYON_NUM_THREADS, which
        parallel preprocessing sets in each worker process, so `num_threads` is not needed here."""
        del num_threads
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of `encode(text)` and, per id, the (start, end) str span of `text` it covers (SQuAD answers).

        `tokenizers` reports spans in the original text even where the normaliser lower-cases or strips
        accents ('cafe' spans "CAFÉ"); a byte-level token's leading space is dropped from its span, so
        `text[start:end]` never starts with whitespace.
        """
        encoding = self._tok.encode(text, add_special_tokens=False)
        return encoding.ids, strip_leading_space(text, encoding.offsets)

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

    def save_with_template(self, path: str) -> None:
        """Saves the tokenizer.json with BERT's [CLS] A [SEP] (B [SEP]) template as its post-processor, for
        transformers classes that read only tokenizer.json (ModernBERT's) and add special tokens by it."""
        from tokenizers import Tokenizer as Backend
        from tokenizers import processors
        backend = Backend.from_str(self._tok.to_str())
        ids = self.special_ids
        cls, sep = self.id_to_piece(ids.cls), self.id_to_piece(ids.sep)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, ids.cls), (sep, ids.sep)])
        backend.save(path)

    def _table(self, predicate) -> np.ndarray:
        return np.asarray([predicate(self._tok.id_to_token(i)) for i in range(self.vocab_size)], dtype=bool)


class WordPieceTokenizer(_TokenizersBackend):
    """A BERT WordPiece vocabulary (e.g. of an imported HF checkpoint), run by HF's `tokenizers` library.

    Built from `vocab.txt` with BERT's normalisation (cleaning, optional lower-casing and accent
    stripping, CJK spacing) and pre-tokenisation, so ids match transformers' BertTokenizer. Serialized
    as the `tokenizers` JSON, which is what checkpoints carry.
    """

    kind = "wordpiece"
    _special_pieces = SPECIAL_TOKENS
    _vocabulary_name = "WordPiece vocabulary"
    _needed_by = "BERT needs"
    _BRACKETED = re.compile(r"^\[[^\]]+\]$")  # [PAD], [CLS], [unused12], ...

    def __init__(self, backend, model_path: str = ""):
        super().__init__(backend, model_path)
        normalizer = json.loads(backend.to_str()).get("normalizer") or {}
        self.lowercase = bool(normalizer.get("lowercase", False))
        self.strip_accents = normalizer.get("strip_accents")

    @classmethod
    def from_vocab(cls, vocab_path: str, *, lowercase: bool = True, strip_accents: bool | None = None):
        from tokenizers import models
        if not os.path.isfile(vocab_path):
            raise InputError(f"WordPiece vocabulary not found: {vocab_path}.")
        model = models.WordPiece.from_file(vocab_path, unk_token=UNK, max_input_chars_per_word=100)
        return cls._with_bert_pipeline(model, vocab_path, lowercase, strip_accents)

    @classmethod
    def from_pieces(cls, pieces: dict[str, int], path: str, *, lowercase: bool = True,
                    strip_accents: bool | None = None):
        """From a {piece: id} vocabulary (a transformers 5 tokenizer.json's model.vocab)."""
        from tokenizers import models
        model = models.WordPiece(pieces, unk_token=UNK, max_input_chars_per_word=100)
        return cls._with_bert_pipeline(model, path, lowercase, strip_accents)

    @classmethod
    def _with_bert_pipeline(cls, model, path: str, lowercase: bool, strip_accents: bool | None):
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, normalizers, pre_tokenizers
        backend = Backend(model)
        backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                        strip_accents=strip_accents, lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        return cls(backend, path)

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


class ByteLevelBPETokenizer(_TokenizersBackend):
    """RoBERTa's byte-level BPE (`vocab.json` + `merges.txt`), run by HF's `tokenizers` library; also
    ModernBERT's (a tokenizer.json whose special pieces are spelled [PAD] [UNK] [CLS] [SEP] [MASK]).

    Ids match transformers' RobertaTokenizer (no prefix space: a text's first word is 'Hello', later ones
    'ĠHello'). <pad> <unk> <s> </s> <mask> play [PAD] [UNK] [CLS] [SEP] [MASK]; the pretraining data
    lays a pair out BERT's way, `<s> A </s> B </s>`, not RoBERTa's `<s> A </s></s> B </s>` (harmless
    for continued pretraining; fine-tuning code that wants RoBERTa's layout builds it from `special_ids`).
    """

    kind = "bpe"
    _special_pieces = BPE_SPECIAL_TOKENS
    _vocabulary_name = "byte-level BPE vocabulary"
    _needed_by = "bert_jax needs RoBERTa's"

    def __init__(self, backend, model_path: str = ""):
        vocab = backend.get_vocab()
        if not all(t in vocab for t in BPE_SPECIAL_TOKENS) and all(t in vocab for t in SPECIAL_TOKENS):
            self._special_pieces = SPECIAL_TOKENS  # ModernBERT's [PAD] [UNK] [CLS] [SEP] [MASK]
        super().__init__(backend, model_path)

    @classmethod
    def from_files(cls, vocab_path: str, merges_path: str, *, add_prefix_space: bool = False):
        """From RoBERTa's vocab.json and merges.txt, with RobertaTokenizer's pre-tokeniser and decoder."""
        from tokenizers import models
        try:
            model = models.BPE.from_file(vocab_path, merges_path, fuse_unk=False)
        except Exception as e:  # tokenizers raises its own Exception type for unreadable files
            raise InputError(f"cannot read the BPE vocabulary {vocab_path} + {merges_path} ({e}); give "
                             "RoBERTa's vocab.json and merges.txt.") from e
        return cls._with_byte_level(model, vocab_path, add_prefix_space)

    @classmethod
    def from_pieces(cls, pieces: dict[str, int], merges: list, path: str, *, add_prefix_space: bool = False):
        """From a {piece: id} vocabulary and merges ('a b' strings or pairs), as a tokenizer.json holds them."""
        from tokenizers import models
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
        return cls._with_byte_level(models.BPE(pieces, merges, fuse_unk=False), path, add_prefix_space)

    @classmethod
    def _with_byte_level(cls, model, path: str, add_prefix_space: bool):
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, pre_tokenizers
        backend = Backend(model)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        backend.decoder = decoders.ByteLevel()
        return cls(backend, path)

    def encode_words(self, words: Sequence[str]) -> list[list[int]]:
        """Ids of each word of a pre-split sentence (CoNLL), every word with a leading space ('ĠEU'), as
        RobertaTokenizer does for pre-split words (add_prefix_space=True); `encode(" ".join(words))` differs
        only in the first word. Every word gets a token (an empty word its space, 'Ġ')."""
        return self.encode_batch([" " + w for w in words])

    def save_vocab(self, output_dir: str) -> None:
        """Writes vocab.json and merges.txt (what RobertaTokenizer loads)."""
        self._tok.model.save(output_dir)

    def special_table(self) -> np.ndarray:
        """bool [vocab_size]: <pad> <unk> <s> </s> <mask>."""
        table = np.zeros(self.vocab_size, dtype=bool)  # [vocab_size]
        table[list(dataclasses.astuple(self.special_ids))] = True
        return table

    def word_start_table(self) -> np.ndarray:
        """bool [vocab_size]: tokens that begin with a space ('Ġ'), and the special tokens."""
        return self._table(lambda token: token.startswith("\u0120")) | self.special_table()


def from_tokenizer_json(path: str, tokenizer_config: dict):
    """The WordPiece or byte-level BPE tokenizer of a transformers `tokenizer.json` (what transformers 5
    saves in place of vocab.txt / vocab.json + merges.txt), rebuilt with BERT's or RoBERTa's pipeline so
    that no truncation or padding it carries applies; `tokenizer_config` is tokenizer_config.json."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        model, normalizer = spec["model"], spec.get("normalizer") or {}
        kind, pieces = model["type"], model["vocab"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path} is not a transformers tokenizer.json ({error}); re-save the tokenizer "
                         "with save_pretrained.") from None
    if kind == "WordPiece" and isinstance(pieces, dict):
        lowercase = normalizer.get("lowercase", tokenizer_config.get("do_lower_case", True))
        strip_accents = normalizer.get("strip_accents", tokenizer_config.get("strip_accents"))
        return WordPieceTokenizer.from_pieces(pieces, path, lowercase=lowercase, strip_accents=strip_accents)
    if kind == "BPE" and isinstance(pieces, dict):
        # Special tokens may live only in added_tokens (ModernBERT's [CLS] ... [MASK] after the BPE pieces).
        added = {t["content"]: t["id"] for t in spec.get("added_tokens") or [] if t.get("content") not in pieces}
        return ByteLevelBPETokenizer.from_pieces({**pieces, **added}, model.get("merges") or [], path,
                                                 add_prefix_space=tokenizer_config.get("add_prefix_space", False))
    raise InputError(f"{path} holds a {kind} tokenizer; bert_jax reads WordPiece (BERT) and byte-level BPE "
                     "(RoBERTa) from tokenizer.json, and ALBERT's SentencePiece from spiece.model.")
