"""The jitted train step: a tiny model overfits a fixed batch; 1 and 8 devices give the same result."""

import jax
import numpy as np

from bert_jax import config as config_lib
from bert_jax import masking, parallel, train

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
    spec = masking.MaskingSpec.from_config(config.masking, mask_id=4, first_random_id=5, vocab_size=VOCAB)
    setup, create = train.make_setup(config, mesh, masking_spec=spec, num_special_tokens=5)
    step = train.make_train_step(setup, mesh, config.train)
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
    for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[8][1])):
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
