"""The splash attention kernel (run in Pallas interpret mode on CPU) against NumPy float64 masked attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from bert_jax.errors import InputError
from bert_jax.model import splash

HEADS, HEAD_DIM = 2, 16


def reference_mask(segment_ids: np.ndarray, local_window: int) -> np.ndarray:
    """[batch, seq, seq] bool: same segment (padding, id 0, sees padding) and, if windowed, |i - j| <= w // 2."""
    positions = np.arange(segment_ids.shape[-1])
    visible = segment_ids[:, :, None] == segment_ids[:, None, :]
    if local_window:
        visible &= np.abs(positions[:, None] - positions[None, :]) <= local_window // 2
    return visible


def reference_attention(query, key, value, visible):
    """Masked softmax attention in float64, [batch, seq, heads, head_dim] in and out, with its probabilities."""
    query, key, value = (np.asarray(x, np.float64) for x in (query, key, value))
    scores = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(query.shape[-1])
    scores = np.where(visible[:, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, value), probs


def reference_gradients(query, key, value, visible, d_context):
    """Hand-derived backward of softmax attention: (dq, dk, dv) in float64."""
    query, key, value, d_context = (np.asarray(x, np.float64) for x in (query, key, value, d_context))
    _, probs = reference_attention(query, key, value, visible)
    scale = 1.0 / np.sqrt(query.shape[-1])
    d_value = np.einsum("bhqk,bqhd->bkhd", probs, d_context)
    d_probs = np.einsum("bqhd,bkhd->bhqk", d_context, value)
    d_scores = probs * (d_probs - (d_probs * probs).sum(-1, keepdims=True))
    d_query = np.einsum("bhqk,bkhd->bqhd", d_scores, key) * scale
    d_key = np.einsum("bhqk,bqhd->bkhd", d_scores, query) * scale
    return d_query, d_key, d_value


def packed_rows(seq_length: int) -> np.ndarray:
    """Two rows: three instances + padding, and two instances + padding (boundaries inside 128-blocks)."""
    first = np.repeat([1, 2, 3, 0], [40, 37, 30, seq_length - 107])
    second = np.repeat([1, 2, 0], [70, seq_length - 90, 20])
    return np.stack([first, second]).astype(np.int32)


def random_qkv(seq_length: int, seed: int = 0, batch: int = 2):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, seq_length, HEADS, HEAD_DIM)).astype(np.float32) for _ in range(3)]


def check_against_reference(segment_ids, local_window):
    query, key, value = random_qkv(segment_ids.shape[1])
    context = splash.splash_attention(jnp.asarray(query), jnp.asarray(key), jnp.asarray(value),
                                      jnp.asarray(segment_ids), local_window=local_window, interpret=True)
    expected, _ = reference_attention(query, key, value, reference_mask(segment_ids, local_window))
    assert context.shape == query.shape and context.dtype == jnp.float32
    assert np.isfinite(np.asarray(context)).all()
    np.testing.assert_allclose(np.asarray(context), expected, atol=1e-5, rtol=1e-5)


def test_packed_rows_with_padding():
    check_against_reference(packed_rows(128), local_window=0)


def test_local_window_crosses_segment_boundaries():
    check_against_reference(packed_rows(128), local_window=32)


def test_unpacked_rows_over_several_blocks():
    """384 tokens -> three 128-blocks, so the online softmax runs across blocks; suffix padding as the model sends."""
    lengths = np.array([300, 384])
    segment_ids = (np.arange(384)[None] < lengths[:, None]).astype(np.int32)
    check_against_reference(segment_ids, local_window=0)
    check_against_reference(segment_ids, local_window=64)


def test_gradients_match_the_reference():
    segment_ids = packed_rows(128)
    query, key, value = random_qkv(128, seed=1)
    d_context = np.random.default_rng(2).standard_normal(query.shape).astype(np.float32)
    d_context[segment_ids == 0] = 0.0  # the loss never reads padding outputs

    def loss(query, key, value):
        context = splash.splash_attention(query, key, value, jnp.asarray(segment_ids), local_window=32,
                                          interpret=True)
        return jnp.sum(context * d_context)

    grads = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(query), jnp.asarray(key), jnp.asarray(value))
    expected = reference_gradients(query, key, value, reference_mask(segment_ids, 32), d_context)
    for name, got, want in zip(("query", "key", "value"), grads, expected):
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-4, err_msg=name)


