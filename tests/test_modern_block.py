"""The block flags of config.model (encoder_flags.py): validation, and the modern blocks they build."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.model import encoder, pretraining_heads
from bert_jax.pretraining import losses
from bert_jax.runtime import parallel
from bert_jax.tools import model_stats

MODERN = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 48,
              "norm_placement": "pre", "final_norm": True, "ffn_activation": "geglu", "position_encoding": "rotary",
              "use_bias": False, "type_vocab_size": 0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.mark.parametrize("overrides, fragment", [
    ({"norm_placement": "sandwich"}, "norm_placement"),
    ({"final_norm": True}, "final_norm=True"),
    ({"local_attention_window": 7}, "even number"),
    ({"global_attention_every_n_layers": 0}, "at least 1"),
    ({"rope_theta": 0.0}, "rope_theta"),
    ({"local_attention_window": 8, "scan_layers": True}, "scan_layers"),
    ({"local_attention_window": 8, "num_hidden_groups": 1}, "num_hidden_groups"),
])
def test_bad_block_flags_are_one_line(overrides, fragment):
    config = config_lib.default_config()
    config.model.update(overrides)
    with pytest.raises(config_lib.InputError, match=fragment) as error:
        config_lib.validate(config)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_scan_equals_loop_with_a_first_layer_without_attention_norm():
    loop = encoder.BertModel(encoder.BertConfig(**MODERN), add_pooling_layer=False, rngs=nnx.Rngs(0))
    scan = encoder.BertModel(encoder.BertConfig(**MODERN, scan_layers=True), add_pooling_layer=False, rngs=nnx.Rngs(0))
    assert loop.layers[0].attention_layer_norm is None and loop.layers[1].attention_layer_norm is not None
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 97, (2, 12)))
    mask = jnp.ones_like(ids).at[1, 8:].set(0)
    a, _ = loop(ids, jnp.zeros_like(ids), mask)
    b, _ = scan(ids, jnp.zeros_like(ids), mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda m: jnp.sum(m(ids, jnp.zeros_like(ids), mask)[0] ** 2))(scan)
    assert float(jnp.abs(grads.layers[0].attention.query.kernel[...]).sum()) > 0


def _published_shape_count(c, *, gated: bool, untied: bool, positions: bool, norms_with_bias: bool) -> int:
    """Parameter count from the architecture's arithmetic, independent of the module code."""
    h, i, v, L = c.model.hidden_size, c.model.intermediate_size, c.model.vocab_size, c.model.num_hidden_layers
    norm = 2 * h if norms_with_bias else h
    bias = c.model.use_bias
    attention = 4 * h * h + (4 * h if bias else 0)
    ffn = (3 if gated else 2) * h * i + ((2 * i + h) if gated else (i + h) if bias else 0) * (1 if bias else 0)
    embeddings = v * h + (c.model.max_position_embeddings * h if positions else 0) + c.model.type_vocab_size * h
    embeddings += norm if c.model.embedding_norm else 0
    layer_norms = 2 * L - (1 if c.model.norm_placement == "pre" and c.model.embedding_norm else 0)
    final = norm if c.model.final_norm else 0
    head = h * h + (h if bias else 0) + norm + v + (v * h if untied else 0)
    return embeddings + L * (attention + ffn) + layer_norms * norm + final + head


@pytest.mark.parametrize("name, kind", [("neobert", {"gated": True, "untied": True, "positions": False, "norms_with_bias": False}),
                                        ("mosaicbert_base", {"gated": True, "untied": False, "positions": False,
                                                                 "norms_with_bias": True})])
def test_recipe_parameter_counts(name, kind):
    """NeoBERT's published ~250M and MosaicBERT-Base's 137M, from the shapes' arithmetic."""
    import importlib.util
    import pathlib

    from bert_jax.tools import model_stats

    path = pathlib.Path(__file__).parents[1] / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = config_lib.validate(module.get_config())
    counted = model_stats.parameter_breakdown(config)["total_params"]
    assert counted == _published_shape_count(config, **kind)
    published = {"neobert": 250e6, "mosaicbert_base": 137e6}[name]
    assert abs(counted - published) / published < 0.02

# ---------------------------------------------------------------------------------------------------------------
# An independent NumPy float64 forward pass of the encoder and the MLM head, written from config.py's field
# documentation and the modern-block spec (not from our modules); only the parameter values are read from the model.

