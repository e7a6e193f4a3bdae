"""The speed switches of config.model / config.train change how the step is computed, never its result;
packed rows compute exactly what their instances compute alone."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.model import encoder, pretraining_heads
from bert_jax.pretraining import losses, masking
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import parallel

VOCAB, SEQ, PREDICTIONS = 100, 16, 4  # VOCAB is not a multiple of 128, so the default vocab padding is exercised
# CPU compile time is most of this file's run time; LLVM's optimisations are not worth it for these tiny
# programs (both sides of every comparison are compiled alike).
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_TINY = dict(vocab_size=VOCAB, hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=2,
             max_position_embeddings=SEQ, attention_probs_dropout_prob=0.0)


def tiny_config(**overrides) -> encoder.BertConfig:
    return encoder.BertConfig(**{**_TINY, **overrides})


def pretraining_batch(seed=0):
    """Three rows with suffix padding (one unpadded), their masked positions, MLM labels and pair labels."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, VOCAB, size=(3, SEQ)).astype(np.int32)
    attention_mask = np.ones((3, SEQ), np.int32)
    attention_mask[1, 11:] = 0
    attention_mask[2, 6:] = 0
    input_ids[attention_mask == 0] = 0
    segment_ids = np.zeros((3, SEQ), np.int32)
    segment_ids[:, 4:] = 1
    return {"input_ids": input_ids, "segment_ids": segment_ids * attention_mask, "attention_mask": attention_mask,
            "masked_positions": np.asarray([[1, 3, 7, 12], [2, 5, 9, 0], [1, 4, 0, 0]], np.int32),
            "masked_lm_ids": rng.integers(5, VOCAB, size=(3, PREDICTIONS)).astype(np.int32),
            "masked_lm_weights": np.asarray([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], np.float32),
            "next_sentence_labels": np.asarray([0, 1, 1], np.int32)}


@functools.lru_cache(maxsize=None)
def build(config: encoder.BertConfig, objective="mlm_nsp"):
    """The model for `config` with the parameters of the plain configuration (seed 0), as (graphdef, params).

    Cached: a graphdef is a static jit argument, and two builds of one config are not equal (the
    activation is a fresh lambda each time), so the reference would otherwise be compiled per test.
    """
    graphdef, _ = nnx.split(pretraining_heads.BertForPreTraining(config, objective=objective, rngs=nnx.Rngs(0)))
    _, params = nnx.split(pretraining_heads.BertForPreTraining(tiny_config(num_hidden_layers=config.num_hidden_layers,
                                                               num_hidden_groups=config.num_hidden_groups),
                                                   objective=objective, rngs=nnx.Rngs(0)))
    return graphdef, params


def batch_sums(graphdef, params, batch, *, deterministic=True, dropout_seed=0):
    model = nnx.merge(graphdef, params)
    rngs = None if deterministic else nnx.Rngs(dropout=dropout_seed)
    mlm_logits, pair_logits = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"],
                                    batch["masked_positions"], position_ids=batch.get("position_ids"),
                                    pair_positions=batch.get("pair_positions"), deterministic=deterministic,
                                    rngs=rngs)
    return losses.pretraining_sums(mlm_logits, batch["masked_lm_ids"], batch["masked_lm_weights"], pair_logits,
                                   batch["next_sentence_labels"], jnp.ones(batch["input_ids"].shape[:1]),
                                   pair="nsp", pair_weights=batch.get("pair_weights"))


@functools.partial(jax.jit, static_argnums=(0,), compiler_options=_QUICK_COMPILE)
def encode(graphdef, params, batch, position_ids=None):
    """The encoder's sequence output [batch, seq, hidden]."""
    model = nnx.merge(graphdef, params)
    return model.bert(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], position_ids=position_ids)[0]


@functools.partial(jax.jit, static_argnums=(0,), compiler_options=_QUICK_COMPILE)
def sums_of(graphdef, params, batch):
    return batch_sums(graphdef, params, batch)


@functools.partial(jax.jit, static_argnums=(0, 3, 4), compiler_options=_QUICK_COMPILE)
def loss_of(graphdef, params, batch, deterministic=True, dropout_seed=0):
    return losses.pretraining_loss(batch_sums(graphdef, params, batch, deterministic=deterministic,
                                              dropout_seed=dropout_seed))


@functools.partial(jax.jit, static_argnums=(0,), compiler_options=_QUICK_COMPILE)
def loss_and_grads(graphdef, params, batch):
    return jax.value_and_grad(lambda p: losses.pretraining_loss(batch_sums(graphdef, p, batch)))(params)


def assert_same_loss(config, reference_config, *, deterministic=True, rtol=1e-5):
    """Forward only: for switches that change no backward pass of their own (or only its memory)."""
    batch = pretraining_batch()
    loss = loss_of(*build(config), batch, deterministic)
    np.testing.assert_allclose(float(loss), float(loss_of(*build(reference_config), batch, deterministic)), rtol=rtol)


