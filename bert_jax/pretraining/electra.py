"""ELECTRA's replaced-token detection (Clark et al. 2020) inside the pretraining step.

The generator reads the masked batch and predicts the masked tokens (its MLM loss); a replacement for each
masked position is sampled from its distribution (Gumbel-max, no gradient through the sample); the
discriminator reads the original sequence with those replacements and predicts, for every real token,
whether it differs from the original. A sample that equals the original token counts as original, as
in the paper and google-research/electra. Unlike google-research/electra, special tokens ([CLS], [SEP],
[MASK], [PAD], [UNK], ...) and ids beyond the tokenizer's vocabulary are never sampled: the discriminator
should not learn to spot a [MASK] or a second [CLS], and fine-tuning never shows it one there.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.pretraining import losses, masking


@dataclasses.dataclass(frozen=True)
class ElectraSpec:
    """What the ELECTRA step needs beyond the masking spec."""

    sampleable: np.ndarray  # bool [model vocab_size]: ids the generator may put in (not special, in the vocabulary)
    temperature: float
    rtd_weight: float

    @classmethod
    def from_config(cls, electra_config, special_tokens, tokenizer_vocab_size: int, model_vocab_size: int):
        """`special_tokens`: a bool table [tokenizer vocab] of special ids, or n for the ids [0, n)."""
        return cls(sampleable_ids(special_tokens, tokenizer_vocab_size, model_vocab_size),
                   float(electra_config.temperature), float(electra_config.rtd_weight))


def sampleable_ids(special_tokens, tokenizer_vocab_size: int, model_vocab_size: int) -> np.ndarray:
    """bool [model_vocab_size]: True for the tokenizer's ordinary (non-special) ids."""
    table = np.zeros(model_vocab_size, bool)
    table[:tokenizer_vocab_size] = True
    if isinstance(special_tokens, (int, np.integer)):
        table[:special_tokens] = False
    else:
        special = np.asarray(special_tokens, bool)
        table[:len(special)] &= ~special
    return table


def sample_replacements(key: jax.Array, generator_logits: jax.Array, sampleable, temperature: float) -> jax.Array:
    """One token per masked slot drawn from softmax(logits / temperature) over the sampleable ids.

    generator_logits [batch, P, vocab] -> sampled ids [batch, P] int32. Gumbel-max: argmax(logits + g) with
    g ~ Gumbel(0, 1) is a sample of the softmax; the logits are cut from the gradient (the generator learns
    from its MLM loss only).
    """
    logits = jax.lax.stop_gradient(generator_logits).astype(jnp.float32) / temperature
    logits = jnp.where(jnp.asarray(sampleable), logits, -jnp.inf)  # [batch, P, vocab]
    gumbel = jax.random.gumbel(key, logits.shape, jnp.float32)
    return jnp.argmax(logits + gumbel, axis=-1).astype(jnp.int32)


def replace_tokens(input_ids: jax.Array, masked_positions: jax.Array, masked_lm_weights: jax.Array,
                   sampled_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The discriminator's input and labels.

    input_ids [batch, seq] (the original tokens), masked_positions / masked_lm_weights / sampled_ids [batch, P]
    -> (discriminator_ids [batch, seq]: the originals with each real slot's sample at its position,
    is_replaced [batch, seq] int32: 1 where the token now differs from the original). Unused slots
    (weight 0) change nothing.
    """
    seq_length = input_ids.shape[1]
    hits = (masked_positions[:, :, None] == jnp.arange(seq_length)) & (masked_lm_weights[:, :, None] > 0)
    # [batch, P, seq]; positions within a row are distinct, so at most one slot hits a token
    sampled_at = jnp.max(jnp.where(hits, sampled_ids[:, :, None], -1), axis=1)  # [batch, seq], -1: not masked
    discriminator_ids = jnp.where(sampled_at >= 0, sampled_at, input_ids)
    return discriminator_ids, (discriminator_ids != input_ids).astype(jnp.int32)


def electra_sums(graphdef, spec: ElectraSpec, params, batch, masked: masking.MaskedBatch, example_weights, *,
                 deterministic: bool, dropout_key=None, sample_key=None) -> dict[str, jax.Array]:
    """Generator MLM and discriminator RTD statistics of one masked batch (see `losses.pretraining_loss`).

    The generator's MLM statistics are reported under mlm_*; `sample_key` draws the replacements.
    """
    model = nnx.merge(graphdef, params)
    rngs = None if deterministic else nnx.Rngs(dropout=dropout_key)
    segment_ids, attention_mask = batch["segment_ids"], batch["attention_mask"]
    generator_logits = model.generator_logits(masked.input_ids, segment_ids, attention_mask,
                                              masked.masked_positions, deterministic=deterministic, rngs=rngs)
    sums = losses.pretraining_sums(generator_logits, masked.masked_lm_ids, masked.masked_lm_weights, None, None,
                                   example_weights, pair=None)
    sampled = sample_replacements(sample_key, generator_logits, spec.sampleable, spec.temperature)
    discriminator_ids, is_replaced = replace_tokens(batch["input_ids"], masked.masked_positions,
                                                    masked.masked_lm_weights, sampled)
    logits = model.discriminator_logits(discriminator_ids, segment_ids, attention_mask,
                                        deterministic=deterministic, rngs=rngs)  # [batch, seq]
    token_weights = (attention_mask > 0).astype(jnp.float32) * example_weights[:, None]
    sums.update(losses.replaced_token_sums(logits, is_replaced, token_weights, spec.rtd_weight))
    return sums
