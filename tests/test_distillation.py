"""Distillation (DistilBERT, TinyBERT): each loss term against NumPy float64, the student's initialisation
from the teacher, a teacher that gets no gradient and stays bitwise unchanged, TinyBERT's phases, the
teacher's sources and the refusals, and real runs that resume bitwise and end closer to the teacher."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_documents, write_corpus
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import distillation, loop, losses, teacher
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import checkpoint as checkpoint_lib
from bert_jax.runtime import parallel

VOCAB, SEQ = 64, 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _teacher_config(**model):
    config = config_lib.default_config()
    config.model.update({"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": SEQ, **model})
    config.data.update({"max_seq_length": SEQ, "tokenizer_vocab_size": VOCAB})
    config.masking.max_predictions_per_seq = 4
    return config_lib.validate(config)


def _student_config(recipe, teacher_config=None, **distill):
    teacher_config = teacher_config or _teacher_config()
    config = config_lib.roberta_recipe(config_lib.default_config())
    config.distill.recipe = recipe
    config.distill.teacher_model = config_lib.from_stored(teacher_config.to_dict()).model
    config.distill.teacher_objective = teacher_config.objective
    config.distill.update(distill)
    if recipe == "distilbert":
        config.model.update({**teacher_config.model.to_dict(), "num_hidden_layers": 2, "type_vocab_size": 0})
    else:
        config.model.update({"vocab_size": teacher_config.model.vocab_size, "hidden_size": 16, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "intermediate_size": 32, "type_vocab_size": 2,
                             "max_position_embeddings": teacher_config.model.max_position_embeddings})
    config.data.update({"max_seq_length": SEQ, "tokenizer_vocab_size": VOCAB})
    config.masking.max_predictions_per_seq = 4
    config.train.update({"global_batch_size": 8, "num_train_steps": 10, "warmup_steps": 1, "learning_rate": 1e-3})
    return config_lib.validate(config)


def _teacher_params(teacher_config, seed=1):
    return nnx.state(pretraining_heads.build_model(teacher_config, seed), nnx.Param)


def _batch(rng, batch=8):
    input_ids = np.zeros((batch, SEQ), np.int32)
    for row in range(batch):
        length = int(rng.integers(8, SEQ + 1))
        input_ids[row, :length] = rng.integers(5, VOCAB, size=length)
        input_ids[row, [0, length - 1]] = [2, 3]
    return {"input_ids": input_ids, "segment_ids": np.zeros_like(input_ids),
            "attention_mask": (input_ids > 0).astype(np.int32), "next_sentence_labels": np.zeros(batch, np.int32)}


def _setup(config):
    mesh = parallel.make_mesh(config.mesh)
    setup, create = steps_lib.make_pretraining_setup(config, mesh)
    return mesh, setup, create


def _log_softmax64(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_a_pre_norm_student_starts_from_the_teachers_final_norm():
    """The MLM head is the teacher's, so the norm in front of it must be too, not a fresh one."""
    teacher_config = _teacher_config(norm_placement="pre", final_norm=True, ffn_activation="geglu")
    config = _student_config("distilbert", teacher_config)
    teacher_params = _teacher_params(teacher_config)
    source = nnx.to_pure_dict(teacher_params)
    final = source["bert"]["final_layer_norm"]
    final["scale"] = np.random.default_rng(0).uniform(0.5, 1.5, final["scale"].shape).astype(np.float32)
    final["bias"] = np.random.default_rng(1).normal(size=final["bias"].shape).astype(np.float32)
    nnx.replace_by_pure_dict(teacher_params, source)
    _, _, create = _setup(config)
    student = nnx.to_pure_dict(create(teacher_params).params)
    for name in ("scale", "bias"):
        np.testing.assert_array_equal(student["bert"]["final_layer_norm"][name], final[name])


