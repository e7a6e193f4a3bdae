"""SpanBERT's span-boundary targets (objective 'mlm_sbo') from a batch's masks: pure jnp, traced in the step.

The SBO head predicts every masked token again, from the two tokens around its span and its offset in the
span, so its targets are the MLM labels and its slots the MLM prediction slots; this module finds, for
each slot, the span around it. A span is a maximal run of contiguous masked positions: facebookresearch/
SpanBERT merges overlapping and adjacent masked spans (`merge_intervals`) before taking their boundaries,
so two drawn spans that touch are one span here too, with the token before the first and the token after
the last as its boundaries. This works for any masking kind ('token' masks give mostly one-token spans).

Two differences from SpanBERT's code, on purpose:
  - SpanBERT masks a block before adding [CLS] and [SEP], and drops the SBO targets of a span that starts
    at the block's first token or ends at its last (the boundary would be outside the block). Masking here
    never selects [CLS] or [SEP], so such a span has them as boundaries and is predicted like any other.
    Boundaries are still clamped into the row's real tokens, [0, last real position], so a row whose last
    real token is masked (this pipeline builds none) uses that token's own output, never padding.
  - Offsets past the position table (`max_span_positions`, SpanBERT's max_pair_targets) get weight 0, as
    SpanBERT truncates its pair targets there; the MLM head still predicts those tokens.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class SpanBoundaries:
    """Per MLM prediction slot (shapes [batch, P], P = max_predictions_per_seq); 0 in unused slots."""

    left_positions: jax.Array  # int32: position of x_{s-1}, the token before the slot's span (s, e)
    right_positions: jax.Array  # int32: position of x_{e+1}, the token after it
    span_offsets: jax.Array  # int32: i - s, the slot's row of the SBO position table (SpanBERT's p_{i-s+1})
    weights: jax.Array  # float32: the slot's MLM weight, 0 where the offset is past the table

    def head_inputs(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(left_positions, right_positions, span_offsets): what SpanBoundaryHead takes."""
        return self.left_positions, self.right_positions, self.span_offsets


def span_boundaries(masked_positions: jax.Array, masked_lm_weights: jax.Array, attention_mask: jax.Array,
                    max_span_positions: int) -> SpanBoundaries:
    """The span around each prediction slot and its boundaries.

    Args:
      masked_positions: [batch, P] int32 positions of the predictions (any order; unused slots hold 0).
      masked_lm_weights: [batch, P] float32, > 0 for real predictions.
      attention_mask: [batch, seq], > 0 for real tokens.
      max_span_positions: rows of the SBO position table; slots further into their span get weight 0.
    """
    batch, seq_length = attention_mask.shape
    used = masked_lm_weights > 0  # [batch, P]
    rows = jnp.arange(batch)[:, None]
    is_masked = jnp.zeros((batch, seq_length), bool).at[rows, jnp.where(used, masked_positions, seq_length)].set(
        True, mode="drop")  # [batch, seq]; unused slots scatter out of bounds
    index = jnp.broadcast_to(jnp.arange(seq_length)[None, :], (batch, seq_length))
    previous_masked = jnp.pad(is_masked[:, :-1], ((0, 0), (1, 0)))
    next_masked = jnp.pad(is_masked[:, 1:], ((0, 0), (0, 1)))
    # The first position of the run holding each position, and its last: running max of run starts from
    # the left, running min of run ends from the right.
    run_start = jax.lax.cummax(jnp.where(is_masked & ~previous_masked, index, -1), axis=1)  # [batch, seq]
    run_end = jax.lax.cummin(jnp.where(is_masked & ~next_masked, index, seq_length), axis=1, reverse=True)
    start = jnp.take_along_axis(run_start, masked_positions, axis=1)  # [batch, P]
    end = jnp.take_along_axis(run_end, masked_positions, axis=1)  # [batch, P]
    last_real = jnp.max(jnp.where(attention_mask > 0, index, 0), axis=1, keepdims=True)  # [batch, 1]
    offsets = masked_positions - start
    in_table = used & (offsets < max_span_positions)
    return SpanBoundaries(
        left_positions=jnp.where(used, jnp.clip(start - 1, 0, last_real), 0).astype(jnp.int32),
        right_positions=jnp.where(used, jnp.clip(end + 1, 0, last_real), 0).astype(jnp.int32),
        span_offsets=jnp.where(in_table, offsets, 0).astype(jnp.int32),
        weights=jnp.where(in_table, masked_lm_weights, 0.0).astype(jnp.float32))
