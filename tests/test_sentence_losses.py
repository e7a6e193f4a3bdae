"""Sentence-embedding losses against NumPy float64, the in-batch negatives of the global batch on 1 and 8
devices (and not the per-device ones), and gradient caching against the plain gradient."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax import config as config_lib
from bert_jax.finetuning import sentence_losses
from bert_jax.model import encoder, pooling, task_heads


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _mnrl_reference(emb, weights, scale, symmetric):
    """Plain loops in float64: anchor i against every live positive and hard negative of the batch."""
    emb = _unit(np.asarray(emb, np.float64))
    batch, texts, _ = emb.shape
    live = [j for j in range(batch) if weights[j] > 0]
    total = 0.0
    for i in live:
        candidates = [emb[j, k] for k in range(1, texts) for j in live]
        scores = np.array([scale * emb[i, 0] @ c for c in candidates])
        loss = np.log(np.exp(scores - scores.max()).sum()) + scores.max() - scale * emb[i, 0] @ emb[i, 1]
        if symmetric:
            back = np.array([scale * emb[i, 1] @ emb[j, 0] for j in live])
            loss = (loss + np.log(np.exp(back).sum()) - scale * emb[i, 1] @ emb[i, 0]) / 2
        total += weights[i] * loss
    return total, sum(weights[j] for j in live)


@pytest.mark.parametrize("texts,symmetric", [(2, False), (3, False), (2, True)])
def test_multiple_negatives_ranking_against_numpy(texts, symmetric):
    rng = np.random.default_rng(texts)
    emb = rng.normal(size=(6, texts, 5))
    weights = np.array([1, 1, 1, 1, 0, 1], np.float32)  # row 4 pads the batch: neither query nor candidate
    emb_padded = emb.copy()
    emb_padded[4] = 1e3  # whatever a padding row holds must not matter
    value, count = sentence_losses.multiple_negatives_ranking(jnp.asarray(emb_padded, jnp.float32), weights,
                                                              scale=20.0, symmetric=symmetric)
    expected, expected_count = _mnrl_reference(emb, weights, 20.0, symmetric)
    np.testing.assert_allclose(float(value), expected, rtol=2e-5)
    assert float(count) == expected_count


def test_cosent_and_cosine_similarity_against_numpy():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(7, 2, 4))
    gold = np.array([0.1, 0.9, 0.5, 0.5, 0.3, 0.7, 0.2])
    weights = np.array([1, 1, 1, 1, 1, 1, 0], np.float32)
    cos = (_unit(emb[:, 0]) * _unit(emb[:, 1])).sum(-1)
    terms = [20 * (cos[j] - cos[i]) for i, j in itertools.product(range(6), range(6)) if gold[i] > gold[j]]
    expected = np.log(1 + np.exp(terms).sum())
    value, count = sentence_losses.cosent(jnp.asarray(emb, jnp.float32), jnp.asarray(gold, jnp.float32), weights)
    np.testing.assert_allclose(float(value), expected, rtol=2e-5)
    assert float(count) == 1.0
    value, count = sentence_losses.cosine_similarity(jnp.asarray(emb, jnp.float32), jnp.asarray(gold, jnp.float32),
                                                     weights)
    np.testing.assert_allclose(float(value), ((cos - gold) ** 2 * weights).sum(), rtol=1e-5)
    features = pooling.pair_features(jnp.asarray(emb, jnp.float32))
    np.testing.assert_allclose(features, np.concatenate([emb[:, 0], emb[:, 1], np.abs(emb[:, 0] - emb[:, 1])], -1),
                               rtol=1e-6)


def test_pooling_against_numpy():
    rng = np.random.default_rng(2)
    hidden = rng.normal(size=(3, 6, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    for b in range(3):
        real = hidden[b, mask[b] > 0]
        np.testing.assert_allclose(pooling.pool(hidden, mask, "mean")[b], real.mean(0), rtol=1e-6)
        np.testing.assert_allclose(pooling.pool(hidden, mask, "max")[b], real.max(0), rtol=1e-6)
        np.testing.assert_array_equal(pooling.pool(hidden, mask, "cls")[b], hidden[b, 0])


def _tiny_model(num_labels=0):
    config = config_lib.default_config()
    config.model.update({"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 32, "max_position_embeddings": 12, "hidden_dropout_prob": 0.0,
                         "attention_probs_dropout_prob": 0.0})
    model = task_heads.BertForSentenceEmbedding(encoder.BertConfig.from_config(config.model), num_labels,
                                                rngs=nnx.Rngs(params=0))
    return nnx.split(model, nnx.Param)


def _rows(batch, texts, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 50, size=(batch, texts, 12)).astype(np.int32)
    lengths = rng.integers(3, 13, size=(batch, texts))
    mask = (np.arange(12) < lengths[..., None]).astype(np.int32)
    return {"input_ids": ids * mask, "segment_ids": np.zeros_like(ids), "attention_mask": mask}


def _mnrl_of(graphdef, batch, weights):
    def loss(params):
        emb = nnx.merge(graphdef, params)(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        total, count = sentence_losses.multiple_negatives_ranking(emb, weights)
        return total / count
    return loss


def test_in_batch_negatives_come_from_the_global_batch_on_every_device():
    """The same global batch on 1 and 8 devices: the same loss and gradients. The mean of the 8 per-device
    losses (what a per-device pool would give) differs, so the pool really is the global batch."""
    graphdef, params = _tiny_model()
    host = _rows(16, 3)
    weights = np.ones(16, np.float32)
    results = {}
    for count in (1, 8):
        mesh = Mesh(np.array(jax.devices()[:count]), ("data",))
        rows = NamedSharding(mesh, PartitionSpec("data"))
        batch = jax.device_put(host, rows)
        w = jax.device_put(weights, rows)
        replicated = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        results[count] = jax.jit(lambda p, b, w: jax.value_and_grad(_mnrl_of(graphdef, b, w))(p))(replicated, batch, w)
    np.testing.assert_allclose(results[1][0], results[8][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[8][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    per_device = np.mean([float(_mnrl_of(graphdef, {k: v[i * 2:(i + 1) * 2] for k, v in host.items()},
                                         weights[:2])(params)) for i in range(8)])
    assert abs(per_device - float(results[8][0])) > 0.1, (per_device, float(results[8][0]))


@pytest.mark.parametrize("loss_name", ["multiple_negatives_ranking", pytest.param("softmax", marks=pytest.mark.slow)])
def test_gradient_caching_gives_the_plain_gradients(loss_name):
    num_labels = 3 if loss_name == "softmax" else 0
    graphdef, params = _tiny_model(num_labels)
    texts = 3 if loss_name == "multiple_negatives_ranking" else 2
    batch = {k: jnp.asarray(v) for k, v in _rows(16, texts, seed=3).items()}
    weights = jnp.ones(16, jnp.float32)
    labels = jnp.asarray(np.random.default_rng(4).integers(0, 3, 16))

    def loss_of_embeddings(emb, p):
        if loss_name == "softmax":
            logits = nnx.merge(graphdef, p).classify(emb)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0])
        total, count = sentence_losses.multiple_negatives_ranking(emb, weights)
        return total / count

    def embed(p, chunk, index):
        del index  # no dropout here
        return nnx.merge(graphdef, p)(chunk["input_ids"], chunk["segment_ids"], chunk["attention_mask"])

    plain_loss, plain = jax.value_and_grad(lambda p: loss_of_embeddings(embed(p, batch, 0), p))(params)
    cached_loss, cached = jax.jit(lambda p: sentence_losses.cached_value_and_grad(
        embed, loss_of_embeddings, p, batch, num_chunks=4))(params)
    np.testing.assert_allclose(cached_loss, plain_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(cached), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
