"""SpanBERT's span-boundary objective (objective 'mlm_sbo'): the spans and boundaries of
`pretraining/span_boundary.py` against a plain loop over SpanBERT's own `merge_intervals`, the head and its
loss against NumPy float64, the train step, and a short real run whose metrics, evaluation, resume and
transformers export carry it."""

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_loop import _restore_params, _small_config
from test_steps import tiny_config

from bert_jax import config as config_lib
from bert_jax.pretraining import evaluation, loop, losses, masking, span_boundary
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import checkpoint as checkpoint_lib
from bert_jax.runtime import parallel, reporting


def merge_intervals(intervals):
    """facebookresearch/SpanBERT pretraining/fairseq/data/masking.py, verbatim but for the comments."""
    intervals = sorted(intervals, key=lambda x: x[0])
    merged = []
    for interval in intervals:
        if not merged or merged[-1][1] + 1 < interval[0]:
            merged.append(interval)
        else:
            merged[-1][1] = max(merged[-1][1], interval[1])
    return merged


def reference_boundaries(positions, weights, attention_mask, max_span_positions):
    """(left, right, offset, weight) per slot, one row and one slot at a time."""
    masked = sorted({int(p) for p, w in zip(positions, weights) if w > 0})
    spans = merge_intervals([[p, p] for p in masked])
    last_real = max([i for i, a in enumerate(attention_mask) if a > 0], default=0)
    result = []
    for position, weight in zip(positions, weights):
        if weight == 0:
            result.append((0, 0, 0, 0.0))
            continue
        start, end = next((s, e) for s, e in spans if s <= position <= e)
        offset = int(position) - start
        inside = offset < max_span_positions
        result.append((max(start - 1, 0), min(end + 1, last_real), offset if inside else 0,
                       float(weight) if inside else 0.0))
    return np.asarray(result, np.float64)  # [P, 4]


def _random_masks(rng, rows, seq_length, num_slots):
    """Rows of random real lengths (padding after) with masks anywhere in them (runs touching position 0 and
    the last real token, long and adjacent runs) in shuffled slots; unused slots hold random positions."""
    positions = rng.integers(0, seq_length, (rows, num_slots))
    weights = np.zeros((rows, num_slots), np.float32)
    attention_mask = np.zeros((rows, seq_length), np.int32)
    for row in range(rows):
        length = int(rng.integers(1, seq_length + 1))
        attention_mask[row, :length] = 1
        density = rng.choice([0.1, 0.4, 0.9])
        chosen = [p for p in range(length) if rng.random() < density][:num_slots]
        slots = rng.permutation(num_slots)[:len(chosen)]
        positions[row, slots] = chosen
        weights[row, slots] = 1.0
    return positions.astype(np.int32), weights, attention_mask


def test_boundaries_match_spanberts_merged_intervals_on_random_masks():
    rng = np.random.default_rng(0)
    positions, weights, attention_mask = _random_masks(rng, rows=300, seq_length=20, num_slots=12)
    got = span_boundary.span_boundaries(jnp.asarray(positions), jnp.asarray(weights), jnp.asarray(attention_mask),
                                        max_span_positions=3)
    got = np.stack([np.asarray(got.left_positions), np.asarray(got.right_positions), np.asarray(got.span_offsets),
                    np.asarray(got.weights)], axis=-1)  # [rows, P, 4]
    expected = np.stack([reference_boundaries(p, w, a, 3) for p, w, a in zip(positions, weights, attention_mask)])
    np.testing.assert_array_equal(got, expected)
    # The random rows did cover the edge cases the clamping and the table cut are for.
    used = weights > 0
    assert (positions[used] == 0).any() and (expected[..., 3][used] == 0).any()
    last_real = attention_mask.sum(axis=1) - 1
    assert ((positions == last_real[:, None]) & used & (last_real[:, None] < 19)).any()


