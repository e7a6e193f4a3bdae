"""The encoder against a NumPy float64 re-implementation, and parameter counts against HF's."""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.model import encoder, pretraining_heads
from bert_jax.pretraining import steps as steps_lib

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
    config = encoder.BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                  num_hidden_layers=1, layer_norm_eps=1e-12)
    layer = encoder.BertLayer(config, rngs=nnx.Rngs(0))
    _randomize(layer, seed=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 7, 32)).astype(np.float32)
    mask = np.ones((3, 7), np.int32)
    mask[1, 5:] = 0  # padding keys
    mask[2, 2:] = 0
    ours = layer(jnp.asarray(x), encoder.attention_bias_from_mask(jnp.asarray(mask)), deterministic=True, rngs=None)
    params = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
    expected = _np_layer(params, x.astype(np.float64), mask, num_heads=4, eps=1e-12)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=2e-5, rtol=2e-5)


def test_padding_does_not_change_real_positions():
    config = encoder.BertConfig(vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                  num_hidden_layers=2, max_position_embeddings=16)
    bert = encoder.BertModel(config, rngs=nnx.Rngs(0))
    ids = jnp.asarray([[2, 10, 11, 12, 3, 0, 0, 0]])
    segments = jnp.zeros_like(ids)
    padded, _ = bert(ids, segments, (ids > 0).astype(jnp.int32))
    garbage = ids.at[0, 5:].set(jnp.asarray([40, 41, 42]))  # different tokens in the padded slots
    other, _ = bert(garbage, segments, (ids > 0).astype(jnp.int32))
    np.testing.assert_allclose(np.asarray(padded[0, :5]), np.asarray(other[0, :5]), atol=1e-5)


@pytest.mark.parametrize("name,expected", [("bert_mini", 11_170_560), ("bert_small", 28_763_648),
                                           ("bert_base", 109_482_240), ("bert_large", 335_141_888)])
def test_parameter_counts_match_hf_bert_model(name, expected):
    config = load_config(name)
    assert config.model.vocab_size == 30522
    abstract = nnx.eval_shape(lambda: encoder.BertModel(encoder.BertConfig.from_config(config.model),
                                                          rngs=nnx.Rngs(0)))
    assert steps_lib.parameter_count(nnx.state(abstract, nnx.Param)) == expected


def test_mlm_head_is_tied_and_only_sees_masked_positions():
    config = encoder.BertConfig(vocab_size=40, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                  num_hidden_layers=1, max_position_embeddings=16)
    model = pretraining_heads.BertForPreTraining(config, rngs=nnx.Rngs(0))
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


@pytest.mark.parametrize("name,expected", [
    ("albert_base", 11_683_584), ("albert_large", 17_683_968), ("albert_xlarge", 58_724_864),
    ("albert_xxlarge", 222_595_584), ("roberta_base", 124_645_632), ("roberta_large", 355_359_744)])
def test_recipe_encoder_counts_match_hf(name, expected):
    """Encoder (embeddings, layers, pooler) counts of HF's AlbertModel / RobertaModel with these settings."""
    config = load_config(name)
    abstract = nnx.eval_shape(lambda: encoder.BertModel(encoder.BertConfig.from_config(config.model),
                                                          rngs=nnx.Rngs(0)))
    assert steps_lib.parameter_count(nnx.state(abstract, nnx.Param)) == expected


def _shared_config(num_layers, groups=1):
    return encoder.BertConfig(vocab_size=60, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                num_hidden_layers=num_layers, max_position_embeddings=16, embedding_size=8,
                                num_hidden_groups=groups)