def test_a_distilbert_student_of_an_alibi_teacher_keeps_its_segment_table():
    """ALiBi and RoPE teachers have no position table to fold segment 0 into: the student keeps the teacher's
    segment table (it was refused before, with advice the student config could not follow)."""
    teacher_config = _teacher_config(position_encoding="alibi")
    config = config_lib.default_config()
    config.distill.recipe = "distilbert"
    assert teacher.with_teacher(config, teacher_config).model.type_vocab_size == 2
    config = _student_config("distilbert", teacher_config)
    config.model.type_vocab_size = 2
    teacher_params = _teacher_params(teacher_config)
    _, setup, create = _setup(config_lib.validate(config))
    state = create(teacher_params)
    np.testing.assert_array_equal(nnx.to_pure_dict(state.params)["bert"]["embeddings"]["token_type_embeddings"]["embedding"],
                                  nnx.to_pure_dict(teacher_params)["bert"]["embeddings"]["token_type_embeddings"]["embedding"])
    batch = _batch(np.random.default_rng(1))
    args = (jnp.asarray(batch["input_ids"]), jnp.asarray(batch["segment_ids"]), jnp.asarray(batch["attention_mask"]))
    student_layers, _ = nnx.merge(setup.graphdef, state.params).bert.layer_outputs(*args)
    teacher_layers, _ = nnx.merge(setup.distill.teacher_graphdef, state.teacher).bert.layer_outputs(*args)
    np.testing.assert_allclose(student_layers[1], teacher_layers[1], atol=1e-6)


def test_each_loss_term_against_numpy_float64():
    rng = np.random.default_rng(0)
    student, teacher_logits = rng.normal(size=(3, 5, 11)) * 3, rng.normal(size=(3, 5, 11)) * 3
    weights = (rng.random((3, 5)) > 0.3).astype(np.float64)
    for temperature in (1.0, 2.0, 3.5):
        log_t, log_s = _log_softmax64(teacher_logits / temperature), _log_softmax64(student / temperature)
        kl = (np.exp(log_t) * (log_t - log_s)).sum(-1)
        value, count = distillation.soft_target_sums(jnp.asarray(student, jnp.float32),
                                                     jnp.asarray(teacher_logits, jnp.float32), weights, temperature)
        np.testing.assert_allclose(value, temperature**2 * (kl * weights).sum(), rtol=2e-5)
        assert float(count) == weights.sum()
        # The KL is the soft-target cross-entropy minus the teacher's entropy: the same gradient.
        cross_entropy = -(np.exp(log_t) * log_s).sum(-1)
        entropy = -(np.exp(log_t) * log_t).sum(-1)
        np.testing.assert_allclose(kl, cross_entropy - entropy, atol=1e-12)

    s_hidden, t_hidden = rng.normal(size=(3, 7, 6)), rng.normal(size=(3, 7, 6))
    tokens = (rng.random((3, 7)) > 0.25).astype(np.float64)
    cosine = (s_hidden * t_hidden).sum(-1) / (np.linalg.norm(s_hidden, axis=-1) * np.linalg.norm(t_hidden, axis=-1))
    value, count = distillation.cosine_sums(jnp.asarray(s_hidden), jnp.asarray(t_hidden), tokens)
    np.testing.assert_allclose(value, ((1 - cosine) * tokens).sum(), rtol=1e-5)
    assert float(count) == tokens.sum()
    value, _ = distillation.hidden_mse_sums(jnp.asarray(s_hidden), jnp.asarray(t_hidden), tokens)
    np.testing.assert_allclose(value, (((s_hidden - t_hidden) ** 2).mean(-1) * tokens).sum(), rtol=1e-5)

    s_scores, t_scores = rng.normal(size=(3, 2, 7, 7)), rng.normal(size=(3, 2, 7, 7))
    value, count = distillation.attention_mse_sums(jnp.asarray(s_scores), jnp.asarray(t_scores), tokens)
    expected = sum(((s_scores[b, :, q, k] - t_scores[b, :, q, k]) ** 2).mean()
                   for b in range(3) for q in range(7) for k in range(7) if tokens[b, q] and tokens[b, k])
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    assert float(count) == sum(tokens[b].sum() ** 2 for b in range(3))


def test_the_loss_is_the_weighted_sum_of_the_term_means():
    sums = {"mlm_loss_sum": 6.0, "mlm_correct": 1.0, "mlm_count": 3.0, "mlm_weight": 2.0,
            "distill_soft_loss_sum": 10.0, "distill_soft_count": 4.0, "distill_soft_weight": 5.0,
            "distill_cosine_loss_sum": 3.0, "distill_cosine_count": 12.0, "distill_cosine_weight": 1.0}
    np.testing.assert_allclose(losses.pretraining_loss({k: jnp.float32(v) for k, v in sums.items()}),
                               2.0 * 2.0 + 5.0 * 2.5 + 1.0 * 0.25, rtol=1e-6)
    summary = losses.summarize(sums)
    assert summary["distill_soft"] == 2.5 and summary["distill_cosine"] == 0.25 and "cosine_loss" not in summary


