"""Rotary embeddings and ALiBi against NumPy float64 references and the papers' published slopes."""

import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.model import positions


def _rotary_reference(x, positions_, theta):
    """RoPE as HF's rotate_half: pairs (i, i + d/2) rotated by angle p * theta^(-2i/d), in float64."""
    x = np.asarray(x, np.float64)
    half = x.shape[-1] // 2
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for s in range(x.shape[1]):
            for i in range(half):
                angle = positions_[b, s] * theta ** (-2.0 * i / x.shape[-1])
                c, si = np.cos(angle), np.sin(angle)
                a, bb = x[b, s, :, i], x[b, s, :, i + half]
                out[b, s, :, i] = a * c - bb * si
                out[b, s, :, i + half] = bb * c + a * si
    return out


@pytest.mark.parametrize("theta", [10000.0, 160000.0])
def test_rotary_matches_reference_with_restarting_positions(theta):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 3, 8)).astype(np.float32)
    pos = np.array([[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 0, 1, 2, 3]])  # row 2: two packed instances
    cos, sin = positions.rotary_cos_sin(jnp.asarray(pos), 8, theta)
    got = positions.apply_rotary(jnp.asarray(x), cos, sin)
    np.testing.assert_allclose(np.asarray(got), _rotary_reference(x, pos, theta), rtol=1e-5, atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(2, 1, 1, 1, 16)).astype(np.float32)
    def score(pq, pk):
        cq, sq = positions.rotary_cos_sin(jnp.asarray([[pq]]), 16, 10000.0)
        ck, sk = positions.rotary_cos_sin(jnp.asarray([[pk]]), 16, 10000.0)
        return float(jnp.sum(positions.apply_rotary(jnp.asarray(q), cq, sq) * positions.apply_rotary(jnp.asarray(k), ck, sk)))
    assert score(3, 7) == pytest.approx(score(10, 14), rel=1e-4)
    assert score(3, 7) != pytest.approx(score(3, 8), rel=1e-3)


def test_alibi_slopes_are_the_papers():
    np.testing.assert_allclose(positions.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    # 12 heads: the 8-head slopes, then every other slope of the 16-head sequence (ALiBi's reference code)
    sixteen = [2.0 ** (-(i + 1) / 2) for i in range(16)]
    np.testing.assert_allclose(positions.alibi_slopes(12), [2.0 ** -(i + 1) for i in range(8)] + sixteen[0::2][:4])


def test_alibi_bias_is_symmetric_distance_penalty():
    pos = np.array([[0, 1, 2, 0, 1]])
    bias = np.asarray(positions.alibi_bias(jnp.asarray(pos), 4))
    slopes = positions.alibi_slopes(4)
    expected = -slopes[None, :, None, None] * np.abs(pos[:, :, None] - pos[:, None, :])[:, None]
    np.testing.assert_allclose(bias, expected, rtol=1e-6)
