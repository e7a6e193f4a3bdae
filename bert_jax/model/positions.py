"""Relative position encodings applied inside attention: rotary embeddings (RoPE) and ALiBi biases.

Both take each token's position explicitly, so packed rows (positions restart in every instance) and TLM's
pairs (the target's restart) get the positions the learned table would give them. Pure jnp, float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def rotary_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """positions [b, seq] ints -> (cos, sin), each [b, seq, 1, head_dim] float32.

    Frequencies theta^(-2i/d) for i < d/2, repeated for the two halves of a head: the "rotate half"
    (GPT-NeoX) layout that HF's ModernBERT, NeoBERT and Llama use, so weights move between them unchanged.
    """
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    inverse_frequencies = jnp.asarray(1.0 / theta ** exponents, jnp.float32)  # [head_dim / 2]
    angles = positions.astype(jnp.float32)[..., None] * inverse_frequencies  # [b, seq, head_dim / 2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [b, seq, 1, head_dim]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [b, seq, heads, head_dim] rotated by its tokens' angles; computed in float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    first, second = jnp.split(x32, 2, axis=-1)
    rotated_half = jnp.concatenate([-second, first], axis=-1)
    return (x32 * cos + rotated_half * sin).astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi's per-head slopes (Press et al. 2022): the geometric sequence 2^(-8/n), 2^(-16/n), ... for a power
    of two n; otherwise those of the nearest lower power of two, then every other slope of the next one up."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return np.asarray(power_of_two(num_heads))
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = alibi_slopes(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(power_of_two(closest) + list(extra))


def alibi_bias(positions: jax.Array, num_heads: int) -> jax.Array:
    """positions [b, seq] -> the additive attention bias -slope_h * |p_i - p_j|, [b, heads, seq, seq] float32.

    Symmetric in i and j, as MosaicBERT's bidirectional ALiBi (the causal original only looks back).
    """
    distance = jnp.abs(positions[:, :, None] - positions[:, None, :]).astype(jnp.float32)  # [b, seq, seq]
    slopes = jnp.asarray(alibi_slopes(num_heads), jnp.float32)
    return -slopes[None, :, None, None] * distance[:, None]