def test_layer_maps():
    assert distillation.uniform_layer_map(4, 12) == (3, 6, 9, 12)  # TinyBERT-4 from BERT-base
    assert distillation.uniform_layer_map(3, 12) == (4, 8, 12)
    assert distillation.uniform_layer_map(2, 3) == (1, 3)  # the last student layer always learns the last one
    assert distillation.every_other_layer(6) == (0, 2, 4, 6, 8, 10)  # DistilBERT from BERT-base


def test_student_starts_from_every_other_teacher_layer():
    teacher_config = _teacher_config()
    config = _student_config("distilbert", teacher_config)
    teacher_params = _teacher_params(teacher_config)
    _, setup, create = _setup(config)
    state = create(teacher_params)
    student, source = nnx.to_pure_dict(state.params), nnx.to_pure_dict(teacher_params)
    assert "token_type_embeddings" not in student["bert"]["embeddings"] and "pooler" not in student["bert"]
    for i, j in enumerate((0, 2)):
        for a, b in zip(jax.tree.leaves(student["bert"]["layers"][i]), jax.tree.leaves(source["bert"]["layers"][j]),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(student["mlm_head"]), jax.tree.leaves(source["mlm_head"]), strict=True):
        np.testing.assert_array_equal(a, b)
    embeddings = source["bert"]["embeddings"]
    np.testing.assert_array_equal(student["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                  embeddings["word_embeddings"]["embedding"])
    np.testing.assert_allclose(student["bert"]["embeddings"]["position_embeddings"]["embedding"],
                               embeddings["position_embeddings"]["embedding"]
                               + embeddings["token_type_embeddings"]["embedding"][0], rtol=0, atol=0)
    # Folding segment 0 into the positions: on single-segment rows the first layer's outputs are the teacher's.
    batch = _batch(np.random.default_rng(1))
    args = (jnp.asarray(batch["input_ids"]), jnp.asarray(batch["segment_ids"]), jnp.asarray(batch["attention_mask"]))
    student_layers, _ = nnx.merge(setup.graphdef, state.params).bert.layer_outputs(*args)
    teacher_layers, _ = nnx.merge(setup.distill.teacher_graphdef, state.teacher).bert.layer_outputs(*args)
    np.testing.assert_allclose(student_layers[1], teacher_layers[1], atol=1e-6)

    config.distill.init_from_teacher = False
    _, _, create = _setup(config)
    fresh = nnx.to_pure_dict(create(teacher_params).params)
    assert not np.array_equal(fresh["bert"]["layers"][0]["intermediate"]["kernel"],
                              source["bert"]["layers"][0]["intermediate"]["kernel"])


@pytest.mark.parametrize("recipe", ["distilbert", pytest.param("tinybert", marks=pytest.mark.slow)])
def test_teacher_gets_no_gradient_and_stays_bitwise_unchanged(recipe):
    teacher_config = _teacher_config()
    config = _student_config(recipe, teacher_config)
    mesh, setup, create = _setup(config)
    teacher_params = _teacher_params(teacher_config)
    state = create(teacher_params)
    before = jax.device_get(state.teacher)
    # The optimizer holds the student's moments only.
    student_size = steps_lib.parameter_count(state.params)
    assert steps_lib.parameter_count(state.opt_state) < 2 * student_size + 100
    if recipe == "tinybert":
        assert "fit_dense" in nnx.to_pure_dict(state.params)
    batch = {k: jnp.asarray(v) for k, v in _batch(np.random.default_rng(2)).items()}
    masked = steps_lib.mask_batch(setup, batch, jax.random.key(0))

    def loss_of_teacher(teacher_tree):
        sums = steps_lib.forward_sums(setup, state.params, batch, masked, jnp.ones(8), deterministic=True,
                                      teacher=teacher_tree, step=jnp.int32(0))
        return losses.pretraining_loss(sums)

    grads = jax.grad(loss_of_teacher)(state.teacher)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    step = steps_lib.make_train_step(setup, mesh, config.train)
    first_params = jax.device_get(state.params)
    for _ in range(3):
        state, metrics = step(state, parallel.to_global_batch(_batch(np.random.default_rng(3)),
                                                              parallel.batch_sharding(mesh)))
        assert np.isfinite(float(metrics["loss"]))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.teacher)), strict=True):
        np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first_params),
                                                         jax.tree.leaves(jax.device_get(state.params)), strict=True)]
    assert all(changed)  # every student parameter, fit_dense included, learns