def test_shared_layers_are_one_parameter_set_applied_repeatedly():
    shared = encoder.BertModel(_shared_config(6), rngs=nnx.Rngs(0))
    shallow = encoder.BertModel(_shared_config(1), rngs=nnx.Rngs(0))
    # Depth adds no parameters when all layers share one set of weights.
    assert (steps_lib.parameter_count(nnx.state(shared, nnx.Param))
            == steps_lib.parameter_count(nnx.state(shallow, nnx.Param)))
    ids = jnp.asarray([[2, 10, 11, 12, 3, 20, 21, 3, 0, 0]])
    mask = (ids > 0).astype(jnp.int32)
    out, _ = shared(ids, jnp.zeros_like(ids), mask)
    # Reference: the one layer applied six times in a Python loop.
    hidden = shared.embeddings(ids, jnp.zeros_like(ids), deterministic=True, rngs=None)
    layer = shared.layer_groups[0].layer
    for _ in range(6):
        hidden = layer(hidden, encoder.attention_bias_from_mask(mask), deterministic=True, rngs=None)
    np.testing.assert_allclose(np.asarray(out), np.asarray(hidden), atol=1e-5)


def test_groups_share_within_and_differ_across():
    grouped = encoder.BertModel(_shared_config(6, groups=2), rngs=nnx.Rngs(0))
    assert len(grouped.layer_groups) == 2 and grouped.layer_groups[0].num_repeats == 3
    a = grouped.layer_groups[0].layer.intermediate.kernel[...]
    b = grouped.layer_groups[1].layer.intermediate.kernel[...]
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_shared_depth_does_not_grow_the_compiled_program():
    """With sharing the layer is traced once inside a scan: 24 layers lower to the same program size as 12."""
    def hlo_size(num_layers):
        config = _shared_config(num_layers)
        graphdef, state = nnx.split(encoder.BertModel(config, rngs=nnx.Rngs(0)))
        ids = jnp.ones((2, 8), jnp.int32)
        fn = jax.jit(lambda s: nnx.merge(graphdef, s)(ids, ids * 0, ids)[0])
        return len(fn.lower(state).as_text())
    twelve, twenty_four = hlo_size(12), hlo_size(24)
    assert abs(twenty_four - twelve) < 0.02 * twelve, (twelve, twenty_four)


def test_factorized_embeddings_project_to_hidden():
    model = pretraining_heads.BertForPreTraining(_shared_config(2), rngs=nnx.Rngs(0))
    assert model.bert.embeddings.word_embeddings.embedding.shape == (60, 8)
    assert model.bert.embeddings.projection.kernel.shape == (8, 16)
    assert model.mlm_head.dense.kernel.shape == (16, 8)  # back to the embedding width for the tied output
    ids = jnp.asarray([[2, 10, 11, 3]])
    logits, pair = model(ids, jnp.zeros_like(ids), jnp.ones_like(ids), jnp.asarray([[1, 2]]))
    assert logits.shape == (1, 2, 60) and pair.shape == (1, 2)