def test_boundaries_of_span_masks_are_real_unmasked_tokens():
    """On BERT-style rows ([CLS] text [SEP] [PAD]...) masked by `masking.py`, every boundary is a real token
    outside the span, [CLS] and [SEP] included, so the head never sees what it predicts."""
    rng = np.random.default_rng(1)
    batch, seq_length = 32, 32
    lengths = rng.integers(4, seq_length + 1, batch)
    attention_mask = (np.arange(seq_length)[None] < lengths[:, None]).astype(np.int32)
    input_ids = np.where(attention_mask > 0, rng.integers(5, 100, (batch, seq_length)), 0)
    input_ids[:, 0] = 2
    input_ids[np.arange(batch), lengths - 1] = 3
    spec = masking.MaskingSpec(kind="span", vocab_size=100, max_predictions_per_seq=12, mask_rate=0.3)
    word_starts = jnp.asarray(rng.random((batch, seq_length)) < 0.6)

    @jax.jit
    def mask_and_find_spans(input_ids, attention_mask):
        maskable = masking.maskable_positions(input_ids, attention_mask, 5)
        masked = masking.mask_tokens(jax.random.key(0), input_ids, maskable, spec, word_starts=word_starts)
        return masked, span_boundary.span_boundaries(masked.masked_positions, masked.masked_lm_weights,
                                                     attention_mask, max_span_positions=12)

    masked, got = mask_and_find_spans(jnp.asarray(input_ids), jnp.asarray(attention_mask))
    used = np.asarray(masked.masked_lm_weights) > 0
    is_masked = np.zeros((batch, seq_length), bool)
    for row in range(batch):
        is_masked[row, np.asarray(masked.masked_positions)[row][used[row]]] = True
    for side in (np.asarray(got.left_positions), np.asarray(got.right_positions)):
        assert not np.take_along_axis(is_masked, side, axis=1)[used].any()
        assert (np.take_along_axis(attention_mask, side, axis=1)[used] > 0).all()
    assert (np.take_along_axis(input_ids, np.asarray(got.left_positions), axis=1)[used] == 2).any()
    assert (np.take_along_axis(input_ids, np.asarray(got.right_positions), axis=1)[used] == 3).any()
    np.testing.assert_array_equal(np.asarray(got.weights), np.asarray(masked.masked_lm_weights))


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _layer_norm(x, norm, eps):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * norm["scale"] + norm["bias"]


def reference_sbo_sums(params, sequence_output, labels, boundaries, eps):
    """The SBO head and its cross-entropy in float64, one prediction at a time."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    head, words = p["sbo_head"], p["bert"]["embeddings"]["word_embeddings"]["embedding"]
    loss_sum = correct = count = 0.0
    for row, slot in np.ndindex(labels.shape):
        left, right, offset, weight = boundaries[row, slot]
        if weight == 0:
            continue
        x = np.concatenate([sequence_output[row, int(left)], sequence_output[row, int(right)],
                            head["position_embeddings"]["embedding"][int(offset)]])
        h = _layer_norm(_gelu(x @ head["dense"]["kernel"] + head["dense"]["bias"]), head["layer_norm"], eps)
        y = _layer_norm(_gelu(h @ head["output_dense"]["kernel"] + head["output_dense"]["bias"]),
                        head["output_layer_norm"], eps)
        logits = y @ words.T + head["bias"]
        log_probs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        loss_sum += -weight * log_probs[labels[row, slot]]
        correct += weight * (np.argmax(logits) == labels[row, slot])
        count += weight
    return loss_sum, correct, count


def _single_segment_batch(rng, batch, seq_length, vocab):
    lengths = rng.integers(seq_length // 2, seq_length + 1, batch)
    attention_mask = (np.arange(seq_length)[None] < lengths[:, None]).astype(np.int32)
    input_ids = np.where(attention_mask > 0, rng.integers(5, vocab, (batch, seq_length)), 0).astype(np.int32)
    input_ids[:, 0] = 2
    input_ids[np.arange(batch), lengths - 1] = 3
    return {"input_ids": input_ids, "segment_ids": np.zeros_like(input_ids), "attention_mask": attention_mask,
            "next_sentence_labels": np.zeros(batch, np.int32)}


def _sbo_config(vocab=100, **train_overrides):
    """test_steps' tiny model, one layer narrower, with objective 'mlm_sbo' and span masks."""
    config = tiny_config(**train_overrides)
    config.objective = "mlm_sbo"
    config.model.update({"vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                         "sbo_max_span_positions": 2, "sbo_position_embedding_size": 8})
    config.data.tokenizer_vocab_size = vocab
    config.masking.update({"kind": "span", "max_predictions_per_seq": 10, "mask_rate": 0.3})
    return config_lib.validate(config)


def test_unused_and_cut_slots_contribute_nothing():
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(3, 5, 7)), jnp.float32)
    labels = rng.integers(0, 7, (3, 5))
    weights = jnp.asarray(rng.random((3, 5)) < 0.5, jnp.float32)
    other_labels = np.where(np.asarray(weights) > 0, labels, rng.integers(0, 7, (3, 5)))
    other_logits = jnp.where(weights[..., None] > 0, logits, 100.0 * logits)
    a = losses.span_boundary_sums(logits, jnp.asarray(labels), weights, jnp.ones(3))
    b = losses.span_boundary_sums(other_logits, jnp.asarray(other_labels), weights, jnp.ones(3))
    assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    assert float(a["sbo_count"]) == float(weights.sum())