def assert_same_loss_and_grads(config, reference_config):
    batch = pretraining_batch()
    loss, grad = loss_and_grads(*build(config), batch)
    expected_loss, expected_grad = loss_and_grads(*build(reference_config), batch)
    np.testing.assert_allclose(float(loss), float(expected_loss), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(expected_grad), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_vocab_padding_changes_neither_parameters_nor_loss():
    graphdef, params = build(tiny_config(vocab_pad_multiple=128))
    assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == (VOCAB, 16)
    assert params["mlm_head"]["bias"].shape == (VOCAB,)
    batch = pretraining_batch()
    logits = jax.eval_shape(lambda p: nnx.merge(graphdef, p)(batch["input_ids"], batch["segment_ids"],
                                                             batch["attention_mask"], batch["masked_positions"])[0],
                            params)
    assert logits.shape == (3, PREDICTIONS, VOCAB)
    assert_same_loss(tiny_config(vocab_pad_multiple=128), tiny_config(vocab_pad_multiple=0))


def test_projecting_every_position_gives_the_gathered_loss():
    assert_same_loss(tiny_config(gather_masked_positions=False), tiny_config())


@pytest.mark.parametrize("switches", [
    {"scan_layers": True},
    {"remat_policy": "full"},
    {"scan_layers": True, "remat_policy": "dots_saveable"},
    {"num_hidden_groups": 1, "remat_policy": "dots_with_no_batch_dims_saveable"},  # ALBERT's shared-layer scan
])
def test_scan_and_remat_give_the_same_loss_and_gradients(switches):
    plain = {"num_hidden_groups": switches.get("num_hidden_groups", 0)}
    assert_same_loss_and_grads(tiny_config(**switches), tiny_config(**plain))


def test_remat_of_the_layer_loop_keeps_the_dropout_stream():
    dropout = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    assert_same_loss(tiny_config(remat_policy="full", **dropout), tiny_config(**dropout), deterministic=False)


def test_scanned_layers_draw_different_dropout_masks():
    keys = encoder.dropout_keys(nnx.Rngs(dropout=0), 3, deterministic=False)
    data = jax.random.key_data(keys).reshape(3, -1)
    assert len({tuple(np.asarray(row)) for row in data}) == 3


def test_bfloat16_compute_is_close_to_float32():
    assert_same_loss(tiny_config(dtype="bfloat16"), tiny_config(), rtol=2e-2)


def test_dot_product_attention_matches_xla_with_padding():
    batch = pretraining_batch()
    outputs = {}
    for impl in ("xla", "dot_product"):
        outputs[impl] = encode(*build(tiny_config(attention_impl=impl)), batch)
    real = batch["attention_mask"] > 0  # padded positions differ: the fused kernel zeroes padded queries
    np.testing.assert_allclose(np.asarray(outputs["dot_product"])[real], np.asarray(outputs["xla"])[real],
                               atol=1e-5, rtol=1e-5)
    assert_same_loss_and_grads(tiny_config(attention_impl="dot_product"), tiny_config())


def test_dot_product_attention_in_bfloat16_is_close_to_xla():
    assert_same_loss(tiny_config(dtype="bfloat16", attention_impl="dot_product"), tiny_config(dtype="bfloat16"),
                     rtol=1e-2)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cuDNN attention runs on GPUs")
def test_cudnn_attention_off_gpu_is_a_clear_error():
    model = encoder.BertModel(tiny_config(attention_impl="cudnn", dtype="bfloat16"), rngs=nnx.Rngs(0))
    ids = jnp.ones((1, 8), jnp.int32)
    with pytest.raises(config_lib.InputError, match="needs an NVIDIA GPU.*'dot_product'"):
        model(ids, ids * 0, ids)


def test_attention_dropout_without_an_xla_kernel_is_refused():
    with pytest.raises(config_lib.InputError, match="attention_probs_dropout_prob"):
        encoder.BertConfig(attention_impl="dot_product", attention_probs_dropout_prob=0.1)


# ---------------------------------------------------------------- packed rows

def two_instances():
    """Two [CLS] A [SEP] B [SEP] instances: alone (one per row, padded) and packed into one row."""
    rng = np.random.default_rng(3)
    lengths, segment_starts = (6, 5), (4, 3)
    alone = {name: np.zeros((2, SEQ), np.int32) for name in ("input_ids", "segment_ids", "attention_mask")}
    for row, (length, start) in enumerate(zip(lengths, segment_starts)):
        alone["input_ids"][row, :length] = rng.integers(5, VOCAB, size=length)
        alone["input_ids"][row, [0, start - 1, length - 1]] = [2, 3, 3]
        alone["segment_ids"][row, start:length] = 1
        alone["attention_mask"][row, :length] = 1
    alone.update(masked_positions=np.asarray([[1, 2, 0], [1, 3, 0]], np.int32),
                 masked_lm_ids=np.asarray([[10, 11, 0], [12, 13, 0]], np.int32),
                 masked_lm_weights=np.asarray([[1, 1, 0], [1, 1, 0]], np.float32),
                 next_sentence_labels=np.asarray([0, 1], np.int32))
    first = lengths[0]
    packed = {name: np.zeros((1, SEQ), np.int32) for name in ("input_ids", "segment_ids", "attention_mask",
                                                               "position_ids")}
    for name in ("input_ids", "segment_ids"):
        packed[name][0, :first] = alone[name][0, :first]
        packed[name][0, first:first + lengths[1]] = alone[name][1, :lengths[1]]
    packed["attention_mask"][0, :first + lengths[1]] = [1] * first + [2] * lengths[1]
    packed["position_ids"][0, :first + lengths[1]] = list(range(first)) + list(range(lengths[1]))
    packed.update(masked_positions=np.asarray([[1, 2, first + 1, first + 3]], np.int32),
                  masked_lm_ids=np.asarray([[10, 11, 12, 13]], np.int32),
                  masked_lm_weights=np.ones((1, 4), np.float32),
                  pair_positions=np.asarray([[0, first, 0]], np.int32),
                  next_sentence_labels=np.asarray([[0, 1, 0]], np.int32),
                  pair_weights=np.asarray([[1, 1, 0]], np.float32))
    return alone, packed, lengths


@pytest.mark.parametrize("switches", [{}, {"attention_impl": "dot_product", "scan_layers": True}])
def test_packed_instances_see_only_themselves(switches):
    alone, packed, (first, second) = two_instances()
    graphdef, params = build(tiny_config(**switches))
    run = lambda b, **kw: np.asarray(encode(graphdef, params, b, **kw))
    separate = run(alone)
    together = run(packed, position_ids=packed["position_ids"])
    np.testing.assert_allclose(together[0, :first], separate[0, :first], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(together[0, first:first + second], separate[1, :second], atol=1e-5, rtol=1e-5)
    # Other tokens in instance 2 leave instance 1 as it was: no attention across instances.
    changed = dict(packed, input_ids=packed["input_ids"].copy())
    changed["input_ids"][0, first + 1:first + second - 1] = 7
    np.testing.assert_array_equal(run(changed, position_ids=packed["position_ids"])[0, :first], together[0, :first])


def test_packed_sums_are_the_sums_of_the_separate_rows():
    alone, packed, _ = two_instances()
    graphdef, params = build(tiny_config())
    separate = jax.tree.map(float, sums_of(graphdef, params, alone))
    together = jax.tree.map(float, sums_of(graphdef, params, packed))
    assert together["nsp_count"] == separate["nsp_count"] == 2
    assert together["mlm_count"] == separate["mlm_count"] == 4
    for name, value in separate.items():
        np.testing.assert_allclose(together[name], value, rtol=1e-5, err_msg=name)
    # Masking treats every instance id as a real token (only 0 is padding).
    maskable = masking.maskable_positions(jnp.asarray(packed["input_ids"]), jnp.asarray(packed["attention_mask"]), 5)
    np.testing.assert_array_equal(np.asarray(maskable), packed["input_ids"] >= 5)


def test_packed_labels_without_pair_positions_are_a_clear_error():
    with pytest.raises(ValueError, match="pair_positions"):
        losses.pretraining_sums(jnp.zeros((1, 2, VOCAB)), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2)),
                                jnp.zeros((1, 2)), jnp.zeros((1, 3), jnp.int32), jnp.ones((1,)),
                                pair_weights=jnp.ones((1, 3)))


# ---------------------------------------------------------------- the train step

@pytest.mark.parametrize("donate", [True, False])
def test_donate_state_switch(donate):
    config = config_lib.default_config()
    config.model.update(dict(_TINY, num_hidden_layers=1))
    config.data.update({"max_seq_length": SEQ, "tokenizer_vocab_size": VOCAB})
    config.masking.max_predictions_per_seq = PREDICTIONS
    config.train.update({"global_batch_size": 2, "warmup_steps": 1, "donate_state": donate})
    config.mesh.data = 1
    config_lib.validate(config)
    mesh = parallel.make_mesh(config.mesh)
    setup, _ = steps_lib.make_pretraining_setup(config, mesh)  # synthetic ids: specials 0..4, VOCAB pieces
    batch = {name: jax.ShapeDtypeStruct((2, SEQ), jnp.int32)
             for name in ("input_ids", "segment_ids", "attention_mask")}
    batch["next_sentence_labels"] = jax.ShapeDtypeStruct((2,), jnp.int32)
    text = steps_lib.make_train_step(setup, mesh, config.train).lower(setup.abstract_state, batch).as_text()
    assert ("tf.aliasing_output" in text or "jax.buffer_donor" in text) == donate