def test_bfloat16_keeps_the_compute_dtype():
    segment_ids = packed_rows(128)
    query, key, value = (jnp.asarray(x, jnp.bfloat16) for x in random_qkv(128))
    context = splash.splash_attention(query, key, value, jnp.asarray(segment_ids), interpret=True)
    expected, _ = reference_attention(query.astype(jnp.float32), key.astype(jnp.float32),
                                      value.astype(jnp.float32), reference_mask(segment_ids, 0))
    assert context.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(context, np.float32), expected, atol=3e-2)


def test_sharded_batch_runs_per_device():
    """With a mesh the kernel runs under shard_map, one row per device here, and gives the same answer."""
    mesh = Mesh(np.asarray(jax.devices()[:2]).reshape(1, 2), ("data", "fsdp"))
    segment_ids = packed_rows(128)
    query, key, value = random_qkv(128)
    context = jax.jit(lambda *args: splash.splash_attention(*args, local_window=32, interpret=True, mesh=mesh))(
        jnp.asarray(query), jnp.asarray(key), jnp.asarray(value), jnp.asarray(segment_ids))
    expected, _ = reference_attention(query, key, value, reference_mask(segment_ids, 32))
    np.testing.assert_allclose(np.asarray(context), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("local_window", [0, 32, 100])
def test_kernel_mask_is_the_reference_band(local_window):
    """The kernel's static mask, materialised, is the window band of the reference (all ones without a window)."""
    mask = splash.make_mask(256, HEADS, local_window)
    band = reference_mask(np.ones((1, 256), np.int32), local_window)[0]
    for head in range(HEADS):
        np.testing.assert_array_equal(mask[head, :, :], band)


def test_refusals():
    with pytest.raises(InputError, match="needs a TPU.*use 'dot_product'"):
        splash.check_usable(512)
    query = jnp.zeros((1, 200, HEADS, HEAD_DIM))
    with pytest.raises(InputError, match="multiple of 128.*max_seq_length to 256"):
        splash.splash_attention(query, query, query, jnp.ones((1, 200), jnp.int32), interpret=True)
    assert not splash.available()


def test_encoder_with_splash_equals_xla_on_packed_rows_with_rotary_and_local_window(monkeypatch):
    """The encoder's wiring of the kernel (segment ids from packed rows, the window, RoPE before the call), run
    in interpret mode: the same outputs as the einsum path."""
    import functools

    from flax import nnx

    from bert_jax.model import encoder

    monkeypatch.setattr(splash, "check_usable", lambda seq_length: None)
    monkeypatch.setattr(splash, "splash_attention", functools.partial(splash.splash_attention, interpret=True))
    shape = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                 norm_placement="pre", final_norm=True, ffn_activation="geglu", position_encoding="rotary",
                 local_attention_window=32, global_attention_every_n_layers=2, type_vocab_size=0,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    reference = encoder.BertModel(encoder.BertConfig(**shape), add_pooling_layer=False, rngs=nnx.Rngs(0))
    kernel = encoder.BertModel(encoder.BertConfig(**shape, attention_impl="splash"), add_pooling_layer=False,
                               rngs=nnx.Rngs(0))
    lengths = [50, 60]  # two instances and 18 padding tokens
    instance = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(18, int)])[None]
    positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(18, int)])[None]
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 50, (1, 128)))
    args = (ids, jnp.zeros_like(ids), jnp.asarray(instance))
    want, _ = reference(*args, position_ids=jnp.asarray(positions))
    got, _ = kernel(*args, position_ids=jnp.asarray(positions))
    real = instance[0] > 0
    np.testing.assert_allclose(np.asarray(got)[0, real], np.asarray(want)[0, real], rtol=2e-5, atol=2e-5)


def test_encoder_refuses_splash_off_tpu_in_one_line():
    from flax import nnx

    from bert_jax.model import encoder

    model = encoder.BertModel(encoder.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=24,
                                                 attention_probs_dropout_prob=0.0, attention_impl="splash"),
                              rngs=nnx.Rngs(0))
    ids = jnp.ones((1, 128), jnp.int32)
    with pytest.raises(InputError, match="needs a TPU") as error:
        model(ids, jnp.zeros_like(ids), jnp.ones_like(ids))
    assert "\n" not in str(error.value)
