"""Optimizer: schedule shapes against NumPy at every step, the weight-decay mask, and AdamW, LAMB and
StableAdamW (with clipping) against hand-written float64 updates, optax.lamb and optimi's algorithm."""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.model import encoder, pretraining_heads
from bert_jax.pretraining import optim

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _train_config(**overrides):
    config = config_lib.default_config().train
    config.update({"learning_rate": 1e-3, "warmup_steps": 10, "num_train_steps": 110, **overrides})
    return config


def test_warmup_then_linear_decay():
    schedule = optim.learning_rate_schedule(_train_config())
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10, 60, 110)], [0, 5e-4, 1e-3, 5e-4, 0], atol=1e-9)


def test_weight_decay_skips_layer_norm_and_biases():
    config = encoder.BertConfig(vocab_size=20, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                                  num_hidden_layers=1, max_position_embeddings=8)
    params = nnx.state(pretraining_heads.BertForPreTraining(config, rngs=nnx.Rngs(0)), nnx.Param)
    mask = nnx.to_pure_dict(optim.weight_decay_mask(params))
    flat = {"/".join(map(str, k)): v for k, v in jax.tree_util.tree_leaves_with_path(mask)
            for k in [[getattr(p, "key", p) for p in k]]}
    assert flat["bert/embeddings/word_embeddings/embedding"]
    assert flat["bert/layers/0/attention/query/kernel"]
    assert not flat["bert/layers/0/attention/query/bias"]
    assert not flat["bert/layers/0/output_layer_norm/scale"]
    assert not flat["bert/embeddings/layer_norm/bias"]
    assert not flat["mlm_head/bias"]


def test_update_matches_hand_written_adamw_with_clipping():
    train_config = _train_config(warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0)
    params = {"dense": {"kernel": jnp.asarray([[0.5, -1.0]]), "bias": jnp.asarray([0.3, 0.2])}}
    grads = {"dense": {"kernel": jnp.asarray([[3.0, 4.0]]), "bias": jnp.asarray([0.0, 0.0])}}  # norm 5 -> clipped
    optimizer = optim.make_optimizer(train_config)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    new = optax.apply_updates(params, updates)
    lr, eps = 1e-3, 1e-6  # step 0 of a pure linear decay is the peak rate
    g = np.asarray([[0.6, 0.8]])  # clipped to norm 1
    m, v = 0.1 * g / (1 - 0.9), 0.001 * g**2 / (1 - 0.999)
    expected_kernel = np.asarray([[0.5, -1.0]]) - lr * (m / (np.sqrt(v) + eps) + 0.01 * np.asarray([[0.5, -1.0]]))
    np.testing.assert_allclose(np.asarray(new["dense"]["kernel"]), expected_kernel, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new["dense"]["bias"]), [0.3, 0.2], rtol=1e-6)  # no decay on biases


def _run(optimizer, params, grads_per_step):
    """The parameters after one update per gradient tree, as float64 NumPy."""
    state = optimizer.init(params)
    for grads in grads_per_step:
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return jax.tree.map(lambda x: np.asarray(x, np.float64), params)


# A decayed kernel, a kernel at zero (trust ratio 1: ||w|| = 0), one with tiny gradients, a bias and a
# LayerNorm scale (neither decayed nor adapted); the first step's gradient is large, so clipping acts.
_PARAMS = {"dense": {"kernel": np.asarray([[0.5, -1.0, 0.25], [0.1, 0.3, -0.2]]), "bias": np.asarray([0.3, 0.2, -0.1])},
           "zero": {"kernel": np.zeros((2, 2))}, "tiny": {"kernel": np.full((2, 2), 0.5)},
           "layer_norm": {"scale": np.asarray([1.0, 0.9])}}
_RNG = np.random.default_rng(0)
_GRADS = [jax.tree.map(lambda p, k=k: _RNG.normal(size=p.shape) * (3.0 if k == 0 else 0.3), _PARAMS) for k in range(4)]
_GRADS[3] = jax.tree.map(lambda g: g * 8.0, _GRADS[2])  # a spike after steady steps: StableAdamW's RMS > 1
for _grads in _GRADS:
    _grads["tiny"]["kernel"] *= 1e-3  # second moments ~1e-8, where how eps enters StableAdamW's RMS matters


