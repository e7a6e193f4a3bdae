"""BERT's five special tokens and their ids, shared by every tokenizer bert_jax uses.

The model code, the masking and the data pipeline rely on these ids. Every SentencePiece model trained
here puts them at ids 0..4 (ALBERT's spiece.model too, spelled its way); an imported WordPiece or BPE
vocabulary has its own ids, carried by `SpecialIds`. This module imports nothing of bert_jax: it is the
base the tokenizers, the data pipeline and the benchmark share.
"""

from __future__ import annotations

import dataclasses

PAD_ID, PAD = 0, "[PAD]"
UNK_ID, UNK = 1, "[UNK]"
CLS_ID, CLS = 2, "[CLS]"
SEP_ID, SEP = 3, "[SEP]"
MASK_ID, MASK = 4, "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # piece at index i has id i


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of BERT's special tokens in one vocabulary (0..4 for SentencePiece models, ALBERT's included;
    an imported WordPiece vocabulary has its own, e.g. [CLS]=101; RoBERTa's <s> is cls, </s> sep)."""

    pad: int = PAD_ID
    unk: int = UNK_ID
    cls: int = CLS_ID
    sep: int = SEP_ID
    mask: int = MASK_ID


DEFAULT_SPECIAL_IDS = SpecialIds()


def strip_leading_space(text: str, spans) -> list[tuple[int, int]]:
    """Drops the whitespace a token absorbed from the front of its span: spans never cover whitespace."""
    stripped = []
    for start, end in spans:
        while start < end and text[start].isspace():
            start += 1
        stripped.append((start, end))
    return stripped