def test_train_step_sbo_sums_match_numpy_float64_and_every_parameter_trains():
    """The train step's sbo_* sums equal the float64 head applied to the encoder's outputs on the step's own
    masks, with every head parameter random and a vocabulary (100) that the tied matmul pads to 128; the loss
    is the two means added, and every parameter (no pooler, no pair head) gets an update."""
    config = _sbo_config(warmup_steps=0)  # a non-zero learning rate at step 0
    mesh = parallel.make_mesh(config.mesh)
    setup, create = steps_lib.make_pretraining_setup(config, mesh)
    step = steps_lib.make_train_step(setup, mesh, config.train)
    state = create()
    assert "sbo_head" in state.params and "pair_head" not in state.params and "pooler" not in state.params["bert"]
    rng = np.random.default_rng(2)
    pure = nnx.to_pure_dict(jax.device_get(state.params))
    pure["sbo_head"] = jax.tree.map(lambda x: rng.normal(0.0, 0.5, x.shape).astype(np.float32), pure["sbo_head"])
    params = jax.device_get(state.params)
    nnx.replace_by_pure_dict(params, pure)
    state = state.replace(params=jax.device_put(params, setup.state_sharding.params))
    batch = jax.tree.map(jnp.asarray, _single_segment_batch(rng, batch=8, seq_length=32, vocab=100))
    # The step's masks: its mask key is the first half of its (seed, step) key.
    mask_key, _ = jax.random.split(steps_lib.step_key(state))
    masked = jax.jit(lambda b, k: steps_lib.mask_batch(setup, b, k))(batch, mask_key)
    sequence_output, _ = nnx.merge(setup.graphdef, state.params).bert(masked.input_ids, batch["segment_ids"],
                                                                      batch["attention_mask"])
    boundaries = np.stack([reference_boundaries(p, w, a, 2) for p, w, a in zip(
        np.asarray(masked.masked_positions), np.asarray(masked.masked_lm_weights), np.asarray(batch["attention_mask"]))])
    expected = reference_sbo_sums(pure, np.asarray(sequence_output, np.float64), np.asarray(masked.masked_lm_ids),
                                  boundaries, config.model.layer_norm_eps)

    state, metrics = step(state, parallel.to_global_batch(jax.device_get(batch), parallel.batch_sharding(mesh)))
    metrics = jax.device_get(metrics)
    assert 0 < expected[2] < metrics["mlm_count"]  # some slots are past the 2-row table
    np.testing.assert_allclose([metrics[k] for k in ("sbo_loss_sum", "sbo_correct", "sbo_count")], expected,
                               rtol=2e-5)
    summary = losses.summarize(metrics)
    assert summary["loss"] == pytest.approx(float(metrics["loss"]), rel=1e-6)
    assert summary["loss"] == pytest.approx(summary["mlm_loss"] + summary["sbo_loss"], rel=1e-6)
    for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(params),
                                jax.tree.leaves(jax.device_get(state.params)), strict=True):
        assert not np.array_equal(old, new), f"{jax.tree_util.keystr(path)} was not updated"
    line = reporting.train_log_line(1, 1, {**summary, "learning_rate": 1e-3, "grad_norm": 1.0,
                                           "sequences_per_second": 1.0}, 0.0)
    assert f"sbo_loss {summary['sbo_loss']:.4f} | sbo_acc {summary['sbo_accuracy']:.4f}" in line


