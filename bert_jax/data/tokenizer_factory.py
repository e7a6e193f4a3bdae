"""The one tokenizer factory: any tokenizer bert_jax uses, from a file or from a checkpoint's bytes.

SentencePiece (`sentencepiece_tokenizer.py`, trained here or ALBERT's), BERT's WordPiece and RoBERTa's
byte-level BPE (`hf_tokenizers.py`). Callers that load a tokenizer without knowing its kind come here;
this module sits above both kinds and below the corpus and checkpoint code.
"""

from __future__ import annotations

import json
import os

import sentencepiece as spm

from bert_jax.config import InputError
from bert_jax.data.hf_tokenizers import ByteLevelBPETokenizer, WordPieceTokenizer
from bert_jax.data.sentencepiece_tokenizer import Tokenizer, load_sentencepiece


def check_fits_model(tokenizer, vocab_size: int) -> None:
    """A tokenizer whose ids would index past the model's embedding table is a user error, said plainly."""
    if tokenizer.vocab_size > vocab_size:
        raise InputError(f"the tokenizer {tokenizer.model_path} has {tokenizer.vocab_size} pieces but "
                         f"config.model.vocab_size is {vocab_size}; raise config.model.vocab_size or use a "
                         "smaller tokenizer.")


def tokenizer_from_serialized(kind: str, data: bytes, model_path: str = ""):
    """Rebuilds the tokenizer stored in a checkpoint (SentencePiece model, or WordPiece / BPE JSON)."""
    for cls in (WordPieceTokenizer, ByteLevelBPETokenizer):
        if kind == cls.kind:
            return cls.from_serialized(data, model_path)
    processor = spm.SentencePieceProcessor(model_proto=data)
    return Tokenizer(processor, model_path)


def load_tokenizer(path: str, *, lowercase: bool | None = None, strip_accents: bool | None = None):
    """Loads a SentencePiece model (trained by `train_tokenizer`, or ALBERT's spiece.model), or a WordPiece
    or byte-level BPE tokenizer saved as `tokenizers` JSON (a `.json` file).

    `lowercase` / `strip_accents` (AlbertTokenizer's do_lower_case / not keep_accents) set a SentencePiece
    model's text preparation; None keeps what the file says (nothing, for a model trained here).
    """
    if path.endswith(".json") and os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
        is_bpe = (json.loads(data).get("model") or {}).get("type") == "BPE"
        return (ByteLevelBPETokenizer if is_bpe else WordPieceTokenizer).from_serialized(data, path)
    return load_sentencepiece(path, lowercase=lowercase, strip_accents=strip_accents)