def _erf(x):
    from scipy.special import erf
    return erf(x)


def _act(name, x):
    if name == "gelu":
        return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    raise ValueError(name)


def _ref_norm(x, p, kind, eps):
    """LayerNorm: (x - mean) / sqrt(var + eps) * scale [+ bias]; RMSNorm (flax nnx.RMSNorm):
    x / sqrt(mean(x^2) + eps) * scale."""
    if kind == "rmsnorm":
        assert set(p) == {"scale"}, p.keys()
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps) * p["scale"]
    mean = x.mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * p["scale"]
    return y + p["bias"] if "bias" in p else y


def _ref_dense(x, p):
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y


def _ref_alibi_slopes(n):
    """Press et al.: 2^(-8(h+1)/n) for a power of two n; else the closest lower power of two's slopes, then the
    odd-indexed... every other slope of twice that power, as ofir's reference code does."""
    def pow2(k):
        return [2.0 ** (-8.0 * (h + 1) / k) for h in range(k)]
    if n & (n - 1) == 0:
        return np.asarray(pow2(n))
    closest = 1 << (n.bit_length() - 1)
    return np.asarray(pow2(closest) + pow2(2 * closest)[0::2][: n - closest])


def _ref_rotate(x, positions, theta):
    """x [b, s, h, d] rotated by the NeoX/HF 'rotate_half' rule at `positions` [b, s]."""
    d = x.shape[-1]
    inverse = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]
    angles = positions[..., None].astype(np.float64) * inverse
    angles = np.concatenate([angles, angles], -1)[:, :, None, :]
    first, second = x[..., : d // 2], x[..., d // 2:]
    rotated = np.concatenate([-second, first], -1)
    return x * np.cos(angles) + rotated * np.sin(angles)


def _ref_visible(attention_mask, packed, window):
    """[b, s, s] bool: query i may see key j (own instance or real key; within window // 2 when windowed)."""
    mask = np.asarray(attention_mask)
    if packed:
        visible = (mask[:, :, None] == mask[:, None, :]) & (mask[:, :, None] > 0)
    else:
        visible = np.broadcast_to((mask > 0)[:, None, :], mask.shape + mask.shape[-1:])
    if window:
        index = np.arange(mask.shape[1])
        visible = visible & (np.abs(index[:, None] - index[None, :]) <= window // 2)
    return visible


def _ref_attention(x, p, m, visible, positions, theta):
    b, s, _ = x.shape
    heads = m["num_attention_heads"]
    d = m["hidden_size"] // heads
    q, k, v = (_ref_dense(x, p[name]).reshape(b, s, heads, d) for name in ("query", "key", "value"))
    if m["position_encoding"] == "rotary":
        q, k = _ref_rotate(q, positions, theta), _ref_rotate(k, positions, theta)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    if m["position_encoding"] == "alibi":
        distance = np.abs(positions[:, :, None] - positions[:, None, :])  # [b, s, s]
        scores = scores - _ref_alibi_slopes(heads)[None, :, None, None] * distance[:, None]
    # Hidden keys get exp(-1e30) = 0; a padded query that sees no key at all (never compared) stays finite.
    scores = np.where(visible[:, None], scores, -1e30)
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs = probs / probs.sum(-1, keepdims=True)
    context = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, heads * d)
    return _ref_dense(context, p["output"])


def _ref_ffn(x, p, m):
    h = _ref_dense(x, p["intermediate"])
    if m["ffn_activation"] == "gelu":
        return _ref_dense(_act(m["hidden_act"], h), p["output"])
    half = m["intermediate_size"]
    act = "silu" if m["ffn_activation"] == "swiglu" else m["hidden_act"]
    return _ref_dense(_act(act, h[..., :half]) * h[..., half:], p["output"])


def _layer_params(layers, i):
    return layers[i] if i in layers else layers[str(i)]


def ref_encoder(params, m, input_ids, segment_ids, attention_mask, position_ids=None):
    """NumPy float64 sequence output [b, s, hidden] of config `m` (a dict of BertConfig fields) with `params`
    (the encoder's pure dict). Padded query rows use the same keys as 'xla' but are never compared."""
    eps, kind = m["layer_norm_eps"], m["norm_kind"]
    packed = position_ids is not None
    b, s = input_ids.shape
    positions = np.asarray(position_ids) if packed else np.broadcast_to(np.arange(s), (b, s))
    e = params["embeddings"]
    x = e["word_embeddings"]["embedding"][input_ids]
    if m["position_encoding"] == "learned":
        x = x + e["position_embeddings"]["embedding"][positions]
    else:
        assert "position_embeddings" not in e
    if m["type_vocab_size"]:
        x = x + e["token_type_embeddings"]["embedding"][segment_ids]
    else:
        assert "token_type_embeddings" not in e
    if m["embedding_norm"]:
        x = _ref_norm(x, e["layer_norm"], kind, eps)
    else:
        assert "layer_norm" not in e
    window = m["local_attention_window"]
    for i in range(m["num_hidden_layers"]):
        p = _layer_params(params["layers"], i)
        is_global = window == 0 or i % m["global_attention_every_n_layers"] == 0
        theta = m["rope_theta"] if is_global else (m["local_rope_theta"] or m["rope_theta"])
        visible = _ref_visible(attention_mask, packed, 0 if is_global else window)
        if m["norm_placement"] == "pre":
            if i == 0 and m["embedding_norm"]:
                assert "attention_layer_norm" not in p  # ModernBERT's Identity attn_norm in layer 0
                attention_input = x
            else:
                attention_input = _ref_norm(x, p["attention_layer_norm"], kind, eps)
            x = x + _ref_attention(attention_input, p["attention"], m, visible, positions, theta)
            x = x + _ref_ffn(_ref_norm(x, p["output_layer_norm"], kind, eps), p, m)
        else:
            x = _ref_norm(x + _ref_attention(x, p["attention"], m, visible, positions, theta),
                          p["attention_layer_norm"], kind, eps)
            x = _ref_norm(x + _ref_ffn(x, p, m), p["output_layer_norm"], kind, eps)
    if m["final_norm"]:
        x = _ref_norm(x, params["final_layer_norm"], kind, eps)
    else:
        assert "final_layer_norm" not in params
    return x


def ref_mlm_logits(params, m, sequence_output, masked_positions):
    """dense -> hidden_act -> norm -> logits against the tied word embeddings or the untied decoder, + bias."""
    h = np.take_along_axis(sequence_output, masked_positions[:, :, None], axis=1)
    p = params["mlm_head"]
    h = _ref_norm(_act(m["hidden_act"], _ref_dense(h, p["dense"])), p["layer_norm"], m["norm_kind"],
                  m["layer_norm_eps"])
    table = (params["bert"]["embeddings"]["word_embeddings"]["embedding"] if m["tie_word_embeddings"]
             else p["decoder"]["embedding"])
    assert ("decoder" in p) != m["tie_word_embeddings"]
    return h @ table.T + p["bias"]


def randomize(model, seed):
    """Every parameter random (norm scales around 1, biases nonzero), so that no term hides behind an
    initial value of 0 or 1; returns the float64 pure dict of the new values."""
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(path[-1].key if hasattr(path[-1], "key") else path[-1])
        base = 1.0 if name == "scale" else 0.0
        spread = 0.3 if name in ("scale", "bias") else 0.25
        return jnp.asarray(base + spread * rng.standard_normal(leaf.shape), jnp.float32)

    new = jax.tree_util.tree_map_with_path(draw, pure)
    nnx.replace_by_pure_dict(state, new)
    nnx.update(model, state)
    return jax.tree.map(lambda a: np.asarray(a, np.float64), new)


BLOCKS = {
    # every value of every block flag appears at least once below
    "modernbert": dict(MODERN, norm_kind="layernorm", embedding_norm=True, rope_theta=160000.0,
                       local_rope_theta=10000.0, local_attention_window=4, global_attention_every_n_layers=3,
                       layer_norm_eps=1e-5),
    "neobert": {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 40, "norm_placement": "pre", "norm_kind": "rmsnorm", "ffn_activation": "swiglu",
                "position_encoding": "rotary", "embedding_norm": False, "final_norm": True,
                "tie_word_embeddings": False, "type_vocab_size": 0, "hidden_act": "gelu_tanh", "layer_norm_eps": 1e-6,
                "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "mosaicbert": {"vocab_size": 97, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 6,
                   "intermediate_size": 32, "norm_placement": "post", "ffn_activation": "geglu",
                   "position_encoding": "alibi", "use_bias": True, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0,
                   "attention_probs_dropout_prob": 0.0},
    "bert_rotary": {"vocab_size": 97, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "intermediate_size": 24, "position_encoding": "rotary", "rope_theta": 500.0,
                    "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "bert_learned_window": {"vocab_size": 97, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
                            "intermediate_size": 24, "local_attention_window": 6, "global_attention_every_n_layers": 2,
                            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
}


def _fields(block, **overrides):
    config = encoder.BertConfig(**{**block, **overrides})
    return config, dataclasses.asdict(config)


def _padded_batch(vocab, type_vocab, lengths, seq, seed):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), seq), np.int32)
    segments = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(5, vocab, length)
        if type_vocab:
            segments[row, length // 2:length] = 1
    return ids, segments, (ids > 0).astype(np.int32)


def _assert_finite(x):
    assert np.isfinite(np.asarray(x, np.float32)).all()


def random_model(block, seed, **overrides):
    """A BertForPreTraining ('mlm') built abstractly (no eager init) and filled with `randomize`'s values."""
    config, m = _fields(block, **overrides)
    model = nnx.eval_shape(lambda: pretraining_heads.BertForPreTraining(config, objective="mlm", rngs=nnx.Rngs(0)))
    return model, randomize(model, seed), m


@nnx.jit
def _forward(model, ids, segments, mask, masked_positions, position_ids=None):
    hidden, _ = model.bert(ids, segments, mask, position_ids=position_ids)
    return hidden, model.mlm_head(hidden, masked_positions, model.bert.embeddings.word_embeddings)


def forward(model, ids, segments, mask, masked_positions, position_ids=None):
    as_jax = lambda a: None if a is None else jnp.asarray(a)
    hidden, logits = _forward(model, *map(as_jax, (ids, segments, mask, masked_positions, position_ids)))
    return np.asarray(hidden), np.asarray(logits)


# Each configuration runs once by default, through the kernel that stresses it more; the other kernel is `-m slow`.
_FAST = {("modernbert", "xla"), ("neobert", "xla"), ("mosaicbert", "dot_product"), ("bert_rotary", "xla"),
         ("bert_learned_window", "dot_product")}
_REFERENCE_CASES = [pytest.param(name, impl, marks=[] if (name, impl) in _FAST else [pytest.mark.slow])
                    for name in sorted(BLOCKS) for impl in ("xla", "dot_product")]


@pytest.mark.parametrize("name, impl", _REFERENCE_CASES)
def test_encoder_and_mlm_head_match_a_numpy_float64_reference(name, impl):
    model, params, m = random_model(BLOCKS[name], seed=sorted(BLOCKS).index(name), attention_impl=impl)
    lengths, seq = (16, 9, 3), 16  # one row at full length, two padded
    ids, segments, mask = _padded_batch(m["vocab_size"], m["type_vocab_size"], lengths, seq, seed=2)
    masked_positions = np.asarray([[1, 5, 15], [0, 4, 8], [0, 1, 2]], np.int32)
    hidden, logits = forward(model, ids, segments, mask, masked_positions)
    _assert_finite(hidden)  # padded positions included
    _assert_finite(logits)
    want = ref_encoder(params["bert"], m, ids, segments, mask)
    real = mask > 0
    np.testing.assert_allclose(hidden[real], want[real], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(logits, ref_mlm_logits(params, m, want, masked_positions), rtol=2e-5, atol=5e-5)


def _packed_rows(vocab, type_vocab, rows, seq, seed):
    """rows: per packed row, its instances' lengths. Returns the packed batch (ids, segments, instance ids,
    position_ids) and the same instances one per padded row (ids, segments, mask), in order."""
    rng = np.random.default_rng(seed)
    packed = [np.zeros((len(rows), seq), np.int32) for _ in range(4)]
    alone = [np.zeros((sum(map(len, rows)), seq), np.int32) for _ in range(3)]
    instance = 0
    for row, lengths in enumerate(rows):
        start = 0
        for k, length in enumerate(lengths):
            ids = rng.integers(5, vocab, length)
            segments = (np.arange(length) >= length // 2).astype(np.int32) if type_vocab else np.zeros(length, np.int32)
            span = slice(start, start + length)
            packed[0][row, span], packed[1][row, span], packed[2][row, span] = ids, segments, k + 1
            packed[3][row, span] = np.arange(length)
            alone[0][instance, :length], alone[1][instance, :length], alone[2][instance, :length] = ids, segments, 1
            instance, start = instance + 1, start + length
    return packed, alone


# By default the case with the most at stake (window, rotary, the fused kernel's boolean mask); the rest `-m slow`.
_PACKED_CASES = [("modernbert", "dot_product")] + [pytest.param(name, impl, marks=pytest.mark.slow) for name, impl in
                                                  (("modernbert", "xla"), ("mosaicbert", "dot_product"),
                                                   ("mosaicbert", "xla"))]


@pytest.mark.parametrize("name, impl", _PACKED_CASES)
def test_packed_instances_equal_each_instance_alone(name, impl):
    """attention_mask = instance ids, position_ids restarting per instance (the encoder's documented packed
    form) give each token what its instance alone in a padded row gives, and what the reference gives."""
    model, params, m = random_model(BLOCKS[name], seed=7, attention_impl=impl)
    rows, seq = [(5, 7, 4), (9, 8)], 20  # two packed rows with 3 and 2 instances, padding at the end
    (ids, segments, instances, position_ids), (alone_ids, alone_segments, alone_mask) = _packed_rows(
        m["vocab_size"], m["type_vocab_size"], rows, seq, seed=3)
    no_predictions = np.zeros((len(rows), 1), np.int32)
    packed_hidden, _ = forward(model, ids, segments, instances, no_predictions, position_ids)
    alone_hidden, _ = forward(model, alone_ids, alone_segments, alone_mask, np.zeros((5, 1), np.int32))
    _assert_finite(packed_hidden)
    instance = 0
    for row, lengths in enumerate(rows):
        start = 0
        for length in lengths:
            np.testing.assert_allclose(packed_hidden[row, start:start + length], alone_hidden[instance, :length],
                                       rtol=2e-5, atol=2e-5)
            instance, start = instance + 1, start + length
    want = ref_encoder(params["bert"], m, ids, segments, instances, position_ids)
    real = instances > 0
    np.testing.assert_allclose(packed_hidden[real], want[real], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", ["xla", "dot_product"])
def test_local_window_attention_equals_a_dense_reference_mask(impl):
    """BertSelfAttention through make_attention_mask's window, with padding and with packing, against
    softmax over the keys with |i - j| <= w // 2 (w beyond the row: global)."""
    fields = {"vocab_size": 11, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 8, "attention_impl": impl, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0}
    config, m = _fields(fields)
    attention = nnx.eval_shape(lambda: encoder.BertSelfAttention(config, rngs=nnx.Rngs(0)))
    params = randomize(attention, seed=4)
    seq = 14
    x = np.random.default_rng(5).standard_normal((2, seq, 16)).astype(np.float32)
    padded = np.asarray([[1] * seq, [1] * 9 + [0] * 5], np.int32)
    packed = np.asarray([[1] * 6 + [2] * 8, [1] * 3 + [2] * 5 + [3] * 4 + [0] * 2], np.int32)

    def run(attention, x, mask, packed, window):  # eager: cheaper than one compilation per case at this size
        masks = encoder.make_attention_mask(mask, packed=packed, attention_impl=impl, window=window)
        return attention(x, masks, deterministic=True, rngs=None)

    for mask, is_packed in ((padded, False), (packed, True)):
        for window in (2, 6, 40):
            got = np.asarray(run(attention, jnp.asarray(x), jnp.asarray(mask), is_packed, window))
            want = _ref_attention(x.astype(np.float64), params, m, _ref_visible(mask, is_packed, window),
                                  None, None)
            real = mask > 0
            _assert_finite(got)
            np.testing.assert_allclose(got[real], want[real], rtol=2e-5, atol=2e-5,
                                       err_msg=f"packed={is_packed} window={window}")


def test_within_window_equals_an_explicit_loop():
    for seq, window in ((1, 2), (5, 2), (12, 4), (12, 6), (9, 30)):
        want = np.asarray([[abs(i - j) <= window // 2 for j in range(seq)] for i in range(seq)])
        np.testing.assert_array_equal(np.asarray(encoder.within_window(seq, window))[0, 0], want)


def _set_params(model, pure):
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), pure))
    nnx.update(model, state)


@nnx.jit
def _mlm_loss_grads(model, ids, segments, mask, masked_positions, labels):
    def loss(model):
        logits, _ = model(ids, segments, mask, masked_positions)
        return losses.weighted_cross_entropy(logits, labels, jnp.ones(labels.shape))[0]
    return nnx.grad(loss)(model)


@pytest.mark.parametrize("tied", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_untied_decoder_owns_the_output_matrix(tied):
    """Untied: the logits are read from mlm_head.decoder, the word embeddings reach them only through the
    encoder's input, and the MLM gradient reaches the decoder. Tied (the contrast): rows the input never uses
    still move the logits and get gradient, through the output matmul."""
    model, params, m = random_model(BLOCKS["neobert"], seed=11, tie_word_embeddings=tied)
    ids, segments, mask = _padded_batch(40, 0, (12, 7), 12, seed=6)  # ids < 40: rows 40.. never in the input
    masked_positions = np.asarray([[0, 3, 11], [1, 2, 6]], np.int32)
    _, logits = forward(model, ids, segments, mask, masked_positions)

    unused_rows = jax.tree.map(lambda a: a.copy(), params)
    unused_rows["bert"]["embeddings"]["word_embeddings"]["embedding"][40:] += 1.0
    _set_params(model, unused_rows)
    _, moved = forward(model, ids, segments, mask, masked_positions)
    if tied:
        assert np.abs(moved - logits)[..., 40:].min() > 0  # only the changed rows' own logits move
        np.testing.assert_array_equal(moved[..., :40], logits[..., :40])
    else:
        np.testing.assert_array_equal(moved, logits)
        new_decoder = jax.tree.map(lambda a: a.copy(), params)
        new_decoder["mlm_head"]["decoder"]["embedding"] = np.random.default_rng(1).standard_normal(
            new_decoder["mlm_head"]["decoder"]["embedding"].shape)
        _set_params(model, new_decoder)
        hidden, changed = forward(model, ids, segments, mask, masked_positions)
        assert np.abs(changed - logits).max() > 0.1
        np.testing.assert_allclose(changed, ref_mlm_logits(new_decoder, m, hidden.astype(np.float64),
                                                           masked_positions), rtol=2e-5, atol=5e-5)
    _set_params(model, params)
    grads = _mlm_loss_grads(model, *map(jnp.asarray, (ids, segments, mask, masked_positions, ids[:, :3])))
    word_grad = np.asarray(grads.bert.embeddings.word_embeddings.embedding[...])
    if tied:
        assert "decoder" not in grads.mlm_head and np.abs(word_grad[40:]).min() > 0
    else:
        assert np.abs(np.asarray(grads.mlm_head.decoder.embedding[...])).min() > 0  # every row is a softmax column
        assert not word_grad[40:].any() and np.abs(word_grad[5:40]).sum() > 0


@pytest.mark.parametrize("embedding_size", [0, 16])
def test_untied_decoder_adds_exactly_vocab_times_embedding_width_parameters(embedding_size):
    counts = {}
    for tied in (True, False):
        config = config_lib.default_config()
        config.objective = "mlm"
        config.model.update(dict(BLOCKS["neobert"], tie_word_embeddings=tied, embedding_size=embedding_size))
        counts[tied] = model_stats.parameter_breakdown(config), _count_params(config)
    extra = BLOCKS["neobert"]["vocab_size"] * (embedding_size or BLOCKS["neobert"]["hidden_size"])
    assert counts[False][1] - counts[True][1] == extra
    assert counts[False][0]["total_params"] - counts[True][0]["total_params"] == extra
    assert counts[False][0]["mlm_head"] - counts[True][0]["mlm_head"] == extra
    assert counts[False][0]["encoder_params"] == counts[True][0]["encoder_params"]


def _count_params(config):
    model = nnx.eval_shape(lambda: pretraining_heads.BertForPreTraining(
        encoder.BertConfig.from_config(config.model), objective=config.objective, rngs=nnx.Rngs(0)))
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_parameter_breakdown_counts_every_parameter(name):
    config = config_lib.default_config()
    config.objective = "mlm"
    config.model.update(BLOCKS[name])
    assert model_stats.parameter_breakdown(config)["total_params"] == _count_params(config)


# ---------------------------------------------------------------------------------------------------------------
# Training with a modern block: the train step (test_steps.py's helpers) and the in-process loop (test_loop.py's).

MODERN_TRAIN = {"norm_placement": "pre", "final_norm": True, "ffn_activation": "geglu", "position_encoding": "rotary",
                "use_bias": False, "type_vocab_size": 0, "local_attention_window": 8,
                "global_attention_every_n_layers": 2, "rope_theta": 160000.0, "local_rope_theta": 10000.0,
                "tie_word_embeddings": False, "attention_impl": "dot_product", "attention_probs_dropout_prob": 0.0}


def _modern_step_config(**model):
    from test_steps import tiny_config
    config = tiny_config(warmup_steps=0, optimizer="stable_adamw", schedule="wsd", decay_steps=5)
    config.objective = "mlm"
    config.model.update({**MODERN_TRAIN, **model})
    config.masking.mask_rate = 0.3
    return config_lib.validate(config)


def _steps(config, num_steps):
    from test_steps import build, synthetic_batch
    mesh, state, step = build(config, 1)
    before = jax.device_get(state.params)
    losses_seen = []
    for seed in range(num_steps):
        batch = parallel.to_global_batch(synthetic_batch(np.random.default_rng(seed)), parallel.batch_sharding(mesh))
        state, metrics = step(state, batch)
        losses_seen.append(float(metrics["loss"]))
    return before, jax.device_get(state.params), losses_seen


def test_a_modern_train_step_is_finite_and_updates_every_parameter():
    """StableAdamW + WSD on a ModernBERT-like block with an untied decoder: every parameter (decoder, final norm,
    layer 0 without attention norm) gets an update, and the loss is finite."""
    before, after, seen = _steps(_modern_step_config(), 1)
    assert np.isfinite(seen).all()
    assert "decoder" in after["mlm_head"] and "final_layer_norm" in after["bert"]
    for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after), strict=True):
        assert np.isfinite(new).all() and not np.array_equal(old, new), jax.tree_util.keystr(path)


@pytest.mark.slow
def test_a_modern_block_without_the_gather_and_in_bfloat16_trains_finitely():
    """gather_masked_positions=False gives the gathered path's losses (float32); bfloat16 stays finite."""
    _, _, gathered = _steps(_modern_step_config(), 3)
    _, _, ungathered = _steps(_modern_step_config(gather_masked_positions=False), 3)
    np.testing.assert_allclose(ungathered, gathered, rtol=2e-5)
    _, after, half = _steps(_modern_step_config(dtype="bfloat16", gather_masked_positions=False), 3)
    assert np.isfinite(half).all() and all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(after))
    assert abs(half[0] - gathered[0]) < 0.05 * gathered[0]  # the same model, in 16-bit


@pytest.mark.slow  # two in-process runs of 12 steps with evaluation and checkpoints: about a minute on shared cores
def test_a_modern_run_learns_and_resumes_bitwise(tmp_path, corpus_file, small_tokenizer):
    """A ModernBERT-like tiny model through loop.train_and_evaluate with StableAdamW, WSD and 30% masking: the
    loss falls, and a restart from the step-6 checkpoint reproduces step 12's parameters and losses exactly."""
    import os
    import shutil

    from test_loop import _metrics, _restore_params, _small_config

    from bert_jax.pretraining import loop
    from bert_jax.runtime import checkpoint as checkpoint_lib

    def config():
        c = _small_config(corpus_file, "", small_tokenizer.model_path, num_steps=12)
        c.objective = "mlm"
        c.data.instance_format = "full_sentences"
        c.model.update({**MODERN_TRAIN, "num_attention_heads": 2, "hidden_dropout_prob": 0.1})
        c.masking.update({"mask_rate": 0.3, "max_predictions_per_seq": 20})
        c.train.update({"optimizer": "stable_adamw", "schedule": "wsd", "decay_steps": 4, "decay_shape": "1-sqrt",
                        "learning_rate": 3e-3, "eval_every_steps": 6})
        c.checkpoint.every_steps = 6
        return c

    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config(), workdir)
    first_run = _metrics(workdir, "train")
    train_losses = [m["loss"] for m in first_run]
    assert np.isfinite(train_losses).all()
    assert np.mean(train_losses[-3:]) < np.mean(train_losses[:3]) - 0.25, train_losses
    uninterrupted = _restore_params(workdir, 12, config())
    shutil.rmtree(os.path.join(checkpoint_lib.checkpoint_dir(workdir), "12"))
    loop.train_and_evaluate(config(), workdir)
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(_restore_params(workdir, 12, config())),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    second_run = _metrics(workdir, "train")
    assert [m["step"] for m in second_run] == list(range(1, 13))
    assert [m["loss"] for m in second_run] == train_losses


# ---------------------------------------------------------------------------------------------------------------
# Hostile configurations: each refusal is one line naming the field; the combinations that must work, work.

def _validated(overrides, section="model"):
    import ml_collections
    values = config_lib.default_config().to_dict()  # a dict, so that wrong types reach the schema check
    values[section].update(overrides)
    return config_lib.validate(ml_collections.ConfigDict(values))


@pytest.mark.parametrize("overrides, fragment", [
    ({"local_attention_window": -2}, "local_attention_window must be 0"),
    ({"global_attention_every_n_layers": -1}, "at least 1"),
    ({"rope_theta": -5.0}, "rope_theta must be positive"),
    ({"rope_theta": float("nan")}, "rope_theta must be positive"),
    ({"local_rope_theta": -1.0}, "local_rope_theta"),
    ({"norm_placement": "PRE"}, "norm_placement='PRE' is not one of"),
    ({"norm_kind": "batchnorm"}, "norm_kind"),
    ({"ffn_activation": "relu"}, "ffn_activation"),
    ({"position_encoding": "none"}, "position_encoding"),
    ({"final_norm": True, "norm_placement": "post"}, "final_norm=True"),
    ({"norm_placement": 1}, "norm_placement=1 is of type int"),
    ({"final_norm": "yes"}, "final_norm='yes' is of type str"),
    ({"embedding_norm": 0}, "embedding_norm=0 is of type int"),
    ({"tie_word_embeddings": "False"}, "tie_word_embeddings='False' is of type str"),
    ({"use_bias": None}, "use_bias=None is of type NoneType"),
    ({"local_attention_window": 4.0}, "local_attention_window=4.0 is of type float"),
    ({"global_attention_every_n_layers": True}, "global_attention_every_n_layers=True is of type bool"),
    ({"rope_theta": "1e4"}, "rope_theta='1e4' is of type str"),
    ({"position_encoding": "alibi", "attention_impl": "splash", "attention_probs_dropout_prob": 0.0},
     "splash kernel does not take"),
])
def test_hostile_block_flags_are_refused_in_one_line(overrides, fragment):
    with pytest.raises(config_lib.InputError, match=fragment) as error:
        _validated(overrides)
    assert "\n" not in str(error.value)


def test_rotary_refuses_an_odd_head_dim():
    with pytest.raises(config_lib.InputError, match="head") as error:
        _validated({"position_encoding": "rotary", "hidden_size": 30, "num_attention_heads": 2})
    assert "\n" not in str(error.value)
    with pytest.raises(config_lib.InputError):
        encoder.BertConfig(hidden_size=30, num_attention_heads=2, position_encoding="rotary")


@pytest.mark.parametrize("overrides", [
    {"local_attention_window": 1024},  # wider than max_seq_length: every layer sees the whole row
    {"local_attention_window": 8, "global_attention_every_n_layers": 100},  # only layer 0 global
    {"rope_theta": 100000},  # an int where a float is expected
    {"norm_kind": "rmsnorm", "use_bias": True},  # RMSNorm simply has no bias
    {"position_encoding": "rotary", "embedding_size": 16},  # ALBERT factorization with RoPE
    {"norm_placement": "pre", "final_norm": True, "num_hidden_groups": 1},  # ALBERT sharing, pre-norm
])
def test_legal_block_combinations_are_accepted(overrides):
    _validated(overrides)


def test_a_local_window_with_packed_rows_is_accepted():
    config = config_lib.default_config()
    config.model.local_attention_window = 8
    config.data.pack_sequences = True
    config.masking.max_predictions_per_seq = 76
    config_lib.validate(config)


@pytest.mark.slow  # the attention-level case (window 40 on 14 tokens) runs by default
def test_a_window_wider_than_the_row_is_global_attention():
    block = BLOCKS["bert_learned_window"]
    ids, segments, mask = _padded_batch(block["vocab_size"], 2, (12, 7), 12, seed=8)
    positions = np.zeros((2, 1), np.int32)
    model, params, m = random_model(block, seed=9, local_attention_window=64)
    hidden, _ = forward(model, ids, segments, mask, positions)
    want = ref_encoder(params["bert"], dict(m, local_attention_window=0), ids, segments, mask)
    np.testing.assert_allclose(hidden[mask > 0], want[mask > 0], rtol=2e-5, atol=2e-5)
