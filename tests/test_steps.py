"""The jitted train step: a tiny model overfits a fixed batch; 1 and 8 devices give the same result."""

import dataclasses

import jax
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax.pretraining import losses
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import parallel

VOCAB, SEQ = 128, 32


def tiny_config(**train_overrides):
    config = config_lib.default_config()
    config.model.update({"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "intermediate_size": 128, "max_position_embeddings": SEQ})
    config.data.update({"max_seq_length": SEQ, "tokenizer_vocab_size": VOCAB})
    config.masking.max_predictions_per_seq = 6
    config.train.update({"global_batch_size": 8, "num_train_steps": 10_000, "warmup_steps": 10,
                         "learning_rate": 2e-3, **train_overrides})
    return config_lib.validate(config)


def synthetic_batch(rng, batch=8):
    """[CLS] A [SEP] B [SEP] [PAD].. with random tokens and NSP labels."""
    input_ids = np.zeros((batch, SEQ), np.int32)
    segment_ids = np.zeros((batch, SEQ), np.int32)
    for row in range(batch):
        length = int(rng.integers(16, SEQ + 1))
        split = length // 2
        input_ids[row, :length] = rng.integers(5, VOCAB, size=length)
        input_ids[row, [0, split, length - 1]] = [2, 3, 3]
        segment_ids[row, split + 1:length] = 1
    return {"input_ids": input_ids, "segment_ids": segment_ids, "attention_mask": (input_ids > 0).astype(np.int32),
            "next_sentence_labels": rng.integers(0, 2, size=batch).astype(np.int32)}


def build(config, num_devices):
    config.mesh.data = num_devices
    mesh = parallel.make_mesh(config.mesh)
    setup, create = steps_lib.make_pretraining_setup(config, mesh)  # synthetic ids: specials 0..4, VOCAB pieces
    step = steps_lib.make_train_step(setup, mesh, config.train)
    return mesh, create(), step


def test_tiny_model_overfits_a_fixed_batch():
    config = tiny_config()
    config.model.hidden_dropout_prob = config.model.attention_probs_dropout_prob = 0.0
    mesh, state, step = build(config, 1)
    batch = parallel.to_global_batch(synthetic_batch(np.random.default_rng(0)), parallel.batch_sharding(mesh))
    first = None
    for _ in range(600):
        state, metrics = step(state, batch)
        mlm_loss = float(metrics["mlm_loss_sum"] / metrics["mlm_count"])
        first = mlm_loss if first is None else first
    assert first > 4.0  # about ln(128) at the start
    assert mlm_loss < 0.1, mlm_loss
    assert step._cache_size() == 1  # compiled once for the whole run


def test_one_and_eight_devices_agree():
    rng = np.random.default_rng(1)
    batches = [synthetic_batch(rng) for _ in range(3)]
    results = {}
    for devices in (1, 8):
        mesh, state, step = build(tiny_config(), devices)
        losses = []
        for batch in batches:
            state, metrics = step(state, parallel.to_global_batch(batch, parallel.batch_sharding(mesh)))
            losses.append(float(metrics["loss"]))
        results[devices] = (losses, jax.device_get(state.params))
    np.testing.assert_allclose(results[1][0], results[8][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[8][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    config = tiny_config(global_batch_size=12)
    config.mesh.data = 8
    try:
        parallel.check_batch_size(config.train.global_batch_size, parallel.make_mesh(config.mesh))
    except config_lib.InputError as e:
        assert "not divisible by the 8 devices" in str(e)
    else:
        raise AssertionError("expected an InputError")


def test_mlm_objective_leaves_no_parameter_without_gradient():
    """RoBERTa's objective: no pooler or pair head, so every parameter is trained."""
    config = tiny_config(warmup_steps=0)  # a non-zero learning rate at step 0
    config.objective = "mlm"
    mesh, state, step = build(config, 1)
    before = jax.device_get(state.params)
    state, _ = step(state, parallel.to_global_batch(synthetic_batch(np.random.default_rng(3)),
                                                    parallel.batch_sharding(mesh)))
    after = jax.device_get(state.params)
    flat_before = jax.tree_util.tree_leaves_with_path(before)
    for (path, old), new in zip(flat_before, jax.tree.leaves(after), strict=True):
        assert not np.array_equal(old, new), f"{jax.tree_util.keystr(path)} was not updated"


def _masked_inputs(config, batch, steps):
    """The masked input_ids the train step builds at each step, via the same functions it uses."""
    mesh, state, _ = build(config, 1)
    setup, _ = steps_lib.make_pretraining_setup(config, mesh)
    setup = dataclasses.replace(setup, word_start_table=np.arange(VOCAB) % 2 == 0)  # every other piece starts a word
    outputs = []
    for step in range(steps):
        state = state.replace(step=jax.numpy.asarray(step, jax.numpy.int32))
        key = (steps_lib.step_key(state) if config.masking.dynamic
               else steps_lib.static_mask_keys(state, jax.numpy.asarray(batch["mask_seeds"])))
        outputs.append(np.asarray(steps_lib.mask_batch(setup, batch, key).input_ids))
    return outputs


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_static_masks_repeat_and_dynamic_masks_do_not():
    batch = synthetic_batch(np.random.default_rng(4))
    batch["mask_seeds"] = np.arange(8, dtype=np.int32)
    batch = {name: jax.numpy.asarray(value) for name, value in batch.items()}
    for kind in ("token", "whole_word"):
        config = tiny_config()
        config.masking.kind = kind
        config.masking.dynamic = False
        first, second = _masked_inputs(config, batch, steps=2)
        np.testing.assert_array_equal(first, second)  # same example, same seed: the same mask at any step
        other = dict(batch, mask_seeds=batch["mask_seeds"] + 100)
        assert not np.array_equal(first, _masked_inputs(config, other, steps=1)[0])
        config.masking.dynamic = True
        first, second = _masked_inputs(config, batch, steps=2)
        assert not np.array_equal(first, second)  # dynamic: a new mask at every step


def _log_softmax64(logits):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_mlm_sums_by_language_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    batch, positions, vocab, num_languages = 7, 5, 11, 3
    logits = rng.normal(size=(batch, positions, vocab)).astype(np.float32)
    ids = rng.integers(0, vocab, size=(batch, positions)).astype(np.int32)
    ids[:, 0] = logits[:, 0].argmax(-1)  # some correct predictions
    weights = (rng.random((batch, positions)) < 0.7).astype(np.float32)
    example_weights = np.ones(batch, np.float32)
    example_weights[-1] = 0.0  # a padding row counts for no language
    languages = np.asarray([0, 2, 2, 0, 2, 0, 1], np.int32)  # language 1 only on the padding row
    plain = losses.pretraining_sums(logits, ids, weights, None, None, example_weights, pair=None)
    split = losses.pretraining_sums(logits, ids, weights, None, None, example_weights, pair=None,
                                    languages=languages, num_languages=num_languages)
    for key in plain:  # the monolingual figures are untouched
        np.testing.assert_array_equal(np.asarray(split[key]), np.asarray(plain[key]))
    assert float(losses.pretraining_loss(split)) == float(losses.pretraining_loss(plain))

    nll = -np.take_along_axis(_log_softmax64(logits), ids[..., None], axis=-1)[..., 0]
    correct = logits.argmax(-1) == ids
    counted = weights * example_weights[:, None]
    for language in range(num_languages):
        rows = languages == language
        np.testing.assert_allclose(split["mlm_loss_sum_by_language"][language], (nll * counted)[rows].sum(), rtol=1e-5)
        assert float(split["mlm_correct_by_language"][language]) == (correct * counted)[rows].sum()
        assert float(split["mlm_count_by_language"][language]) == counted[rows].sum()
    metrics = losses.summarize_languages(jax.device_get(split), ("en", "ja", "ru"))
    assert set(metrics) == {"mlm_accuracy/en", "mlm_loss/en", "mlm_accuracy/ru", "mlm_loss/ru"}  # ja: no tokens
    rows = languages == 2
    assert metrics["mlm_accuracy/ru"] == pytest.approx((correct * counted)[rows].sum() / counted[rows].sum())


def test_the_eval_step_splits_its_one_pass_by_language():
    """Per-language sums of one eval pass equal the whole-batch sums of passes that weigh one language only."""
    config = tiny_config()
    config.model.update({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64})
    config.data.languages = ("de", "en", "fr")
    mesh = parallel.make_mesh(config.mesh)
    setup, create = steps_lib.make_pretraining_setup(config, mesh)
    assert setup.num_languages == 3
    state = create()
    eval_step = steps_lib.make_eval_step(setup, mesh)
    batch = synthetic_batch(np.random.default_rng(1))
    batch["example_weights"] = np.ones(8, np.float32)
    batch["languages"] = np.asarray([0, 1, 1, 2, 0, 1, 2, 2], np.int32)
    key = jax.random.key(3)
    sharding = parallel.batch_sharding(mesh)
    sums = jax.device_get(eval_step(state.params, parallel.to_global_batch(batch, sharding), key, None))
    for language in range(3):
        alone = dict(batch, example_weights=(batch["languages"] == language).astype(np.float32))  # no recompile
        whole = jax.device_get(eval_step(state.params, parallel.to_global_batch(alone, sharding), key, None))
        np.testing.assert_allclose(sums["mlm_loss_sum_by_language"][language], whole["mlm_loss_sum"], rtol=1e-5)
        assert sums["mlm_correct_by_language"][language] == whole["mlm_correct"]
        assert sums["mlm_count_by_language"][language] == whole["mlm_count"]
