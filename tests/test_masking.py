"""Masking statistics over many draws: selection rate, 80/10/10 split, never special or padding tokens."""

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import masking

VOCAB, NUM_SPECIAL, MASK_ID = 1000, 5, 4


def _batch(rng, batch=64, seq=128):
    """Sequences [CLS] ... [SEP] ... [SEP] [PAD]... of random lengths."""
    ids = np.zeros((batch, seq), np.int32)
    lengths = rng.integers(10, seq + 1, size=batch)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(NUM_SPECIAL, VOCAB, size=length)
        ids[row, 0] = 2
        ids[row, length // 2] = 3
        ids[row, length - 1] = 3
    return ids, (ids > 0).astype(np.int32)


def _draw(spec, ids, attention_mask, num_draws):
    maskable = masking.maskable_positions(jnp.asarray(ids), jnp.asarray(attention_mask), NUM_SPECIAL)
    fn = jax.jit(jax.vmap(lambda k: masking.mask_tokens(k, jnp.asarray(ids), maskable, spec)))
    out = fn(jax.random.split(jax.random.key(0), num_draws))
    return jax.tree.map(np.asarray, out), np.asarray(maskable)


def test_selection_rate_split_and_targets():
    rng = np.random.default_rng(0)
    ids, attention_mask = _batch(rng)
    spec = masking.MaskingSpec(max_predictions_per_seq=20, mask_id=MASK_ID, first_random_id=NUM_SPECIAL,
                               vocab_size=VOCAB)
    out, maskable = _draw(spec, ids, attention_mask, num_draws=200)
    weights = out.masked_lm_weights > 0  # [draws, batch, P]

    # Selected count per sequence: round(15% of maskable tokens), at least 1, at most the cap.
    expected = np.clip(np.round(maskable.sum(1) * 0.15), 1, 20)
    np.testing.assert_array_equal(weights.sum(-1), np.broadcast_to(expected, weights.shape[:2]))
    uncapped = np.round(maskable.sum(1) * 0.15) <= 20
    rate = weights.sum(-1)[:, uncapped].sum() / (200 * maskable.sum(1)[uncapped].sum())
    assert abs(rate - 0.15) < 0.01

    positions = out.masked_positions
    rows = np.arange(ids.shape[0])[None, :, None]
    # Never a special token or padding; no position chosen twice in a sequence.
    assert maskable[np.broadcast_to(rows, positions.shape)[weights], positions[weights]].all()
    for draw in range(5):
        for row in range(ids.shape[0]):
            chosen = positions[draw, row][weights[draw, row]]
            assert len(set(chosen.tolist())) == len(chosen)

    originals = np.broadcast_to(ids[None], out.input_ids.shape)
    labels = np.take_along_axis(originals, positions, axis=2)
    np.testing.assert_array_equal(out.masked_lm_ids[weights], labels[weights])
    replaced = np.take_along_axis(out.input_ids, positions, axis=2)[weights]
    total = replaced.size
    mask_share = (replaced == MASK_ID).sum() / total
    kept_share = (replaced == labels[weights]).sum() / total
    random_share = 1.0 - mask_share - kept_share
    assert abs(mask_share - 0.8) < 0.01 and abs(kept_share - 0.1) < 0.01 and abs(random_share - 0.1) < 0.01
    assert (replaced >= NUM_SPECIAL).sum() == ((replaced != MASK_ID).sum())  # random tokens are never special

    # Positions that were not selected keep their token.
    selected = np.zeros(out.input_ids.shape, bool)
    np.put_along_axis(selected, np.where(weights, positions, 0), weights, axis=2)
    np.testing.assert_array_equal(out.input_ids[~selected], originals[~selected])


def test_cap_deterministic_and_empty_rows():
    rng = np.random.default_rng(1)
    ids, attention_mask = _batch(rng, batch=8, seq=128)
    attention_mask[3] = 0  # an all-padding row (evaluation filler) gets no predictions
    ids[3] = 0
    spec = masking.MaskingSpec(max_predictions_per_seq=5, mask_id=MASK_ID, first_random_id=NUM_SPECIAL,
                               vocab_size=VOCAB)
    maskable = masking.maskable_positions(jnp.asarray(ids), jnp.asarray(attention_mask), NUM_SPECIAL)
    a = masking.mask_tokens(jax.random.key(7), jnp.asarray(ids), maskable, spec)
    b = masking.mask_tokens(jax.random.key(7), jnp.asarray(ids), maskable, spec)
    c = masking.mask_tokens(jax.random.key(8), jnp.asarray(ids), maskable, spec)
    np.testing.assert_array_equal(np.asarray(a.input_ids), np.asarray(b.input_ids))
    assert not np.array_equal(np.asarray(a.masked_positions), np.asarray(c.masked_positions))
    assert a.masked_positions.shape == (8, 5)
    assert float(a.masked_lm_weights[3].sum()) == 0.0
    np.testing.assert_array_equal(np.asarray(a.input_ids[3]), ids[3])