def _as_f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _clip(grads, max_norm):
    norm = np.sqrt(sum(np.sum(g**2) for g in jax.tree.leaves(grads)))
    return jax.tree.map(lambda g: g * min(1.0, max_norm / norm), grads)


def _decays(path):
    return path[-1] not in ("bias", "scale")


def _reference(config, params, grads_per_step, direction):
    """Clipping and Adam moments in float64 by hand; `direction(m_hat, v_hat, g, w, decays, lr)` is the update."""
    schedule = optim.learning_rate_schedule(config)
    flat = {path: np.asarray(w, np.float64) for path, w in _flat(params).items()}
    m = {path: np.zeros_like(w) for path, w in flat.items()}
    v = {path: np.zeros_like(w) for path, w in flat.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        g_all = _flat(_clip(grads, config.max_grad_norm))
        lr = float(schedule(t - 1))
        for path, w in flat.items():
            g = g_all[path]
            m[path] = config.adam_b1 * m[path] + (1 - config.adam_b1) * g
            v[path] = config.adam_b2 * v[path] + (1 - config.adam_b2) * g**2
            m_hat, v_hat = m[path] / (1 - config.adam_b1**t), v[path] / (1 - config.adam_b2**t)
            flat[path] = w - direction(m_hat, v_hat, g, w, _decays(path), lr)
    return flat


def _flat(tree):
    return {tuple(getattr(k, "key", k) for k in path): np.asarray(x, np.float64)
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _assert_close(got, expected, rtol=2e-5):
    got = _flat(got)
    for path, value in expected.items():
        np.testing.assert_allclose(got[path], value, rtol=rtol, atol=1e-7, err_msg=str(path))


def test_lamb_matches_a_float64_reference_with_its_masks():
    config = _train_config(optimizer="lamb", warmup_steps=2, num_train_steps=10, weight_decay=0.01)

    def lamb_step(m_hat, v_hat, g, w, decays, lr):
        update = m_hat / (np.sqrt(v_hat) + config.adam_eps) + (config.weight_decay * w if decays else 0.0)
        w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(update)
        ratio = w_norm / u_norm if decays and w_norm > 0 and u_norm > 0 else 1.0
        return lr * ratio * update

    expected = _reference(config, _PARAMS, _GRADS, lamb_step)
    got = _run(optim.make_optimizer(config), _as_f32(_PARAMS), [_as_f32(g) for g in _GRADS])
    _assert_close(got, expected)
    # the trust ratio acted: a decayed kernel moved by lr * ||w|| per step, unlike AdamW
    adamw = _run(optim.make_optimizer(_train_config(warmup_steps=2, num_train_steps=10)), _as_f32(_PARAMS),
                 [_as_f32(g) for g in _GRADS])
    assert not np.allclose(adamw["dense"]["kernel"], got["dense"]["kernel"], rtol=1e-3)


def test_lamb_is_optax_lamb_where_nothing_is_excluded():
    config = _train_config(optimizer="lamb", warmup_steps=2, num_train_steps=10, max_grad_norm=1.0)
    params = _as_f32({"dense": {"kernel": _PARAMS["dense"]["kernel"]}, "embeddings": {"embedding": np.ones((3, 2))}})
    grads = [_as_f32(jax.tree.map(lambda p, k=k: _RNG.normal(size=p.shape) * (k + 1), params)) for k in range(3)]
    reference = optax.chain(optax.clip_by_global_norm(1.0), optax.lamb(
        optim.learning_rate_schedule(config), b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
        weight_decay=config.weight_decay))
    got, expected = _run(optim.make_optimizer(config), params, grads), _run(reference, params, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, expected)


def test_stable_adamw_matches_optimi_reference_with_update_clipping():
    config = _train_config(optimizer="stable_adamw", warmup_steps=2, num_train_steps=10, weight_decay=0.1,
                           max_grad_norm=5.0)  # clips the first step and the spike, leaving it 4x the step before
    rms_seen = []

    def optimi_step(state, g, w, decays, lr, t):
        """optimi.StableAdamW (decouple_lr False) in float64: moments kept with debiased betas, so they are
        the bias-corrected ones; RMS against max(v, eps^2); decay scaled by the clipped rate, then the step."""
        b1_hat = (config.adam_b1**t - config.adam_b1) / (config.adam_b1**t - 1)
        b2_hat = (config.adam_b2**t - config.adam_b2) / (config.adam_b2**t - 1)
        state["m"] = b1_hat * state["m"] + (1 - b1_hat) * g
        state["v"] = b2_hat * state["v"] + (1 - b2_hat) * g * g
        rms = np.sqrt(np.mean(g * g / np.maximum(state["v"], config.adam_eps**2)))
        rms_seen.append(rms)
        lr = lr / max(1.0, rms)
        w = w * (1 - lr * config.weight_decay) if decays else w
        return w - lr * state["m"] / (np.sqrt(state["v"]) + config.adam_eps)

    schedule = optim.learning_rate_schedule(config)
    flat = _flat(_PARAMS)
    states = {path: {"m": np.zeros_like(w), "v": np.zeros_like(w)} for path, w in flat.items()}
    for t, grads in enumerate(_GRADS, start=1):
        clipped = _flat(_clip(grads, config.max_grad_norm))
        flat = {path: optimi_step(states[path], clipped[path], w, _decays(path), float(schedule(t - 1)), t)
                for path, w in flat.items()}
    assert max(rms_seen) > 1.2  # the update clipping acted on the spike
    got = _run(optim.make_optimizer(config), _as_f32(_PARAMS), [_as_f32(g) for g in _GRADS])
    _assert_close(got, flat)
    adamw = _run(optim.make_optimizer(_train_config(warmup_steps=2, num_train_steps=10, weight_decay=0.1,
                                                    max_grad_norm=5.0)),
                 _as_f32(_PARAMS), [_as_f32(g) for g in _GRADS])
    start = _PARAMS["dense"]["kernel"]  # the clipped step moved the kernel less than AdamW's
    assert not np.allclose(adamw["dense"]["kernel"] - start, got["dense"]["kernel"] - start, rtol=0.02)


def test_adamw_default_is_optax_adamw_bit_for_bit():
    config = _train_config(warmup_steps=2, num_train_steps=10)
    schedule = optax.join_schedules([optax.linear_schedule(0.0, 1e-3, 2), optax.linear_schedule(1e-3, 0.0, 8)], [2])
    reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
        schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=optim.weight_decay_mask))
    params, grads = _as_f32(_PARAMS), [_as_f32(g) for g in _GRADS]
    jax.tree.map(np.testing.assert_array_equal, _run(optim.make_optimizer(config), params, grads),
                 _run(reference, params, grads))