def test_tinybert_learns_the_layers_first_then_the_prediction_layer():
    teacher_config = _teacher_config()
    config = _student_config("tinybert", teacher_config, intermediate_fraction=0.3, soft_target_weight=1.0,
                             mlm_weight=0.0)
    _, setup, create = _setup(config)
    state = create(_teacher_params(teacher_config))
    assert setup.distill.intermediate_steps == 3 and setup.distill.layer_map == (2, 4)
    batch = {k: jnp.asarray(v) for k, v in _batch(np.random.default_rng(4)).items()}
    masked = steps_lib.mask_batch(setup, batch, jax.random.key(0))
    weights = {}
    for step in (0, 2, 3, 9):
        sums = steps_lib.forward_sums(setup, state.params, batch, masked, jnp.ones(8), deterministic=True,
                                      teacher=state.teacher, step=jnp.int32(step))
        weights[step] = {t: float(sums[f"distill_{t}_weight"]) for t in ("embedding", "hidden", "attention", "soft")}
        assert all(float(sums[f"distill_{t}_loss_sum"]) > 0 for t in ("embedding", "hidden", "attention", "soft"))
    assert weights[0] == weights[2] == {"embedding": 1.0, "hidden": 1.0, "attention": 1.0, "soft": 0.0}
    assert weights[3] == weights[9] == {"embedding": 0.0, "hidden": 0.0, "attention": 0.0, "soft": 1.0}

    # The hidden term is the sum over student layers of the per-layer MSE against teacher layers 2 and 4.
    student = nnx.merge(setup.graphdef, state.params)
    teacher_model = nnx.merge(setup.distill.teacher_graphdef, state.teacher)
    args = (masked.input_ids, batch["segment_ids"], batch["attention_mask"])
    s_hidden, _ = student.bert.layer_outputs(*args)
    t_hidden, _ = teacher_model.bert.layer_outputs(*args)
    real = np.asarray(batch["attention_mask"]) > 0
    expected = sum(np.mean((np.asarray(student.fit_dense(s_hidden[m]), np.float64)
                            - np.asarray(t_hidden[g], np.float64)) ** 2, axis=-1)[real].mean()
                   for m, g in ((1, 2), (2, 4)))
    np.testing.assert_allclose(float(sums["distill_hidden_loss_sum"] / sums["distill_hidden_count"]), expected,
                               rtol=1e-4)


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_a_bfloat16_teacher():
    teacher_config = _teacher_config()
    config = _student_config("distilbert", teacher_config, teacher_dtype="bfloat16")
    mesh, setup, create = _setup(config)
    state = create(_teacher_params(teacher_config))
    assert {leaf.dtype for leaf in jax.tree.leaves(state.teacher)} == {jnp.dtype(jnp.bfloat16)}
    step = steps_lib.make_train_step(setup, mesh, config.train)
    state, metrics = step(state, parallel.to_global_batch(_batch(np.random.default_rng(5)),
                                                          parallel.batch_sharding(mesh)))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["distill_soft_loss_sum"]) > 0


