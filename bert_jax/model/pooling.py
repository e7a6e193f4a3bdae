"""Sentence vectors from token vectors: pooling, normalisation, and SBERT's pair features. Pure functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

POOLINGS = ("mean", "cls", "max")
_NEG = -1e9


def pool(hidden: jax.Array, attention_mask: jax.Array, mode: str) -> jax.Array:
    """[..., seq, hidden] token vectors -> [..., hidden] float32: mean or max over real tokens, or [CLS]."""
    hidden = hidden.astype(jnp.float32)
    mask = (attention_mask > 0)[..., None]
    if mode == "cls":
        return hidden[..., 0, :]
    if mode == "max":
        return jnp.max(jnp.where(mask, hidden, _NEG), axis=-2)
    if mode == "mean":
        return (hidden * mask).sum(-2) / jnp.maximum(mask.sum(-2), 1)
    raise ValueError(f"unknown pooling {mode!r}; one of {POOLINGS}")


def normalize(x: jax.Array) -> jax.Array:
    """Unit L2 norm along the last axis (zero vectors stay zero)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pair_features(embeddings: jax.Array) -> jax.Array:
    """SBERT's classification input (u, v, |u - v|) [B, 3H] of pair embeddings [B, 2, H]."""
    u, v = embeddings[:, 0].astype(jnp.float32), embeddings[:, 1].astype(jnp.float32)
    return jnp.concatenate([u, v, jnp.abs(u - v)], axis=-1)