def test_a_finetuning_optimizer_config_without_the_new_fields_is_adamw_linear():
    fields = ("learning_rate", "num_train_steps", "warmup_steps", "weight_decay", "adam_b1", "adam_b2", "adam_eps",
              "max_grad_norm")
    config = _train_config(warmup_steps=2, num_train_steps=10)
    old = ml_collections.ConfigDict({name: config[name] for name in fields})
    params, grads = _as_f32(_PARAMS), [_as_f32(g) for g in _GRADS]
    jax.tree.map(np.testing.assert_array_equal, _run(optim.make_optimizer(old), params, grads),
                 _run(optim.make_optimizer(config), params, grads))


def _wsd_reference(step, peak, warmup, start, length, floor, shape):
    if step < warmup:
        return peak * step / warmup
    if step < start:
        return peak
    p = min((step - start) / length, 1.0)
    remaining = {"linear": 1 - p, "1-sqrt": 1 - math.sqrt(p), "cosine": 0.5 * (1 + math.cos(math.pi * p))}[shape]
    return floor + (peak - floor) * remaining


@pytest.mark.parametrize("shape", optim.DECAY_SHAPES)
def test_wsd_schedule_at_every_step(shape):
    config = _train_config(schedule="wsd", warmup_steps=10, num_train_steps=110, decay_steps=30, decay_shape=shape,
                           min_learning_rate_ratio=0.1)
    config_lib.validate(_full(config))
    schedule = optim.learning_rate_schedule(config)
    steps = np.arange(0, 121)
    expected = [_wsd_reference(s, 1e-3, 10, 80, 30, 1e-4, shape) for s in steps]
    np.testing.assert_allclose(np.asarray(jax.vmap(schedule)(steps)), expected, rtol=1e-5, atol=1e-10)
    assert float(schedule(80)) == pytest.approx(1e-3) and float(schedule(110)) == pytest.approx(1e-4)


