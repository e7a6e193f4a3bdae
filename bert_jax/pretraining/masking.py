"""On-device masked-LM masking (BERT's 80/10/10), traced inside the jitted train step.

Doing it on the device keeps the host pipeline cheap and makes masks a pure function of a key: the
trainer derives that key from (seed, step), so a resumed run re-creates exactly the same masks, and the
result does not depend on how the batch is sharded (JAX's partitionable threefry). Static masking passes
one key per example instead, so an example's mask depends only on that example and its own key.

Four ways to choose what to predict (`MaskingSpec.kind`):
  'token'       BERT: a uniformly random subset of the maskable tokens.
  'whole_word'  BERT's later release: all pieces of a word together, never a part of a word.
  'ngram'       ALBERT: runs of n consecutive whole words, P(n) proportional to 1/n for n in 1..max_ngram.
  'span'        SpanBERT: runs of L whole words, L ~ Geometric(span_p) clipped at max_span_length.
All kinds predict round(mask_rate * maskable tokens) tokens at most (google-research/bert's budget) and
then apply the same 80/10/10 replacement to every selected token.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("token", "whole_word", "ngram", "span")


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
    # Or, for vocabularies whose special/unused tokens are scattered (an imported WordPiece vocabulary
    # with [unused*] slots and [CLS]=101), the explicit ids to draw from.
    random_token_ids: tuple[int, ...] | None = None
    kind: str = "token"  # one of KINDS
    max_ngram: int = 3  # 'ngram': longest n-gram, in words
    span_p: float = 0.2  # 'span': parameter of the geometric span length (mean 1/p words before clipping)
    max_span_length: int = 10  # 'span': longest span, in words

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Masking kind {self.kind!r} is not one of {KINDS}; set config.masking.kind to one "
                             "of them.")
        if self.max_ngram < 1 or self.max_span_length < 1:
            raise ValueError(f"max_ngram ({self.max_ngram}) and max_span_length ({self.max_span_length}) "
                             "must be at least 1.")
        if not 0.0 < self.span_p <= 1.0:
            raise ValueError(f"span_p must be in (0, 1], got {self.span_p}.")

    @classmethod
    def from_config(cls, masking_config, *, mask_id: int, first_random_id: int = 5, vocab_size: int,
                    random_token_ids: tuple[int, ...] | None = None):
        return cls(mask_rate=masking_config.mask_rate,
                   mask_token_fraction=masking_config.mask_token_fraction,
                   random_token_fraction=masking_config.random_token_fraction,
                   max_predictions_per_seq=masking_config.max_predictions_per_seq,
                   mask_id=mask_id, first_random_id=first_random_id, vocab_size=vocab_size,
                   random_token_ids=random_token_ids, kind=masking_config.kind, max_ngram=masking_config.max_ngram,
                   span_p=masking_config.span_p, max_span_length=masking_config.max_span_length)


@flax.struct.dataclass
class MaskedBatch:
    """The result of masking a batch; shapes use P = max_predictions_per_seq."""

    input_ids: jax.Array  # [batch, seq] with selected tokens replaced
    masked_positions: jax.Array  # [batch, P] int32, 0 where unused
    masked_lm_ids: jax.Array  # [batch, P] int32 original tokens (the labels), 0 where unused
    masked_lm_weights: jax.Array  # [batch, P] float32, 1 for real predictions, 0 for unused slots


def mask_tokens(key: jax.Array, input_ids: jax.Array, maskable: jax.Array, spec: MaskingSpec,
                word_starts: jax.Array | None = None) -> MaskedBatch:
    """Selects ~mask_rate of the maskable tokens of each sequence and applies the 80/10/10 replacement.

    Args:
      key: one PRNG key for the whole batch (dynamic masking), or a batch of keys, shape [batch] (typed
        keys) or [batch, 2] (raw uint32 keys), for static masking: row i then depends only on key i and
        row i, never on the rest of the batch. The same keys and inputs always give the same masks.
      input_ids: [batch, seq] int32 token ids.
      maskable: [batch, seq] bool, True for tokens that may be selected (not special, not padding).
      spec: masking parameters.
      word_starts: [batch, seq] bool, True where a token begins a word (special tokens count as word
        starts). Required by 'whole_word', 'ngram' and 'span'; 'token' ignores it.
    """
    if spec.kind != "token" and word_starts is None:
        raise ValueError(f"Masking kind {spec.kind!r} needs `word_starts` ([batch, seq] bool, True where a "
                         "token begins a word); pass it, or use kind='token'.")
    if not _is_key_batch(key):
        return _mask_batch(key, input_ids, maskable, spec, word_starts)
    if key.shape[0] != input_ids.shape[0]:
        raise ValueError(f"Got {key.shape[0]} keys for a batch of {input_ids.shape[0]} sequences; pass one "
                         "key per sequence, or a single key for the whole batch.")

    def mask_one_row(row_key, row_ids, row_maskable, row_word_starts):
        row = _mask_batch(row_key, row_ids[None], row_maskable[None], spec,
                          None if row_word_starts is None else row_word_starts[None])
        return jax.tree.map(lambda x: x[0], row)

    return jax.vmap(mask_one_row)(key, input_ids, maskable, word_starts)


def maskable_positions(input_ids: jax.Array, attention_mask: jax.Array, special_tokens) -> jax.Array:
    """[batch, seq] bool: real (non-padding) tokens that are not special ([CLS], [SEP], [MASK], ...).

    `special_tokens` is a bool [vocab] table of never-masked ids (the tokenizer's `special_table()`), or
    an int n: ids [0, n) are special, as in bert_jax's own SentencePiece vocabularies.
    """
    if isinstance(special_tokens, int):
        is_special = input_ids < special_tokens
    else:
        is_special = jnp.asarray(special_tokens)[input_ids]
    return (attention_mask > 0) & ~is_special


def _is_key_batch(key: jax.Array) -> bool:
    """True for a batch of keys: [batch] typed keys or [batch, 2] raw keys (a single key is [] or [2])."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim == 1
    return key.ndim == 2


def _num_to_predict(maskable: jax.Array, spec: MaskingSpec) -> jax.Array:
    """[batch] int32 token budget: round(rate * n), at least one, at most the cap and n (google-research/bert)."""
    num_maskable = maskable.sum(axis=1)  # [batch]
    num_to_predict = jnp.clip(jnp.round(num_maskable * spec.mask_rate).astype(jnp.int32), 1,
                              spec.max_predictions_per_seq)
    return jnp.minimum(num_to_predict, num_maskable)


def _mask_batch(key, input_ids, maskable, spec: MaskingSpec, word_starts) -> MaskedBatch:
    """mask_tokens with one key for the batch."""
    batch, seq_length = input_ids.shape
    num_slots = min(spec.max_predictions_per_seq, seq_length)
    select_key, action_key, random_key = jax.random.split(key, 3)
    num_to_predict = _num_to_predict(maskable, spec)  # [batch]

    if spec.kind == "token":
        # A uniformly random subset: the top-k of random scores over the maskable positions.
        scores = jnp.where(maskable, jax.random.uniform(select_key, (batch, seq_length)), -1.0)
        _, positions = jax.lax.top_k(scores, num_slots)  # [batch, P], random order
        num_selected = num_to_predict
    else:
        selected, _ = _select_spans(select_key, maskable, word_starts, spec, num_to_predict)  # [batch, seq]
        # The selected positions in increasing order: top-k of a score that falls along the sequence.
        scores = jnp.where(selected, seq_length - jnp.arange(seq_length)[None, :], 0)
        _, positions = jax.lax.top_k(scores, num_slots)  # [batch, P]
        num_selected = selected.sum(axis=1)  # [batch], <= num_to_predict <= P
    used = jnp.arange(num_slots)[None, :] < num_selected[:, None]  # [batch, P]
    positions = jnp.where(used, positions, 0).astype(jnp.int32)
    original = jnp.take_along_axis(input_ids, positions, axis=1)

    action = jax.random.uniform(action_key, (batch, num_slots))
    if spec.random_token_ids is None:
        random_tokens = jax.random.randint(random_key, (batch, num_slots), spec.first_random_id, spec.vocab_size,
                                           dtype=input_ids.dtype)
    else:
        candidates = jnp.asarray(spec.random_token_ids, input_ids.dtype)  # [num_candidates]
        random_tokens = candidates[jax.random.randint(random_key, (batch, num_slots), 0, len(candidates))]
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


def _span_length_logits(spec: MaskingSpec) -> np.ndarray:
    """Log-probabilities of a span of 1, 2, ... words (static: the spec is fixed at trace time)."""
    if spec.kind == "ngram":  # ALBERT: P(n) proportional to 1/n
        return -np.log(np.arange(1, spec.max_ngram + 1, dtype=np.float64))
    # SpanBERT: P(l) proportional to p (1-p)^(l-1), clipped at max_span_length and renormalised.
    lengths = np.arange(1, spec.max_span_length + 1)
    with np.errstate(divide="ignore"):  # span_p = 1 puts all the mass on one word
        return np.log(spec.span_p * (1.0 - spec.span_p) ** (lengths - 1))


def _select_spans(key, maskable, word_starts, spec: MaskingSpec, num_to_predict):
    """Chooses whole words ('whole_word') or runs of whole words ('ngram', 'span') within the budget.

    A unit is a word cut to its maskable pieces: it begins at a maskable word start or at a maskable token
    after a non-maskable one, so a special token or padding is a boundary that no unit crosses and a unit
    is always selected entirely or not at all. Each row draws K = P candidate runs: the start is a random
    unit, without repetition so that 'whole_word' never wastes a candidate on a duplicate, and the length
    in words comes from the kind's distribution; a run that would pass the last unit is shifted back so its
    length stays exactly as drawn. A scan over the candidates then accepts a run iff it overlaps nothing
    accepted before and fits in what is left of the budget, as google-research/bert and ALBERT skip words
    and n-grams that do not fit instead of cutting them.

    Returns:
      selected: [batch, seq] bool, the chosen tokens (at most num_to_predict per row).
      candidates: (start_unit, num_words, accepted), each [batch, K]; only tests look at these.
    """
    batch, seq_length = maskable.shape
    num_candidates = min(spec.max_predictions_per_seq, seq_length)
    start_key, length_key = jax.random.split(key)

    previous_maskable = jnp.pad(maskable[:, :-1], ((0, 0), (1, 0)))  # [batch, seq]
    unit_starts = maskable & (word_starts | ~previous_maskable)  # [batch, seq]
    unit_index = jnp.cumsum(unit_starts, axis=1) - 1  # [batch, seq], meaningful where maskable
    num_units = unit_starts.sum(axis=1)[:, None]  # [batch, 1]

    unit_slots = jnp.arange(seq_length)[None, :]  # there are never more units than tokens
    scores = jnp.where(unit_slots < num_units, jax.random.uniform(start_key, (batch, seq_length)), -1.0)
    start_scores, start_unit = jax.lax.top_k(scores, num_candidates)  # [batch, K], distinct units
    if spec.kind == "whole_word":
        num_words = jnp.ones((batch, num_candidates), jnp.int32)
    else:
        num_words = 1 + jax.random.categorical(length_key, jnp.asarray(_span_length_logits(spec)),
                                               shape=(batch, num_candidates))  # [batch, K]
    num_words = jnp.minimum(num_words, num_units)
    start_unit = jnp.clip(start_unit, 0, num_units - num_words)
    valid = start_scores >= 0.0  # [batch, K]; False for candidates beyond the row's number of units

    def consider(carry, candidate):
        selected, num_selected = carry  # [batch, seq] bool, [batch] int32
        start, length, is_valid = candidate  # [batch] each
        in_span = maskable & (unit_index >= start[:, None]) & (unit_index < (start + length)[:, None])
        span_tokens = in_span.sum(axis=1)  # [batch]
        accept = (is_valid & ~(in_span & selected).any(axis=1)
                  & (num_selected + span_tokens <= num_to_predict))
        selected = selected | (in_span & accept[:, None])
        return (selected, num_selected + jnp.where(accept, span_tokens, 0)), accept

    initial = (jnp.zeros_like(maskable), jnp.zeros((batch,), jnp.int32))
    (selected, _), accepted = jax.lax.scan(consider, initial, (start_unit.T, num_words.T, valid.T))
    return selected, (start_unit, num_words, accepted.T)
