"""Optimizer: schedule shape, weight-decay mask, and AdamW + clipping against a hand-written update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.model import encoder, pretraining_heads
from bert_jax.pretraining import optim


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