def test_linear_schedule_at_every_step_with_a_floor():
    config = _train_config(min_learning_rate_ratio=0.25)
    schedule = optim.learning_rate_schedule(config)
    expected = [1e-3 * s / 10 if s < 10 else 1e-3 - 0.75e-3 * min(s - 10, 100) / 100 for s in range(120)]
    np.testing.assert_allclose([float(schedule(s)) for s in range(120)], expected, rtol=1e-5, atol=1e-10)


def test_wsd_decays_from_a_stable_phase_checkpoint():
    """A run planned for 1,000 steps decays instead from its checkpoint of step 400: the stable phase up to
    it is the same, and from it the learning rate follows the decay formula."""
    planned = _train_config(schedule="wsd", warmup_steps=50, num_train_steps=1000, decay_steps=200,
                            decay_shape="1-sqrt")
    decay_now = _train_config(schedule="wsd", warmup_steps=50, num_train_steps=600, decay_steps=200,
                              decay_shape="1-sqrt", decay_start_step=400)
    for config in (planned, decay_now):
        config_lib.validate(_full(config))
    before, after = (jax.vmap(optim.learning_rate_schedule(c))(np.arange(601)) for c in (planned, decay_now))
    np.testing.assert_array_equal(before[:401], after[:401])
    expected = [1e-3 * (1 - math.sqrt((s - 400) / 200)) for s in range(400, 601)]
    np.testing.assert_allclose(np.asarray(after[400:]), expected, rtol=1e-5, atol=1e-9)
    assert float(before[600]) == pytest.approx(1e-3)


def _full(train_config):
    config = config_lib.default_config()
    config.train.update(train_config.to_dict())
    return config


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "adam"}, r"config\.train\.optimizer='adam' is not one of \('adamw', 'lamb', 'stable_adamw'\)\."),
    ({"schedule": "wsd"}, r"needs config\.train\.decay_steps >= 1, got 0"),
    ({"schedule": "wsd", "decay_steps": 200},
     r"start at step -90 \(num_train_steps - decay_steps\), before the warmup ends \(config\.train\.warmup_steps=10\)"),
    ({"schedule": "wsd", "decay_steps": 105}, r"decay would start at step 5 \(num_train_steps - decay_steps\), before"),
    ({"schedule": "wsd", "decay_steps": 50, "decay_start_step": 8}, r"decay would start at step 8, before the warmup"),
    ({"min_learning_rate_ratio": -0.1}, r"min_learning_rate_ratio must be in \[0, 1\]"),
    ({"schedule": "wsd", "decay_steps": 10, "decay_start_step": -5}, r"decay_start_step must be a step >= 0, or -1"),
    ({"decay_shape": "1-sqrt"}, r"schedule='linear' decays over the whole run and reads no decay_shape='1-sqrt'"),
    ({"schedule": "wsd", "decay_steps": 10, "decay_shape": "exp"}, r"decay_shape='exp' is not one of"),
])
def test_bad_optimizer_and_schedule_fields_are_one_line_errors(changes, message):
    with pytest.raises(config_lib.InputError, match=message) as error:
        config_lib.validate(_full(_train_config(**changes)))
    assert "\n" not in str(error.value)


def test_albert_trains_with_lamb_as_google_research_albert():
    spec = importlib.util.spec_from_file_location("albert_base", ROOT / "configs" / "albert_base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train = config_lib.validate(module.get_config()).train
    assert (train.optimizer, train.learning_rate, train.global_batch_size, train.num_train_steps) == (
        "lamb", 1.76e-3, 4096, 125_000)
    assert (train.warmup_steps, train.weight_decay, train.adam_b1, train.adam_b2, train.adam_eps) == (
        3125, 0.01, 0.9, 0.999, 1e-6)