def test_refusals_name_the_problem_and_the_fix(tmp_path, small_tokenizer):
    with pytest.raises(config_lib.InputError, match="needs a teacher"):
        teacher.materialise("", str(tmp_path / "run"))
    with pytest.raises(config_lib.InputError, match="is neither a pretraining workdir"):
        teacher.materialise(str(tmp_path), str(tmp_path / "run"))
    with pytest.raises(config_lib.InputError, match="hidden_size .* must be the teacher's"):
        config = _student_config("distilbert")
        config.model.hidden_size = 16
        config_lib.validate(config)
    with pytest.raises(config_lib.InputError, match="needs the teacher's 2 heads"):
        config = _student_config("tinybert")
        config.model.update({"num_attention_heads": 4})
        config_lib.validate(config)
    config = _student_config("tinybert")
    config.model.num_attention_heads, config.distill.attention_weight = 4, 0.0
    config_lib.validate(config)  # without the attention term the heads may differ
    with pytest.raises(config_lib.InputError, match="objective 'mlm'"):
        config = _student_config("tinybert")
        config.objective, config.data.instance_format = "mlm_nsp", "sentence_pairs"
        config_lib.validate(config)
    # A fine-tuned model is no teacher; a workdir's teacher copy is never swapped for another teacher.
    teacher_config = _teacher_config()
    params = nnx.state(pretraining_heads.build_model(teacher_config, 0), nnx.Param)
    checkpoint_lib.save_params_only(str(tmp_path / "finetuned"), params, teacher_config, small_tokenizer,
                                    {"source": "test", "task": {}})
    with pytest.raises(config_lib.InputError, match="is a fine-tuned model"):
        teacher.materialise(str(tmp_path / "finetuned"), str(tmp_path / "run"))
    first = _export_teacher(tmp_path, small_tokenizer, teacher_config)
    assert teacher.materialise(first, str(tmp_path / "run")) == teacher.teacher_dir(str(tmp_path / "run"))
    assert teacher.materialise(first, str(tmp_path / "run"))  # the same teacher again: the copy is used
    with pytest.raises(config_lib.InputError, match="holds the teacher copied from .*teacher_export"):
        teacher.materialise(str(tmp_path / "finetuned"), str(tmp_path / "run"))
    # Teachers that cannot teach: an ELECTRA discriminator (no MLM head), an ALBERT (shared layers).
    for name, teacher_config in (("electra", config_lib.electra_recipe(_teacher_config())),
                                 ("albert", _teacher_config(num_hidden_groups=1))):
        export = str(tmp_path / name)
        params = nnx.state(pretraining_heads.build_model(teacher_config, 0), nnx.Param)
        checkpoint_lib.save_params_only(export, params, teacher_config, small_tokenizer, {"source": "test"})
        with pytest.raises(config_lib.InputError, match="ELECTRA discriminator|shares its layers"):
            teacher.adopt_teacher(_student_config("distilbert"), export)


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
                          env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))


