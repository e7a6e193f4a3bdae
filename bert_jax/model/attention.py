"""Attention masks and kernels: which keys each query sees (padding, packed instances, local windows) and the
positional terms (RoPE, ALiBi), in the form each attention kernel takes.

The einsum path takes one additive bias; `jax.nn.dot_product_attention` (XLA or cuDNN) takes sequence lengths,
a boolean mask, a local window and a bias; the splash kernel (TPU) takes segment ids and a window.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from bert_jax.errors import InputError

NEG_INF = -1e9  # additive attention bias for hidden keys; finite so fully hidden rows stay NaN-free


@flax.struct.dataclass
class AttentionMask:
    """Which keys each query may see, and the positional terms of one kind of layer, in the form the
    configured attention kernel takes.

    'xla' takes one additive `bias` that already holds padding, packing, the local window and ALiBi;
    `jax.nn.dot_product_attention` ('dot_product', 'cudnn') takes sequence lengths for suffix padding (so
    cuDNN can skip the padded blocks), a boolean `mask` for packed rows, the window as its
    `local_window_size` and ALiBi as its `bias`; 'splash' takes `segment_ids` and the window. Unused fields
    are None.
    """

    bias: jax.Array | None = None  # [batch, 1 or heads, 1 or seq, seq] float32: 0 visible, -1e9 hidden (+ ALiBi)
    mask: jax.Array | None = None  # [batch, 1, seq, seq] bool: True where query i may attend key j
    seq_lengths: jax.Array | None = None  # [batch] int32: the real tokens of each row (a prefix)
    alibi: jax.Array | None = None  # [batch, heads, seq, seq] float32, fused kernels only
    rotary: tuple[jax.Array, jax.Array] | None = None  # (cos, sin) [batch, seq, 1, head_dim] of this layer's theta
    segment_ids: jax.Array | None = None  # [batch, seq] int32, splash only: 0 padding, k >= 1 instance k
    window: int = flax.struct.field(pytree_node=False, default=0)  # keys within window // 2 of the query; 0: all


def attention_bias_from_mask(attention_mask: jax.Array) -> jax.Array:
    """[batch, seq] 1/0 mask -> [batch, 1, 1, seq] float32 additive bias that hides padding keys."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, NEG_INF).astype(jnp.float32)


def same_instance(attention_mask: jax.Array) -> jax.Array:
    """Packed rows' [batch, seq] instance ids -> [batch, 1, seq, seq] bool: query and key in the same instance.

    Real tokens see only their own instance (never padding, id 0); padding queries see only padding,
    so that no row of the attention matrix is empty. Their outputs are never used.
    """
    return (attention_mask[:, :, None] == attention_mask[:, None, :])[:, None]


def within_window(seq_length: int, window: int) -> jax.Array:
    """[1, 1, seq, seq] bool: key j is within window // 2 tokens of query i (ModernBERT's local attention)."""
    index = jnp.arange(seq_length)
    return (jnp.abs(index[:, None] - index[None, :]) <= window // 2)[None, None]


def make_attention_mask(attention_mask: jax.Array, *, packed: bool, attention_impl: str, window: int = 0,
                        alibi: jax.Array | None = None, rotary=None) -> AttentionMask:
    """attention_mask [batch, seq] (0 padding, k >= 1 instance k) -> the AttentionMask for `attention_impl`.

    `window` > 0 limits each query to the keys within window // 2 of it; `alibi` [batch, heads, seq, seq]
    and `rotary` (cos, sin) are the positional terms of the layers this mask serves.
    """
    if attention_impl == "xla":
        if not packed and not window and alibi is None:
            return AttentionMask(bias=attention_bias_from_mask(attention_mask), rotary=rotary)
        visible = same_instance(attention_mask) if packed else (attention_mask[:, None, None, :] > 0)
        if window:
            visible = visible & within_window(attention_mask.shape[1], window)
        bias = jnp.where(visible, 0.0, NEG_INF).astype(jnp.float32)
        return AttentionMask(bias=bias if alibi is None else bias + alibi, rotary=rotary)
    if attention_impl == "splash":  # padding is segment 0 there, packed or not
        segment_ids = attention_mask if packed else (attention_mask > 0)
        return AttentionMask(segment_ids=segment_ids.astype(jnp.int32), rotary=rotary, window=window)
    if packed:
        return AttentionMask(mask=same_instance(attention_mask), alibi=alibi, rotary=rotary, window=window)
    # Unpacked padding is a suffix, so a length says it all. At least 1: an all-padding row (the filler
    # rows of an evaluation batch) must not be fully masked, or cuDNN's softmax would divide by zero.
    lengths = jnp.maximum(jnp.sum(attention_mask > 0, axis=-1), 1).astype(jnp.int32)
    return AttentionMask(seq_lengths=lengths, alibi=alibi, rotary=rotary, window=window)


def fused_attention(query, key, value, attention: AttentionMask, implementation: str) -> jax.Array:
    """`jax.nn.dot_product_attention` on [batch, seq, heads, head_dim]: 'dot_product' (XLA) or 'cudnn'.

    Like the 'xla' path, the scores and softmax are float32 and the probabilities are cast to the compute
    dtype before multiplying the values.
    """
    if implementation == "cudnn":
        if jax.default_backend() != "gpu":
            raise InputError(
                f"config.model.attention_impl='cudnn' runs cuDNN's flash attention, which needs an NVIDIA GPU, "
                f"but JAX is running on {jax.default_backend()!r}; use attention_impl='dot_product' (the same "
                "fused attention through XLA, any device) or 'xla'.")
    window = (attention.window // 2, attention.window // 2) if attention.window else None
    return jax.nn.dot_product_attention(
        query, key, value, bias=attention.alibi, mask=attention.mask, query_seq_lengths=attention.seq_lengths,
        key_value_seq_lengths=attention.seq_lengths, local_window_size=window,
        implementation="cudnn" if implementation == "cudnn" else None)


def additive_bias(attention: AttentionMask, seq_length: int) -> jax.Array:
    """Any kernel's AttentionMask as the einsum path's additive bias, [batch, 1 or heads, 1 or seq, seq]."""
    if attention.bias is not None:
        return attention.bias
    if attention.mask is not None:
        visible = attention.mask
    elif attention.segment_ids is not None:
        visible = same_instance(attention.segment_ids)
    else:  # suffix padding given by lengths
        visible = (jnp.arange(seq_length) < attention.seq_lengths[:, None])[:, None, None, :]
    if attention.window:
        visible = visible & within_window(seq_length, attention.window)
    bias = jnp.where(visible, 0.0, NEG_INF).astype(jnp.float32)
    return bias if attention.alibi is None else bias + attention.alibi
