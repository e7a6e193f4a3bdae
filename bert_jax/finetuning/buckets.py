"""Length bucketing for inference, shared by `prediction.Predictor` (fine-tuned models) and
`embedding.Embedder` (pooled encoder outputs).

Rows are sorted by their real length (tokens under the attention mask), cut into batches of `batch_size`
in that order, and each batch is computed at its bucket length: the next power of two >= its longest
row (at least MIN_BUCKET, at most max_seq_length). Shapes are then only (batch_size, bucket), so a jitted
function compiles once per bucket and reuses it, and short texts no longer pay for max_seq_length
positions. The last batch is filled up to batch_size with copies of the shortest row, whose outputs are
dropped. Attention masks padding out, so a row's outputs do not depend on the bucket it lands in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

MIN_BUCKET = 16


def bucket_length(longest: int, max_seq_length: int) -> int:
    """The next power of two >= `longest`, at least MIN_BUCKET, at most `max_seq_length`."""
    length = MIN_BUCKET
    while length < longest:
        length *= 2
    return min(length, max_seq_length)


def real_lengths(attention_mask: np.ndarray) -> np.ndarray:
    """Real tokens per row [n] of attention_mask [n, seq] (or [n, choices, seq]: the longest choice)."""
    lengths = (attention_mask > 0).sum(-1)
    return lengths.max(-1) if lengths.ndim == 2 else lengths


def sorted_batches(lengths: np.ndarray, batch_size: int, max_seq_length: int, *,
                   bucketed: bool = True) -> Iterator[tuple[np.ndarray, int, int]]:
    """(rows [batch_size], real rows, bucket) per batch, shortest rows first: `rows[:real]` are the batch's
    rows (indices into `lengths`), the rest copies of the shortest row. `bucketed=False` gives every batch
    max_seq_length (the fixed-length path, for comparisons)."""
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        rows = np.concatenate([chosen, np.full(batch_size - len(chosen), order[0], order.dtype)])
        bucket = bucket_length(int(lengths[chosen].max()), max_seq_length) if bucketed else max_seq_length
        yield rows, len(chosen), bucket


def _programs(jitted) -> int | None:
    """How many programs a `jax.jit` function has compiled (None where JAX does not say)."""
    cache_size = getattr(jitted, "_cache_size", None)
    return cache_size() if cache_size else None


@dataclasses.dataclass
class BucketStats:
    """What the bucketed forward passes computed: rows, real tokens, positions and the bucket lengths."""

    rows: int = 0
    real_tokens: int = 0
    computed_positions: int = 0  # batch_size x bucket (x choices) summed over batches, filler rows included
    unbucketed_positions: int = 0  # what the same batches cost at max_seq_length
    buckets: set[int] = dataclasses.field(default_factory=set)
    compiles: int = 0
    seconds: float = 0.0

    def add_batch(self, bucket: int, rows: int, max_seq_length: int) -> None:
        """Counts one batch of `rows` rows (batch_size x choices) computed at `bucket` positions."""
        self.buckets.add(bucket)
        self.computed_positions += rows * bucket
        self.unbucketed_positions += rows * max_seq_length

    @contextlib.contextmanager
    def timing(self, jitted) -> Iterator[BucketStats]:
        """Adds the block's seconds, and the programs `jitted` compiled in it, to these stats."""
        compiled_before, buckets_before = _programs(jitted), len(self.buckets)
        started = time.perf_counter()
        try:
            yield self
        finally:
            self.seconds += time.perf_counter() - started
            compiled_after = _programs(jitted)
            self.compiles += (compiled_after - compiled_before if compiled_after is not None
                              else len(self.buckets) - buckets_before)

    def report(self) -> dict[str, Any]:
        """Throughput and padding figures for a command's JSON summary."""
        seconds = max(self.seconds, 1e-9)
        return {"tokens_per_second": round(self.real_tokens / seconds, 1),
                "padding_fraction": round(1 - self.real_tokens / max(self.computed_positions, 1), 4),
                "padding_fraction_unbucketed": round(1 - self.real_tokens / max(self.unbucketed_positions, 1), 4),
                "buckets": sorted(self.buckets), "compiles": self.compiles}