def test_commands_refuse_the_other_kind_of_config(tmp_path):
    result = _run("bert_jax.pretrain", "--config=configs/distill/distilbert_base.py", f"--workdir={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "use python -m bert_jax.distill" in result.stderr.strip().splitlines()[-1]
    result = _run("bert_jax.distill", "--config=configs/bert_tiny.py", f"--workdir={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "sets no distill.recipe" in result.stderr.strip().splitlines()[-1]


def _export_teacher(tmp_path, tokenizer, teacher_config):
    export = str(tmp_path / "teacher_export")
    checkpoint_lib.save_params_only(export, _teacher_params(teacher_config), teacher_config, tokenizer,
                                    {"source": "test"})
    return export


@pytest.mark.slow  # ~1 min: kept out of the 20-minute CI; run with -m slow
def test_a_distillation_run_resumes_bitwise_from_the_teacher_it_copied(tmp_path, corpus_file, small_tokenizer):
    """Through the real loop: the teacher export is copied into the workdir, the student learns, the final
    checkpoint holds the teacher unchanged, and a restart after a lost checkpoint ends bitwise equal even
    with the original teacher gone."""
    teacher_config = _teacher_config(vocab_size=320, max_position_embeddings=64)
    teacher_config.data.tokenizer_vocab_size = 300
    export = _export_teacher(tmp_path, small_tokenizer, teacher_config)
    eval_file = write_corpus(tmp_path / "eval.txt", make_documents(12, seed=5))

    def config():
        c = config_lib.roberta_recipe(config_lib.default_config())
        c.distill.recipe = "distilbert"
        c.teacher_checkpoint = export
        c.data.update({"corpus": corpus_file, "eval_corpus": eval_file, "max_seq_length": 64, "eval_num_examples": 16})
        c.masking.max_predictions_per_seq = 8
        c.train.update({"global_batch_size": 8, "num_train_steps": 6, "warmup_steps": 1, "learning_rate": 1e-3,
                        "log_every_steps": 1, "eval_every_steps": 6, "eval_batch_size": 16})
        c.checkpoint.update({"every_steps": 3, "max_to_keep": 5})
        return c

    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config(), workdir)
    stored = json.loads(pathlib.Path(workdir, "config.json").read_text(encoding="utf-8"))
    assert stored["model"]["num_hidden_layers"] == 2 and stored["model"]["type_vocab_size"] == 0
    assert stored["distill"]["teacher_model"]["num_hidden_layers"] == 4
    lines = [json.loads(line) for line in pathlib.Path(workdir, "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [m for m in lines if m["split"] == "train"]
    assert {"distill_soft", "distill_cosine", "mlm_accuracy"} <= set(train[-1])
    assert [m for m in lines if m["split"] == "eval"][-1]["distill_soft"] > 0

    from bert_jax.pretraining import run_checkpoint
    run = run_checkpoint.restore_run_checkpoint(workdir, 6)
    for a, b in zip(jax.tree.leaves(_teacher_params(teacher_config)), jax.tree.leaves(run.state.teacher), strict=True):
        np.testing.assert_array_equal(a, b)
    final = jax.device_get((run.state.params, run.state.opt_state))
    shutil.rmtree(export)
    shutil.rmtree(os.path.join(checkpoint_lib.checkpoint_dir(workdir), "6"))
    loop.train_and_evaluate(config(), workdir)
    again = jax.device_get(run_checkpoint.restore_run_checkpoint(workdir, 6).state)
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves((again.params, again.opt_state)), strict=True):
        np.testing.assert_array_equal(a, b)

    changed = config()  # a resume never swaps the teacher silently
    changed.teacher_checkpoint = str(tmp_path / "another_teacher")
    with pytest.raises(config_lib.InputError, match="teacher_checkpoint"):
        loop.train_and_evaluate(changed, workdir)


@pytest.mark.slow  # ~4 min: kept out of the 20-minute CI; run with -m slow
def test_distilled_student_is_closer_to_its_teacher_and_survives_kill_9(tmp_path):
    """On the default corpus: a BERT-Tiny teacher, then the same 1-layer student (random start) trained for the
    same steps with and without the teacher's losses. Held-out KL(teacher || student) must end far lower with
    them. A distillation killed with SIGKILL mid-run and restarted ends bitwise where an uninterrupted one ends."""
    steps = ["--config.train.warmup_steps=10", "--config.train.log_every_steps=20", "--config.data.eval_num_examples=64"]
    result = _run("bert_jax.pretrain", "--config=configs/bert_tiny.py", f"--workdir={tmp_path / 'teacher'}",
                  "--config.train.num_train_steps=150", "--config.train.eval_every_steps=150",
                  "--config.checkpoint.every_steps=150", *steps)
    assert result.returncode == 0, result.stderr[-3000:]

    def distill(name, *extra, env=None):
        return _run("bert_jax.distill", "--config=configs/distill/distilbert_base.py", f"--workdir={tmp_path / name}",
                    f"--config.teacher_checkpoint={tmp_path / 'teacher'}", "--config.data.max_seq_length=128",
                    "--config.masking.max_predictions_per_seq=20", "--config.train.global_batch_size=32",
                    "--config.train.num_train_steps=80", "--config.train.eval_every_steps=80",
                    "--config.checkpoint.every_steps=40", "--config.train.learning_rate=2e-3",
                    "--config.distill.temperature=1.0", "--config.distill.init_from_teacher=False", *steps, *extra,
                    env=env)

    def held_out(name):
        lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        return [m for m in lines if m["split"] == "eval"][-1]

    assert distill("distilled").returncode == 0
    alone = distill("alone", "--config.distill.soft_target_weight=0", "--config.distill.cosine_weight=0",
                    "--config.distill.mlm_weight=1")
    assert alone.returncode == 0, alone.stderr[-3000:]
    distilled_kl, alone_kl = held_out("distilled")["distill_soft"], held_out("alone")["distill_soft"]
    assert distilled_kl < 0.3 * alone_kl, (distilled_kl, alone_kl)  # 0.017 vs 0.172 here

    killed = distill("killed", env={"BERT_JAX_TEST_KILL_AT": "60:step"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert distill("killed").returncode == 0
    from bert_jax.pretraining import run_checkpoint
    a = jax.device_get(run_checkpoint.restore_run_checkpoint(str(tmp_path / "distilled"), 80).state)
    b = jax.device_get(run_checkpoint.restore_run_checkpoint(str(tmp_path / "killed"), 80).state)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # two compilations of a loss and gradient: kept out of the 20-minute CI
@pytest.mark.parametrize("recipe", ["distilbert", "tinybert"])
def test_flops_count_the_teacher_forward_against_xla(recipe):
    """The benchmark's FLOPs of a distillation step (student training + teacher forward + TinyBERT's map)
    against XLA's count of the compiled loss-and-gradient; the parameter breakdown adds up to the real tree."""
    from bert_jax.tools import model_stats

    teacher_config = _teacher_config(vocab_size=512, hidden_size=64, intermediate_size=256, num_attention_heads=2,
                                     max_position_embeddings=64)
    config = _student_config(recipe, teacher_config)
    config.data.max_seq_length, config.masking.max_predictions_per_seq = 64, 10
    config = config_lib.validate(config)
    _, setup, create = _setup(config)
    state = create(_teacher_params(teacher_config))
    parts = model_stats.parameter_breakdown(config)
    assert parts["total_params"] == steps_lib.parameter_count(state.params)
    assert (parts["fit_dense"] > 0) == (recipe == "tinybert")
    batch_size, seq = 8, 64
    ids = jnp.full((batch_size, seq), 7, jnp.int32)
    batch = {"input_ids": ids, "segment_ids": ids * 0, "attention_mask": ids * 0 + 1}
    masked = steps_lib.mask_batch(setup, batch, jax.random.key(0))

    def loss(params):
        sums = steps_lib.forward_sums(setup, params, batch, masked, jnp.ones(batch_size), deterministic=True,
                                      teacher=state.teacher, step=jnp.int32(0))
        return losses.pretraining_loss(sums)

    xla_flops = jax.jit(jax.grad(loss)).lower(state.params).compile().cost_analysis()["flops"]
    ours = model_stats.training_flops_per_token(config) * batch_size * seq
    assert 0.8 < ours / xla_flops < 1.1, (ours, xla_flops)


def test_a_student_starts_from_an_export_with_other_heads_or_without_fit_dense():
    """train.init_checkpoint for a student: an mlm_nsp export's pooler and NSP head are left out, TinyBERT's
    fit_dense starts fresh, and an export lacking a tensor the student needs is one line."""
    bert = _teacher_config(num_hidden_layers=2)  # mlm_nsp: pooler and pair head
    loaded = nnx.state(pretraining_heads.build_model(bert, 3), nnx.Param)
    student_config = config_lib.from_stored(bert.to_dict())
    student_config.objective, student_config.data.instance_format = "mlm", "full_sentences"
    fresh = nnx.state(pretraining_heads.build_model(student_config, 0), nnx.Param)
    started = nnx.to_pure_dict(teacher.student_start(loaded, fresh, "export"))
    assert set(started) == {"bert", "mlm_head"} and "pooler" not in started["bert"]
    np.testing.assert_array_equal(started["bert"]["layers"][1]["output"]["kernel"],
                                  nnx.to_pure_dict(loaded)["bert"]["layers"][1]["output"]["kernel"])
    tiny = _student_config("tinybert", _teacher_config(num_hidden_layers=4))
    tiny_fresh = nnx.state(pretraining_heads.build_model(tiny, 0), nnx.Param)
    plain = config_lib.from_stored(tiny.to_dict())
    plain.distill.recipe = ""
    plain_params = nnx.state(pretraining_heads.build_model(plain, 5), nnx.Param)
    started = nnx.to_pure_dict(teacher.student_start(plain_params, tiny_fresh, "export"))
    np.testing.assert_array_equal(started["fit_dense"]["kernel"], nnx.to_pure_dict(tiny_fresh)["fit_dense"]["kernel"])
    np.testing.assert_array_equal(started["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                  nnx.to_pure_dict(plain_params)["bert"]["embeddings"]["word_embeddings"]["embedding"])
    with pytest.raises(config_lib.InputError, match="does not fit the student: missing bert/layers/1"):
        teacher.student_start(nnx.state(pretraining_heads.build_model(_teacher_config(num_hidden_layers=1), 0),
                                        nnx.Param), fresh, "export")


def test_a_distilbert_student_keeps_its_own_speed_switches():
    """The student takes the teacher's shape, not its speed switches: a bf16-matmul or fused-QKV student of a
    float32 teacher stays one (the teacher's values used to overwrite them silently)."""
    teacher_config = _teacher_config()
    config = config_lib.default_config()
    config.distill.recipe = "distilbert"
    config.model.update(matmul_dtype="bfloat16", fused_qkv=True, scan_layers=True)
    student = teacher.with_teacher(config, teacher_config).model
    assert (student.matmul_dtype, student.fused_qkv, student.scan_layers) == ("bfloat16", True, True)
    assert (teacher_config.model.matmul_dtype, teacher_config.model.fused_qkv) == ("float32", False)
    assert student.num_hidden_layers == max(1, teacher_config.model.num_hidden_layers // 2)