def test_mlm_objective_has_no_pair_head_or_pooler():
    config = encoder.BertConfig(vocab_size=40, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                  num_hidden_layers=1, max_position_embeddings=16)
    model = pretraining_heads.BertForPreTraining(config, objective="mlm", rngs=nnx.Rngs(0))
    names = set(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert names == {"bert", "mlm_head"}
    assert "pooler" not in nnx.to_pure_dict(nnx.state(model.bert, nnx.Param))
    ids = jnp.asarray([[2, 10, 11, 3]])
    logits, pair = model(ids, jnp.zeros_like(ids), jnp.ones_like(ids), jnp.asarray([[1, 2]]))
    assert pair is None and logits.shape == (1, 2, 40)


@pytest.mark.parametrize("groups", [0, 1, 2])
def test_all_hidden_states_are_each_layers_output(groups):
    """Layer i's state equals running i layers; shared groups yield one state per repeat."""
    model = encoder.BertModel(_shared_config(4, groups=groups), rngs=nnx.Rngs(0))
    ids = jnp.asarray([[2, 10, 11, 12, 3, 20, 21, 3, 0, 0]])
    mask = (ids > 0).astype(jnp.int32)
    states = model.all_hidden_states(ids, jnp.zeros_like(ids), mask)
    assert len(states) == 5
    out, _ = model(ids, jnp.zeros_like(ids), mask)
    np.testing.assert_allclose(np.asarray(states[-1]), np.asarray(out), atol=1e-6)
    layers = ([model.layer_groups[i * len(model.layer_groups) // 4].layer for i in range(4)] if groups
              else list(model.layers))
    hidden = states[0]
    for i, layer in enumerate(layers):
        hidden = layer(hidden, encoder.attention_bias_from_mask(mask), deterministic=True, rngs=None)
        np.testing.assert_allclose(np.asarray(states[i + 1]), np.asarray(hidden), atol=1e-5)


_TINY = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 40}


def _param_dict(module):
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def test_no_language_table_is_bert_and_a_zero_table_changes_nothing():
    """num_languages=0 has no table and ignores language_ids; a model with a table, given those weights and an
    all-zero table, computes bitwise what the BERT model does: the table is the only difference."""
    bert = encoder.BertModel(encoder.BertConfig(**_TINY), rngs=nnx.Rngs(params=0))
    xlm = encoder.BertModel(encoder.BertConfig(**_TINY, num_languages=3), rngs=nnx.Rngs(params=1))
    bert_params, xlm_params = _param_dict(bert), _param_dict(xlm)
    table = xlm_params["embeddings"].pop("language_embeddings")
    assert "language_embeddings" not in bert_params["embeddings"] and table["embedding"].shape == (3, 32)
    assert jax.tree.map(np.shape, bert_params) == jax.tree.map(np.shape, xlm_params)
    state = nnx.state(xlm, nnx.Param)
    nnx.replace_by_pure_dict(state, {**bert_params, "embeddings": {
        **bert_params["embeddings"], "language_embeddings": {"embedding": jnp.zeros((3, 32))}}})
    nnx.update(xlm, state)
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 50, (3, 12)))
    segments, mask = (jnp.arange(12) >= 6).astype(jnp.int32)[None].repeat(3, 0), jnp.ones_like(ids)
    positions = jnp.tile(jnp.arange(12), (3, 1)) % 6
    languages = positions % 3
    reference, _ = bert(ids, segments, mask, position_ids=positions)
    ignored, _ = bert(ids, segments, mask, position_ids=positions, language_ids=languages)
    zero_table, _ = xlm(ids, segments, mask, position_ids=positions, language_ids=languages)
    assert np.array_equal(reference, ignored) and np.array_equal(reference, zero_table)


def test_language_table_is_added_per_token():
    """With a table, each token's language row enters its embedding: other languages give other outputs,
    and no language_ids means language 0 (what fine-tuning feeds)."""
    model = encoder.BertModel(encoder.BertConfig(**_TINY, num_languages=2), rngs=nnx.Rngs(params=0))
    ids = jnp.asarray(np.random.default_rng(1).integers(5, 50, (2, 10)))
    segments, mask = jnp.zeros_like(ids), jnp.ones_like(ids)
    outputs = {}
    for name, languages in (("zeros", jnp.zeros_like(ids)), ("ones", jnp.ones_like(ids)),
                            ("half", (jnp.arange(10) >= 5).astype(jnp.int32)[None].repeat(2, 0)), ("none", None)):
        outputs[name] = np.asarray(model(ids, segments, mask, language_ids=languages)[0])
    assert np.array_equal(outputs["none"], outputs["zeros"])
    assert np.abs(outputs["ones"] - outputs["zeros"]).min() > 1e-4  # every token moves
    embeddings = model.embeddings
    table = np.asarray(embeddings.language_embeddings.embedding[...])
    expected = (np.asarray(embeddings.word_embeddings.embedding[...])[np.asarray(ids)]
                + np.asarray(embeddings.position_embeddings.embedding[...])[:10]
                + np.asarray(embeddings.token_type_embeddings.embedding[...])[0] + table[1])
    scale, bias = np.asarray(embeddings.layer_norm.scale[...]), np.asarray(embeddings.layer_norm.bias[...])
    got = embeddings(ids, segments, language_ids=jnp.ones_like(ids), deterministic=True, rngs=None)
    np.testing.assert_allclose(got, _np_layer_norm(expected, scale, bias, 1e-12), atol=1e-5)
