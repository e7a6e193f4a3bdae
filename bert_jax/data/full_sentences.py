"""RoBERTa's FULL-SENTENCES instances: full sentences packed greedily across document boundaries.

The split is read as one stream of sentences in document order. `index_packs` cuts that stream once,
from sentence lengths only, into packs that fill `max_seq_length` as far as whole sentences allow, so
padding is only the tail a pack's next sentence would overflow. `full_sentence_pieces` reads a pack's
text, which `pipeline.py` lays out as `[CLS] ... [SEP]` with an extra `[SEP]` at each document
boundary inside it, as RoBERTa does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Columns of the pack index: a pack is the stream from (FIRST_DOC, FIRST_TOKEN) to (LAST_DOC, END_TOKEN),
# token offsets within their documents, END_TOKEN exclusive.
FIRST_DOC, FIRST_TOKEN, LAST_DOC, END_TOKEN = range(4)


def index_packs(sentence_lengths_per_doc: Sequence[np.ndarray], max_seq_length: int) -> np.ndarray:
    """Greedy packs of consecutive full sentences, each at most `max_seq_length` with its specials.

    A pack holds `max_seq_length - 2` tokens besides [CLS] and the final [SEP]; a document boundary
    inside it costs one more token (its [SEP]). A sentence that does not fit closes the pack; one
    longer than an empty pack is cut into pieces that fill whole packs, its rest starting the next.

    Returns: int64 [num_packs, 4], rows (first_doc, first_token, last_doc, end_token). Consecutive packs
    meet: each starts where the previous one ends, or at the next document's first token.
    """
    capacity = max_seq_length - 2
    rows, used, start, end = [], 0, (0, 0), (0, 0)  # `used`: tokens in the open pack, boundary [SEP]s included
    for doc, lengths in enumerate(sentence_lengths_per_doc):
        offset = 0
        for length in lengths.tolist():
            boundary = 1 if used and offset == 0 else 0  # the [SEP] before a new document's first sentence
            if used and used + boundary + length > capacity:
                rows.append(start + end)
                used, boundary = 0, 0
            if not used:
                start = (doc, offset)
            while used + length > capacity:  # only in an empty pack: the sentence alone is too long
                offset, length = offset + capacity, length - capacity
                rows.append(start + (doc, offset))
                start = (doc, offset)
            used += boundary + length
            offset += length
            end = (doc, offset)
    if used:
        rows.append(start + end)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def full_sentence_pieces(source, pack: np.ndarray) -> list[np.ndarray]:
    """The text of one pack of `index_packs`: one int32 token array per document it touches, in order.

    The caller lays them out as `[CLS] piece [SEP] piece ... [SEP]`, so each [SEP] but the last marks a
    document boundary.
    """
    first_doc, first_token, last_doc, end_token = (int(x) for x in pack[:4])
    pieces = []
    for doc in range(first_doc, last_doc + 1):
        tokens = source[doc]["tokens"]  # [num_tokens]
        pieces.append(tokens[first_token if doc == first_doc else 0:end_token if doc == last_doc else len(tokens)])
    return pieces
