"""The component mixture: exact per-epoch counts, rates q_i proportional to p_i^alpha, full coverage of
subsampled components across epochs, and a stream that is a pure function of (seed, position)."""

import pickle

import grain
import numpy as np
import pytest

from bert_jax.data import mixture


def _stream(mix, start, stop):
    return [mix.locate(p) for p in range(start, stop)]


def test_alpha_weights_by_hand():
    # p = (0.9, 0.09, 0.01); alpha 0.5: q proportional to sqrt(p).
    q = mixture.alpha_weights([900, 90, 10], 0.5)
    reference = np.sqrt([0.9, 0.09, 0.01]) / np.sqrt([0.9, 0.09, 0.01]).sum()
    np.testing.assert_allclose(q, reference, rtol=1e-12)
    np.testing.assert_allclose(mixture.alpha_weights([900, 90, 10], 1.0), [0.9, 0.09, 0.01])
    np.testing.assert_allclose(mixture.alpha_weights([900, 90, 10], 0.0), [1 / 3] * 3)
    with pytest.raises(ValueError):
        mixture.alpha_weights([5, 0], 0.7)


def test_slot_counts_largest_remainder():
    # 0.5, 0.3, 0.2 of 7: exact 3.5, 2.1, 1.4 -> floors 3, 2, 1 and the one left goes to the largest remainder.
    assert mixture.slot_counts([0.5, 0.3, 0.2], 7).tolist() == [4, 2, 1]
    assert mixture.slot_counts([1, 1, 1], 10).tolist() == [4, 3, 3]  # a tie goes to the earlier component
    for weights, slots in (([0.2, 0.3, 0.5], 1), ([1e-6, 1, 3], 999), ([3, 3, 3, 1], 101)):
        counts = mixture.slot_counts(weights, slots)
        assert counts.sum() == slots
        assert np.abs(counts - np.asarray(weights) / np.sum(weights) * slots).max() < 1


def test_every_epoch_has_exactly_its_counts_and_rates_match_q():
    sizes, alpha = [700, 250, 40, 10], 0.7
    q = mixture.alpha_weights(sizes, alpha)
    mix = mixture.Mixture(sizes, q, seed=3)
    assert len(mix) == 1000
    drawn = np.asarray([c for c, _, _ in _stream(mix, 0, 20 * len(mix))]).reshape(20, len(mix))
    for epoch in drawn:
        assert np.bincount(epoch, minlength=4).tolist() == mix.counts.tolist()
    rates = np.bincount(drawn.ravel(), minlength=4) / drawn.size
    np.testing.assert_allclose(rates, q, atol=1 / len(mix))
    # the low-resource components are sampled above their share, the largest below it
    shares = np.asarray(sizes) / sum(sizes)
    assert rates[0] < shares[0] and (rates[2:] > shares[2:]).all()
    # the order within an epoch is shuffled, and differently each epoch
    assert not (drawn[0] == np.sort(drawn[0])).all()
    assert not (drawn[0] == drawn[1]).all()


def test_a_subsampled_component_sees_every_instance_before_any_repeats():
    sizes = [1000, 30]
    mix = mixture.Mixture(sizes, mixture.alpha_weights(sizes, 0.3), seed=0)
    big_per_epoch = int(mix.counts[0])
    assert big_per_epoch < 1000  # subsampled: one epoch cannot cover it
    epochs = -(-1000 // big_per_epoch)
    big = [(local, visit) for c, local, visit in _stream(mix, 0, epochs * len(mix)) if c == 0]
    first_pass = [local for local, visit in big if visit == 0]
    assert sorted(first_pass) == list(range(1000))  # every instance once, none twice
    assert all(visit <= 1 for _, visit in big)
    # the upsampled component repeats whole passes: after p passes each instance has appeared p times
    small = [local for c, local, _ in _stream(mix, 0, len(mix)) if c == 1]
    passes, rest = divmod(len(small), 30)
    counts = np.bincount(small, minlength=30)
    assert passes >= 2 and sorted(counts.tolist()) == [passes] * (30 - rest) + [passes + 1] * rest


def test_the_stream_is_a_pure_function_of_seed_and_position():
    sizes, weights = [50, 20, 5], [0.5, 0.3, 0.2]
    mix = mixture.Mixture(sizes, weights, seed=7)
    reference = _stream(mix, 0, 300)
    assert _stream(mixture.Mixture(sizes, weights, seed=7), 0, 300) == reference
    assert _stream(pickle.loads(pickle.dumps(mix)), 0, 300) == reference
    assert [mix.locate(p) for p in range(299, 149, -1)] == reference[150:][::-1]  # random access, any order
    assert _stream(mixture.Mixture(sizes, weights, seed=8), 0, 300) != reference
    for component, local, visit in reference:
        assert 0 <= local < sizes[component] and visit >= 0


class _Locate(grain.transforms.MapWithIndex):
    def __init__(self, mix):
        self._mix = mix

    def map_with_index(self, index, _):
        return np.asarray(self._mix.locate(index))


def test_a_grain_iterator_restored_mid_epoch_continues_the_same_stream():
    mix = mixture.Mixture([40, 9, 3], mixture.alpha_weights([40, 9, 3], 0.7), seed=1)
    dataset = grain.MapDataset.range(len(mix)).repeat().map_with_index(_Locate(mix)).batch(4).to_iter_dataset()
    iterator = iter(dataset)
    for _ in range(7):  # 28 of 52 slots: mid-epoch
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(20)]  # runs into the next epochs
    restored = iter(dataset)
    restored.set_state(state)
    for want, got in zip(expected, (next(restored) for _ in range(20))):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(expected[0][0], mix.locate(28))


@pytest.mark.parametrize("size", [1, 2, 3, 17, 64, 1000, 4099])
def test_permuted_is_a_permutation_that_depends_on_its_keys(size):
    keys = mixture._round_keys(5, size)
    image = [mixture.permuted(i, size, keys) for i in range(size)]
    assert sorted(image) == list(range(size))
    if size >= 17:
        assert image != list(range(size))
        assert image != [mixture.permuted(i, size, mixture._round_keys(6, size)) for i in range(size)]


def test_a_component_rounding_to_no_slot_is_refused_by_name():
    """A positive weight whose share of an epoch rounds to 0 would never be drawn: `starved` finds it and the
    pipeline refuses it in one line, naming it and the fix."""
    from bert_jax.config import InputError
    from bert_jax.data import pipeline

    mix = mixture.Mixture([1000, 5, 500], [0.6999, 0.0001, 0.3], seed=0)
    assert mix.counts.tolist()[1] == 0 and mix.starved() == [1]
    assert mixture.Mixture([1000, 5], [0.5, 0.5], seed=0).starved() == []
    with pytest.raises(InputError, match=r"'tlm' would get no row in an epoch of 1,505 rows .*; raise it"):
        pipeline.check_not_starved(mix, ["en", "tlm", "ru"], "raise it")
