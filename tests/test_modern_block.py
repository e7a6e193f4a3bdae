"""The block flags of config.model (encoder_flags.py): validation, and the modern blocks they build."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.model import encoder

MODERN = dict(vocab_size=97, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=48,
              norm_placement="pre", final_norm=True, ffn_activation="geglu", position_encoding="rotary",
              use_bias=False, type_vocab_size=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("overrides, fragment", [
    ({"norm_placement": "sandwich"}, "norm_placement"),
    ({"final_norm": True}, "final_norm=True"),
    ({"local_attention_window": 7}, "even number"),
    ({"global_attention_every_n_layers": 0}, "at least 1"),
    ({"rope_theta": 0.0}, "rope_theta"),
    ({"position_encoding": "rotary", "hidden_size": 36, "num_attention_heads": 4}, "even head width"),
    ({"local_attention_window": 8, "scan_layers": True}, "scan_layers"),
    ({"local_attention_window": 8, "num_hidden_groups": 1}, "num_hidden_groups"),
])
def test_bad_block_flags_are_one_line(overrides, fragment):
    config = config_lib.default_config()
    config.model.update(overrides)
    with pytest.raises(config_lib.InputError, match=fragment) as error:
        config_lib.validate(config)
    assert "\n" not in str(error.value)


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


@pytest.mark.parametrize("name, kind", [("neobert", dict(gated=True, untied=True, positions=False, norms_with_bias=False)),
                                        ("mosaicbert_base", dict(gated=True, untied=False, positions=False,
                                                                 norms_with_bias=True))])
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