def _metrics(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [m for m in map(json.loads, f) if m["split"] == split]


@pytest.mark.slow  # three minutes on a shared 2-core machine
def test_a_short_run_reports_sbo_evaluates_the_same_and_resumes_bitwise(tmp_path, corpus_file, small_tokenizer):
    def config():
        c = _small_config(corpus_file, "", small_tokenizer.model_path, num_steps=4)
        c.objective = "mlm_sbo"
        c.masking.kind = "span"
        c.checkpoint.every_steps = 2
        c.train.eval_every_steps = 2
        return c

    workdir = str(tmp_path / "run")
    final = loop.train_and_evaluate(config(), workdir)
    train = _metrics(workdir, "train")
    assert all(np.isfinite(m["sbo_loss"]) and 0 <= m["sbo_accuracy"] <= 1 for m in train)
    assert final["sbo_loss"] > 0 and "nsp_accuracy" not in final
    offline = evaluation.evaluate_checkpoint(workdir, step=4)
    for name in ("sbo_loss", "sbo_accuracy", "mlm_loss"):
        assert offline[name] == pytest.approx(final[name], rel=1e-6), name

    uninterrupted = _restore_params(workdir, 4, config())
    shutil.rmtree(os.path.join(checkpoint_lib.checkpoint_dir(workdir), "4"))
    loop.train_and_evaluate(config(), workdir)
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(_restore_params(workdir, 4, config())),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert [m["sbo_loss"] for m in _metrics(workdir, "train")] == [m["sbo_loss"] for m in train]

    transformers = pytest.importorskip("transformers")
    from bert_jax.hf import convert as hf_convert

    summary = hf_convert.export_hf(workdir, str(tmp_path / "hf"))
    assert "as BertForMaskedLM to" in summary and "span-boundary head" in summary and "left out" in summary
    _, info = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


def test_fine_tuning_takes_the_encoder_and_drops_the_span_boundary_head():
    from bert_jax.finetuning import steps as finetune_steps
    from bert_jax.finetuning import transfer
    from bert_jax.model import pretraining_heads

    def random_params(build):  # the model's parameter tree, built abstractly and filled with NumPy
        abstract = nnx.to_pure_dict(nnx.state(nnx.eval_shape(build), nnx.Param))
        return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), abstract)

    config, rng = _sbo_config(), np.random.default_rng(6)
    pretrained = random_params(lambda: pretraining_heads.build_model(config, seed=0))
    fresh = random_params(lambda: finetune_steps.build_task_model(config.model, "classification", 3, 1))
    moved = transfer.transfer_encoder(pretrained, fresh)
    assert any(name.startswith("sbo_head/") for name in moved.dropped)
    assert all(name.startswith(("bert/pooler/", "classifier/")) for name in moved.fresh), moved.fresh
    np.testing.assert_array_equal(moved.params["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                  pretrained["bert"]["embeddings"]["word_embeddings"]["embedding"])
