"""The encoder against a NumPy float64 re-implementation, and parameter counts against HF's."""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import heads, train
from bert_jax import model as model_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config(name):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _randomize(module, seed):
    """Replaces every parameter (biases and LayerNorm included) with random values, so none is trivially 0/1."""
    rng = np.random.default_rng(seed)
    for _, param in nnx.iter_graph(module):
        if isinstance(param, nnx.Param):
            param.set_value(jnp.asarray(rng.normal(0.0, 0.3, param.shape), jnp.float32))


def _np_layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _np_layer(p, x, mask, num_heads, eps):
    """BERT's post-LN layer in float64, written from the paper's equations."""
    f64 = lambda a: np.asarray(a, np.float64)
    dense = lambda h, d: h @ f64(d["kernel"]) + f64(d["bias"])
    batch, seq, hidden = x.shape
    head_dim = hidden // num_heads
    heads_of = lambda h: h.reshape(batch, seq, num_heads, head_dim).transpose(0, 2, 1, 3)
    att = p["attention"]
    q, k, v = (heads_of(dense(x, att[n])) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
    scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    ln1 = p["attention_layer_norm"]
    h = _np_layer_norm(x + dense(context, att["output"]), f64(ln1["scale"]), f64(ln1["bias"]), eps)
    ffn = dense(_np_gelu(dense(h, p["intermediate"])), p["output"])
    ln2 = p["output_layer_norm"]
    return _np_layer_norm(h + ffn, f64(ln2["scale"]), f64(ln2["bias"]), eps)


def test_encoder_layer_matches_numpy_float64():
    config = model_lib.BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                  num_hidden_layers=1, layer_norm_eps=1e-12)
    layer = model_lib.BertLayer(config, rngs=nnx.Rngs(0))
    _randomize(layer, seed=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 7, 32)).astype(np.float32)
    mask = np.ones((3, 7), np.int32)
    mask[1, 5:] = 0  # padding keys
    mask[2, 2:] = 0
    ours = layer(jnp.asarray(x), model_lib.attention_bias_from_mask(jnp.asarray(mask)), deterministic=True, rngs=None)
    params = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
    expected = _np_layer(params, x.astype(np.float64), mask, num_heads=4, eps=1e-12)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=2e-5, rtol=2e-5)


def test_padding_does_not_change_real_positions():
    config = model_lib.BertConfig(vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                  num_hidden_layers=2, max_position_embeddings=16)
    encoder = model_lib.BertModel(config, rngs=nnx.Rngs(0))
    ids = jnp.asarray([[2, 10, 11, 12, 3, 0, 0, 0]])
    segments = jnp.zeros_like(ids)
    padded, _ = encoder(ids, segments, (ids > 0).astype(jnp.int32))
    garbage = ids.at[0, 5:].set(jnp.asarray([40, 41, 42]))  # different tokens in the padded slots
    other, _ = encoder(garbage, segments, (ids > 0).astype(jnp.int32))
    np.testing.assert_allclose(np.asarray(padded[0, :5]), np.asarray(other[0, :5]), atol=1e-5)


@pytest.mark.parametrize("name,expected", [("bert_base", 109_482_240), ("bert_large", 335_141_888)])
def test_parameter_counts_match_hf_bert_model(name, expected):
    config = load_config(name)
    assert config.model.vocab_size == 30522
    abstract = nnx.eval_shape(lambda: model_lib.BertModel(model_lib.BertConfig.from_config(config.model),
                                                          rngs=nnx.Rngs(0)))
    assert train.parameter_count(nnx.state(abstract, nnx.Param)) == expected


def test_mlm_head_is_tied_and_only_sees_masked_positions():
    config = model_lib.BertConfig(vocab_size=40, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                  num_hidden_layers=1, max_position_embeddings=16)
    model = heads.BertForPreTraining(config, rngs=nnx.Rngs(0))
    mlm_params = nnx.to_pure_dict(nnx.state(model.mlm_head, nnx.Param))
    assert set(mlm_params) == {"dense", "layer_norm", "bias"}  # no [hidden, vocab] matrix of its own
    ids = jnp.asarray([[2, 10, 11, 12, 3, 20, 21, 3]])
    positions = jnp.asarray([[1, 6]])
    mlm_logits, nsp_logits = model(ids, jnp.zeros_like(ids), jnp.ones_like(ids), positions)
    assert mlm_logits.shape == (1, 2, 40) and nsp_logits.shape == (1, 2)
    # Changing the word embeddings changes the output projection too (tied weights).
    embedding = model.bert.embeddings.word_embeddings.embedding
    embedding.set_value(embedding[...].at[7, 0].add(1.0))  # not a constant shift: LN output sums to 0
    changed, _ = model(ids, jnp.zeros_like(ids), jnp.ones_like(ids), positions)
    assert not np.allclose(np.asarray(changed[..., 7]), np.asarray(mlm_logits[..., 7]))
