"""On-device masked-LM masking (BERT's 80/10/10), traced inside the jitted train step.

Doing it on the device keeps the host pipeline cheap and makes masks a pure function of a key: the
trainer derives that key from (seed, step), so a resumed run re-creates exactly the same masks, and the
result does not depend on how the batch is sharded (JAX's partitionable threefry).
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    """What to mask and how; built from `config.masking` plus the tokenizer's special ids."""

    mask_rate: float = 0.15
    mask_token_fraction: float = 0.8
    random_token_fraction: float = 0.1
    max_predictions_per_seq: int = 20
    mask_id: int = 4
    # Random replacements are drawn uniformly from [first_random_id, vocab_size): the tokenizer's real
    # pieces, never a special token nor an unused row of a padded embedding table.
    first_random_id: int = 5
    vocab_size: int = 30522

    @classmethod
    def from_config(cls, masking_config, *, mask_id: int, first_random_id: int, vocab_size: int):
        return cls(mask_rate=masking_config.mask_rate,
                   mask_token_fraction=masking_config.mask_token_fraction,
                   random_token_fraction=masking_config.random_token_fraction,
                   max_predictions_per_seq=masking_config.max_predictions_per_seq,
                   mask_id=mask_id, first_random_id=first_random_id, vocab_size=vocab_size)


@flax.struct.dataclass
class MaskedBatch:
    """The result of masking a batch; shapes use P = max_predictions_per_seq."""

    input_ids: jax.Array  # [batch, seq] with selected tokens replaced
    masked_positions: jax.Array  # [batch, P] int32, 0 where unused
    masked_lm_ids: jax.Array  # [batch, P] int32 original tokens (the labels), 0 where unused
    masked_lm_weights: jax.Array  # [batch, P] float32, 1 for real predictions, 0 for unused slots


def mask_tokens(key: jax.Array, input_ids: jax.Array, maskable: jax.Array, spec: MaskingSpec) -> MaskedBatch:
    """Selects ~mask_rate of the maskable tokens of each sequence and applies the 80/10/10 replacement.

    Args:
      key: a PRNG key; the same key and inputs always give the same masks.
      input_ids: [batch, seq] int32 token ids.
      maskable: [batch, seq] bool, True for tokens that may be selected (not special, not padding).
      spec: masking parameters.
    """
    batch, seq_length = input_ids.shape
    num_slots = min(spec.max_predictions_per_seq, seq_length)
    select_key, action_key, random_key = jax.random.split(key, 3)

    num_maskable = maskable.sum(axis=1)  # [batch]
    # As google-research/bert: round(rate * n), at least one, at most the cap (and never more than n).
    num_to_predict = jnp.clip(jnp.round(num_maskable * spec.mask_rate).astype(jnp.int32), 1,
                              spec.max_predictions_per_seq)
    num_to_predict = jnp.minimum(num_to_predict, num_maskable)

    # A uniformly random subset: the top-k of random scores over the maskable positions.
    scores = jnp.where(maskable, jax.random.uniform(select_key, (batch, seq_length)), -1.0)
    _, positions = jax.lax.top_k(scores, num_slots)  # [batch, P], random order
    used = jnp.arange(num_slots)[None, :] < num_to_predict[:, None]  # [batch, P]
    positions = jnp.where(used, positions, 0).astype(jnp.int32)
    original = jnp.take_along_axis(input_ids, positions, axis=1)

    action = jax.random.uniform(action_key, (batch, num_slots))
    random_tokens = jax.random.randint(random_key, (batch, num_slots), spec.first_random_id, spec.vocab_size,
                                       dtype=input_ids.dtype)
    replacement = jnp.where(action < spec.mask_token_fraction, jnp.asarray(spec.mask_id, input_ids.dtype),
                            jnp.where(action < spec.mask_token_fraction + spec.random_token_fraction,
                                      random_tokens, original))

    # Unused slots scatter out of bounds and are dropped, so they can never overwrite a real prediction.
    rows = jnp.arange(batch)[:, None]
    scatter_positions = jnp.where(used, positions, seq_length)
    masked_input_ids = input_ids.at[rows, scatter_positions].set(replacement, mode="drop")
    return MaskedBatch(input_ids=masked_input_ids,
                       masked_positions=positions,
                       masked_lm_ids=jnp.where(used, original, 0).astype(jnp.int32),
                       masked_lm_weights=used.astype(jnp.float32))


def maskable_positions(input_ids: jax.Array, attention_mask: jax.Array, num_special_tokens: int) -> jax.Array:
    """[batch, seq] bool: real (non-padding) tokens that are not special ([CLS], [SEP], [MASK], ...).

    Special tokens occupy ids [0, num_special_tokens), as the bert_jax tokenizer guarantees.
    """
    return (attention_mask > 0) & (input_ids >= num_special_tokens)
