"""Masking statistics over many draws: selection rate, 80/10/10 split, never special or padding tokens."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.pretraining import masking

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


# ----- Whole-word, n-gram and span masking ------------------------------------------------------------

UNK_ID = 1


def _word_batch(rng, batch, seq, min_length=10, max_pieces=4, unk_rate=0.0):
    """[CLS] words [SEP] words [SEP] [PAD]..., each word 1..max_pieces pieces; also returns word_starts.

    Special tokens are word starts, as in the trainer's table. In odd rows the second segment begins with
    a continuation piece (a word cut by truncation), and with `unk_rate` some pieces inside words become
    [UNK] (non-maskable, not a word start): both must act as word boundaries.
    """
    ids = np.zeros((batch, seq), np.int32)
    word_starts = np.ones((batch, seq), bool)
    for row, length in enumerate(rng.integers(min_length, seq + 1, size=batch)):
        ids[row, :length] = rng.integers(NUM_SPECIAL, VOCAB, size=length)
        position = 1
        while position < length:
            pieces = rng.integers(1, max_pieces + 1)
            word_starts[row, position + 1:position + pieces] = False
            position += pieces
        ids[row, [0, length // 2, length - 1]] = 2, 3, 3
        word_starts[row, [0, length // 2, length - 1]] = True
        if row % 2:
            word_starts[row, length // 2 + 1] = False
        inside = (rng.random(seq) < unk_rate) & ~word_starts[row] & (np.arange(seq) < length)
        ids[row, inside] = UNK_ID
    return ids, (ids > 0).astype(np.int32), word_starts


def _units(maskable, word_starts):
    """Plain-loop reference. units: [batch, seq] index of each maskable token's unit (a word cut to its
    maskable pieces), -1 elsewhere; first: [batch, seq] position of the first token of that unit."""
    units, first = np.full(maskable.shape, -1), np.zeros(maskable.shape, int)
    for row in range(maskable.shape[0]):
        unit, start = -1, 0
        for position in range(maskable.shape[1]):
            if not maskable[row, position]:
                continue
            if word_starts[row, position] or position == 0 or not maskable[row, position - 1]:
                unit, start = unit + 1, position
            units[row, position], first[row, position] = unit, start
    return units, first


def _budget(maskable, cap, rate=0.15):
    count = maskable.sum(-1)
    return np.minimum(np.clip(np.round(count * rate), 1, cap), count).astype(int)


def _spec(kind, cap=20, **kwargs):
    return masking.MaskingSpec(kind=kind, max_predictions_per_seq=cap, mask_id=MASK_ID,
                               first_random_id=NUM_SPECIAL, vocab_size=VOCAB, **kwargs)


@functools.cache
def _masker(spec):
    """mask_tokens of one batch under a batch of keys (one draw each), jitted once per spec and shape."""
    return jax.jit(jax.vmap(lambda key, ids, maskable, word_starts: masking.mask_tokens(key, ids, maskable, spec,
                                                                                       word_starts),
                            in_axes=(0, None, None, None)))


def _draw_words(spec, ids, attention_mask, word_starts, num_draws):
    """num_draws maskings of one batch (one key each); also the selection as [draws, batch, seq] bool."""
    maskable = masking.maskable_positions(jnp.asarray(ids), jnp.asarray(attention_mask), NUM_SPECIAL)
    keys = jax.random.split(jax.random.key(0), num_draws)
    out = jax.tree.map(np.asarray, _masker(spec)(keys, jnp.asarray(ids), maskable, jnp.asarray(word_starts)))
    weights = out.masked_lm_weights > 0
    selected = np.zeros(out.input_ids.shape, bool)
    np.put_along_axis(selected, np.where(weights, out.masked_positions, 0), weights, axis=2)
    return out, selected, np.asarray(maskable)


def test_whole_word_keeps_words_whole_within_budget():
    rng = np.random.default_rng(2)
    ids, attention_mask, word_starts = _word_batch(rng, 32, 128, unk_rate=0.05)
    _, selected, maskable = _draw_words(_spec("whole_word"), ids, attention_mask, word_starts, 100)
    _, first = _units(maskable, word_starts)
    # Every token of a unit agrees with the unit's first token: a word is never split.
    agrees = selected == np.take_along_axis(selected, np.broadcast_to(first, selected.shape), axis=2)
    assert agrees[:, maskable].all()
    assert selected[:, ~maskable].sum() == 0
    budget = _budget(maskable, cap=20)
    counts = selected.sum(-1)  # [draws, batch]
    assert (counts <= budget).all() and counts.max() <= 20
    assert counts.mean() >= 0.97 * budget.mean()  # skipping words that do not fit leaves little unused

    # With one-piece words nothing is skipped: exactly the budget every time, like token masking.
    _, selected, maskable = _draw_words(_spec("whole_word"), ids, attention_mask, np.ones_like(word_starts), 100)
    np.testing.assert_array_equal(selected.sum(-1), np.broadcast_to(_budget(maskable, 20), selected.shape[:2]))


@pytest.mark.parametrize("kind", masking.KINDS)
def test_special_and_padding_never_selected(kind):
    rng = np.random.default_rng(3)
    ids, attention_mask, word_starts = _word_batch(rng, 16, 64, unk_rate=0.1)
    ids[5], attention_mask[5] = 0, 0  # an all-padding row gets no predictions
    out, selected, maskable = _draw_words(_spec(kind, cap=8), ids, attention_mask, word_starts, 50)
    weights = out.masked_lm_weights > 0
    assert selected[:, ~maskable].sum() == 0 and not weights[:, 5].any()
    assert (selected.sum(-1) == weights.sum(-1)).all()  # no position chosen twice
    assert (out.masked_positions[~weights] == 0).all() and (out.masked_lm_ids[~weights] == 0).all()
    originals = np.broadcast_to(ids, out.input_ids.shape)
    labels = np.take_along_axis(originals, out.masked_positions, axis=2)
    np.testing.assert_array_equal(out.masked_lm_ids[weights], labels[weights])
    np.testing.assert_array_equal(out.input_ids[~selected], originals[~selected])


def test_whole_word_80_10_10():
    rng = np.random.default_rng(4)
    ids, attention_mask, word_starts = _word_batch(rng, 32, 128)
    out, _, _ = _draw_words(_spec("whole_word"), ids, attention_mask, word_starts, 100)
    weights = out.masked_lm_weights > 0
    replaced = np.take_along_axis(out.input_ids, out.masked_positions, axis=2)[weights]
    labels = out.masked_lm_ids[weights]
    mask_share = (replaced == MASK_ID).mean()
    kept_share = (replaced == labels).mean()
    random_share = 1.0 - mask_share - kept_share
    assert abs(mask_share - 0.8) < 0.01 and abs(kept_share - 0.1) < 0.01 and abs(random_share - 0.1) < 0.01
    assert (replaced[replaced != MASK_ID] >= NUM_SPECIAL).all()


def _select(spec, ids, attention_mask, word_starts, num_draws):
    """masking._select_spans over num_draws keys: selection [draws, batch, seq] and candidates [draws, batch, K]."""
    maskable = masking.maskable_positions(jnp.asarray(ids), jnp.asarray(attention_mask), NUM_SPECIAL)
    budget = masking._num_to_predict(maskable, spec)
    fn = jax.jit(jax.vmap(lambda k: masking._select_spans(k, maskable, jnp.asarray(word_starts), spec, budget)))
    selected, (start, num_words, accepted) = fn(jax.random.split(jax.random.key(1), num_draws))
    return tuple(map(np.asarray, (selected, start, num_words, accepted, maskable, budget)))


@pytest.mark.parametrize("kind", ("whole_word", "ngram", "span"))
def test_spans_follow_the_greedy_rule(kind):
    """Replays the acceptance rule in NumPy: a candidate run of whole words is taken iff it overlaps
    nothing taken before and fits in what is left of the budget; the selection is the union of those."""
    rng = np.random.default_rng(5)
    ids, attention_mask, word_starts = _word_batch(rng, 8, 64, unk_rate=0.05)
    selected, start, num_words, accepted, maskable, budget = _select(_spec(kind, cap=12), ids, attention_mask,
                                                                     word_starts, 20)
    units, _ = _units(maskable, word_starts)
    num_units = units.max(-1) + 1
    for draw in range(selected.shape[0]):
        for row in range(selected.shape[1]):
            expected, count = np.zeros(units.shape[1], bool), 0
            for k in range(start.shape[-1]):
                first, n = start[draw, row, k], num_words[draw, row, k]
                if k >= num_units[row]:  # a row has only as many candidates as units
                    assert not accepted[draw, row, k]
                    continue
                assert 1 <= n and first + n <= num_units[row]
                span = (units[row] >= first) & (units[row] < first + n)
                take = not (span & expected).any() and count + span.sum() <= budget[row]
                assert accepted[draw, row, k] == take
                expected |= span & take
                count += span.sum() * take
            np.testing.assert_array_equal(selected[draw, row], expected)
        if kind == "whole_word":  # starts are distinct units, so no candidate is wasted on a duplicate
            for row in range(selected.shape[1]):
                used = start[draw, row, :min(num_units[row], start.shape[-1])]
                assert len(set(used.tolist())) == len(used)


def _length_shares(num_words, max_length):
    return np.bincount(num_words.ravel(), minlength=max_length + 1)[1:] / num_words.size


# Budget clipping rejects long runs more often than short ones (a 10-word span rarely fits in the last
# few tokens of a budget), so the accepted runs as a whole are shorter than the configured distribution.
# What must follow it exactly is (a) every candidate's length, and (b) the first candidate of each row:
# nothing precedes it to overlap, and these rows' budget exceeds the longest possible run in tokens, so it
# is always accepted; its length is the distribution an accepted span has before any interaction.
def test_ngram_lengths_follow_inverse_n():
    rng = np.random.default_rng(6)
    ids, attention_mask, word_starts = _word_batch(rng, 32, 256, min_length=160)  # budget 20 > 3 * 4
    _, _, num_words, accepted, _, _ = _select(_spec("ngram", cap=20, max_ngram=3), ids, attention_mask,
                                              word_starts, 200)
    expected = (1 / np.arange(1, 4)) / (1 / np.arange(1, 4)).sum()  # 6/11, 3/11, 2/11
    np.testing.assert_allclose(_length_shares(num_words, 3), expected, atol=0.01)
    assert accepted[..., 0].all()
    np.testing.assert_allclose(_length_shares(num_words[..., 0], 3), expected, atol=0.025)
    assert num_words[accepted].mean() < num_words.mean()  # the budget favours short n-grams


def test_span_lengths_follow_clipped_geometric():
    rng = np.random.default_rng(7)
    # Words of at most 2 pieces and >= 167 maskable tokens: budget 24 > 10 words * 2 pieces.
    ids, attention_mask, word_starts = _word_batch(rng, 16, 256, min_length=170, max_pieces=2)
    spec = _spec("span", cap=24, span_p=0.2, max_span_length=10)
    _, _, num_words, accepted, _, _ = _select(spec, ids, attention_mask, word_starts, 200)
    expected = 0.2 * 0.8 ** np.arange(10)
    expected /= expected.sum()
    np.testing.assert_allclose(_length_shares(num_words, 10), expected, atol=0.01)
    assert accepted[..., 0].all()
    np.testing.assert_allclose(_length_shares(num_words[..., 0], 10), expected, atol=0.03)
    assert abs(num_words[..., 0].mean() - (np.arange(1, 11) * expected).sum()) < 0.15


@pytest.mark.parametrize("kind", ("token", "span"))  # 'whole_word' and 'ngram' share span's code path
def test_per_row_keys_make_rows_independent(kind):
    rng = np.random.default_rng(8)
    ids, attention_mask, word_starts = _word_batch(rng, 6, 64)
    spec = _spec(kind, cap=8)
    mask = jax.jit(lambda keys, ids, maskable, word_starts: masking.mask_tokens(keys, ids, maskable, spec,
                                                                                  word_starts))

    def run(keys, ids, rows=slice(None)):
        maskable = masking.maskable_positions(jnp.asarray(ids), jnp.asarray(attention_mask[rows]), NUM_SPECIAL)
        return jax.tree.map(np.asarray, mask(keys, jnp.asarray(ids), maskable, jnp.asarray(word_starts[rows])))

    keys = jax.random.split(jax.random.key(3), 6)  # [batch] typed keys
    out = run(keys, ids)
    again = run(keys, ids)
    other_ids = ids.copy()
    other_ids[2, 1:attention_mask[2].sum() - 1] = rng.integers(NUM_SPECIAL, VOCAB, attention_mask[2].sum() - 2)
    changed = run(keys.at[2].set(jax.random.key(99)), other_ids)  # row 2: new key and new content
    # A row masked on its own, given as raw uint32 key data ([batch, 2]), as the trainer stores keys.
    alone = run(jax.random.key_data(keys[4:5]), ids[4:5], slice(4, 5))
    others = np.arange(6) != 2
    for name in ("input_ids", "masked_positions", "masked_lm_ids", "masked_lm_weights"):
        field = getattr(out, name)
        np.testing.assert_array_equal(field, getattr(again, name))
        np.testing.assert_array_equal(field[others], getattr(changed, name)[others])
        np.testing.assert_array_equal(field[4:5], getattr(alone, name))
    assert not np.array_equal(out.masked_positions[2], changed.masked_positions[2])
    assert len({tuple(row) for row in out.masked_positions}) == 6  # different keys, different masks
    if kind == "token":  # the budget still holds exactly with one key per row
        maskable = np.asarray(masking.maskable_positions(jnp.asarray(ids), jnp.asarray(attention_mask), NUM_SPECIAL))
        np.testing.assert_array_equal(out.masked_lm_weights.sum(-1), _budget(maskable, 8))


def test_from_config_and_errors():
    config = types.SimpleNamespace(mask_rate=0.2, mask_token_fraction=0.7, random_token_fraction=0.2,
                                   max_predictions_per_seq=30, kind="span", max_ngram=4, span_p=0.3,
                                   max_span_length=6)
    spec = masking.MaskingSpec.from_config(config, mask_id=MASK_ID, first_random_id=NUM_SPECIAL, vocab_size=VOCAB)
    assert (spec.kind, spec.max_ngram, spec.span_p, spec.max_span_length, spec.mask_rate) == ("span", 4, 0.3, 6, 0.2)
    with pytest.raises(ValueError, match="not one of"):
        _spec("words")
    ids = jnp.full((2, 8), 7, jnp.int32)
    maskable = jnp.ones((2, 8), bool)
    with pytest.raises(ValueError, match="word_starts"):
        masking.mask_tokens(jax.random.key(0), ids, maskable, _spec("whole_word", cap=2))
    with pytest.raises(ValueError, match="3 keys for a batch of 2"):
        masking.mask_tokens(jax.random.split(jax.random.key(0), 3), ids, maskable, _spec("token", cap=2))
