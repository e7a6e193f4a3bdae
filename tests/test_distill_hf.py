"""Distillation students to and from transformers: a DistilBERT student (type_vocab_size 0) is HF's
DistilBertForMaskedLM and a TinyBERT student (less fit_dense) HF's BertForMaskedLM, each loading with no
missing or unexpected keys and giving our logits to 1e-5; DistilBertForMaskedLM imports back to the same
parameters; and both students have the parameter counts of transformers' classes at full size."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_encoder import load_config
from test_hf_names import _random_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.hf import distilbert_names, task_names
from bert_jax.hf import files as hf_files
from bert_jax.hf import names as hf_names
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import teacher

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ, PAD = 12, 0
_SMALL = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
          "attention_probs_dropout_prob": 0.0}


def _distilbert_config(**model):
    config = config_lib.default_config()
    config.model.update({**_SMALL, "type_vocab_size": 0, **model})
    config.objective = "mlm"
    config.data.max_seq_length = SEQ
    return config


def _tinybert_config():
    config = _distilbert_config(type_vocab_size=2, hidden_size=24, num_attention_heads=4, intermediate_size=48)
    config.distill.recipe = "tinybert"
    config.distill.teacher_model.update({**_SMALL, "hidden_size": 48})
    return config


def _load_hf(state_dict, hf_config, directory):
    safetensors_numpy.save_file(state_dict, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config))
    model_class = getattr(transformers, hf_config["architectures"][0])
    hf_model, info = model_class.from_pretrained(str(directory), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return hf_model.eval().float()


def _max_diff(model, config, hf_model):
    """Max |ours - HF| of the MLM logits at masked positions of right-padded rows (lengths 12, 9, 6)."""
    rng = np.random.default_rng(1)
    mask = (np.arange(SEQ)[None] < np.asarray([SEQ, 9, 6])[:, None]).astype(np.int64)
    ids = np.where(mask > 0, rng.integers(5, config.model.vocab_size, (3, SEQ)), PAD)
    positions = np.asarray([[1, 5, 11], [0, 4, 8], [2, 3, 5]])
    ours, _ = model(jnp.asarray(ids), jnp.zeros_like(jnp.asarray(ids)), jnp.asarray(mask), jnp.asarray(positions))
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    return np.abs(np.asarray(ours) - np.take_along_axis(theirs, positions[:, :, None], axis=1)).max()


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_tanh"])
def test_distilbert_student_is_distilbert_for_masked_lm(hidden_act, tmp_path):
    config = _distilbert_config(hidden_act=hidden_act)
    assert hf_names.hf_architecture(config) == "DistilBertForMaskedLM"
    model, params = _random_params(config)
    assert model.bert.embeddings.token_type_embeddings is None and model.bert.pooler is None
    state_dict, hf_config = hf_files.hf_state_and_config(params, config, pad_token_id=PAD, bos_token_id=2,
                                                         eos_token_id=3)
    assert {hf_config[k] for k in ("dim", "n_layers", "n_heads", "hidden_dim")} == {32, 2, 4, 64}
    hf_model = _load_hf(state_dict, hf_config, tmp_path)
    assert hf_model.vocab_projector.weight.data_ptr() == hf_model.distilbert.embeddings.word_embeddings.weight.data_ptr()
    assert _max_diff(model, config, hf_model) <= 1e-5


def test_tinybert_student_is_bert_for_masked_lm_without_fit_dense(tmp_path):
    config = _tinybert_config()
    assert hf_names.hf_architecture(config) == "BertForMaskedLM"
    model, params = _random_params(config)
    assert params["fit_dense"]["kernel"].shape == (24, 48)
    state_dict, hf_config = hf_files.hf_state_and_config(params, config, pad_token_id=PAD)
    assert not any("fit_dense" in name or "pooler" in name for name in state_dict)
    hf_model = _load_hf(state_dict, hf_config, tmp_path)
    assert _max_diff(model, config, hf_model) <= 1e-5


def test_distilbert_import_inverts_export():
    config = _distilbert_config()
    _, params = _random_params(config)
    state_dict = distilbert_names.to_state_dict(params, config, pad_token_id=PAD)
    hf_config = distilbert_names.config_dict(config, pad_token_id=PAD)
    loaded = distilbert_names.from_hf_distilbert(state_dict, hf_config)
    assert loaded.missing_heads == [] and loaded.unexpected_keys == []
    assert loaded.config_overrides["objective"] == "mlm"
    fields = dict(config.model)
    assert {k: fields[k] for k in loaded.config_overrides["model"]} == loaded.config_overrides["model"]
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(loaded.params),
                                 jax.tree_util.tree_leaves_with_path(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_bare_distilbert_model_imports_with_a_fresh_head_and_untied_projector_is_refused():
    config = _distilbert_config()
    _, params = _random_params(config)
    state_dict = distilbert_names.to_state_dict(params, config, pad_token_id=PAD)
    hf_config = distilbert_names.config_dict(config, pad_token_id=PAD)
    bare = {k[len("distilbert."):]: v for k, v in state_dict.items() if k.startswith("distilbert.")}
    loaded = distilbert_names.from_hf_distilbert(bare, hf_config)
    assert loaded.missing_heads == ["mlm_head"] and "mlm_head" not in loaded.params
    untied = dict(state_dict, **{"vocab_projector.weight": np.ones((64, 32), np.float32)})
    with pytest.raises(InputError, match="not tied"):
        distilbert_names.from_hf_distilbert(untied, hf_config)


def test_what_transformers_cannot_hold_is_refused_in_one_line():
    config = _distilbert_config(layer_norm_eps=1e-5)  # a student of a RoBERTa teacher
    with pytest.raises(InputError, match="1e-12"):
        hf_files.hf_state_and_config(_random_params(config)[1], config, pad_token_id=PAD)
    with pytest.raises(InputError, match="type_vocab_size=0"):  # fine-tuned: DistilBERT's heads are not ours
        task_names.hf_task_config_dict(_distilbert_config(), "classification", ("a", "b"), pad_token_id=PAD)
    with pytest.raises(InputError, match="import the pretrained DistilBertForMaskedLM"):
        task_names.from_hf_task_state_dict({}, {"model_type": "distilbert",
                                                "architectures": ["DistilBertForSequenceClassification"]})


def _count(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def _hf_count(class_name, config_class, **fields) -> int:
    with torch.device("meta"):
        model = getattr(transformers, class_name)(getattr(transformers, config_class)(**fields))
    return sum(p.numel() for p in model.parameters())  # tied tables are one Parameter, counted once


def _student_params(config_name, monkeypatch):
    """Our student's parameter shapes, derived from a configs/bert_base.py teacher by teacher.adopt_teacher."""
    bert_base = config_lib.validate(load_config("bert_base"))
    monkeypatch.setattr(teacher.checkpoint_lib, "read_export_info", lambda _: (bert_base, None, {}))
    monkeypatch.setattr(teacher.checkpoint_lib, "exported_tokenizer_path", lambda _: "vocab.json")
    config = config_lib.validate(teacher.adopt_teacher(load_config(config_name), "teacher"))
    abstract = nnx.eval_shape(lambda: pretraining_heads.build_model(config, 0))
    return config.model, nnx.to_pure_dict(nnx.state(abstract, nnx.Param))


def test_distilbert_student_has_distilbert_for_masked_lms_parameter_count(monkeypatch):
    m, params = _student_params("distill/distilbert_base", monkeypatch)
    assert (m.num_hidden_layers, m.type_vocab_size, m.hidden_size) == (6, 0, 768)
    theirs = _hf_count("DistilBertForMaskedLM", "DistilBertConfig", vocab_size=m.vocab_size, dim=m.hidden_size,
                       n_layers=m.num_hidden_layers, n_heads=m.num_attention_heads, hidden_dim=m.intermediate_size,
                       max_position_embeddings=m.max_position_embeddings)
    assert _count(params) == theirs and 66e6 < theirs < 67.5e6  # distilbert-base-uncased: 66,985,530


def test_tinybert_4_student_has_bert_for_masked_lms_parameter_count(monkeypatch):
    m, params = _student_params("distill/tinybert_4l", monkeypatch)
    assert (m.vocab_size, m.max_position_embeddings, m.type_vocab_size) == (30522, 512, 2)
    ours = _count({k: v for k, v in params.items() if k != "fit_dense"})
    theirs = _hf_count("BertForMaskedLM", "BertConfig", vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                       num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                       intermediate_size=m.intermediate_size, max_position_embeddings=m.max_position_embeddings,
                       type_vocab_size=m.type_vocab_size)
    assert ours == theirs and 14e6 < ours < 15e6  # TinyBERT-4: 14.5M


def _run(module, *args, cwd):
    """A bert_jax command as users run it; returns its stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    result = subprocess.run([sys.executable, "-m", module, *args], check=False, cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _distill_flags(recipe_config, teacher_dir, corpus, workdir, *extra):
    small = {"model.hidden_size": 24, "model.num_attention_heads": 2, "model.intermediate_size": 48,
             "data.max_seq_length": 32, "masking.max_predictions_per_seq": 5, "train.global_batch_size": 8,
             "train.num_train_steps": 2, "train.warmup_steps": 1, "train.eval_every_steps": 2,
             "train.log_every_steps": 1, "checkpoint.every_steps": 2, "data.eval_num_examples": 8,
             "train.eval_batch_size": 8}
    return [f"--config={ROOT}/configs/distill/{recipe_config}.py", f"--config.teacher_checkpoint={teacher_dir}",
            f"--config.data.corpus={corpus}", "--config.data.eval_fraction=0.2", f"--workdir={workdir}",
            *(f"--config.{k}={v}" for k, v in small.items()), *extra]


@pytest.mark.slow  # four CLI runs and two tiny distillations: about a minute on 2 cores
def test_students_through_the_commands(corpus_file, small_tokenizer, tmp_path):
    """Teacher run -> distill (DistilBERT, TinyBERT) -> export --format=hf -> transformers loads them -> import_hf
    of the DistilBertForMaskedLM -> distillation continues from it, keeping its shape."""
    from test_loop import _small_config

    from bert_jax.pretraining import loop, run_checkpoint
    teacher_run = str(tmp_path / "teacher")
    loop.train_and_evaluate(_small_config(corpus_file, "", small_tokenizer.model_path, num_steps=2), teacher_run)
    for recipe, architecture in (("distilbert_base", "DistilBertForMaskedLM"), ("tinybert_4l", "BertForMaskedLM")):
        workdir, hf_dir = str(tmp_path / recipe), str(tmp_path / f"{recipe}_hf")
        layers = ["--config.model.num_hidden_layers=2"] if recipe == "tinybert_4l" else []  # the teacher has 2
        _run("bert_jax.distill", *_distill_flags(recipe, teacher_run, corpus_file, workdir, *layers), cwd=tmp_path)
        summary = _run("bert_jax.export", f"--workdir={workdir}", "--format=hf", f"--output={hf_dir}", cwd=tmp_path)
        assert f"as {architecture}" in summary and ("fit_dense" in summary) == (recipe == "tinybert_4l"), summary
        _, info = getattr(transformers, architecture).from_pretrained(hf_dir, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
    imported = str(tmp_path / "imported")
    summary = _run("bert_jax.import_hf", f"--input={tmp_path / 'distilbert_base_hf'}", f"--output={imported}",
                   cwd=tmp_path)
    config, _, params = run_checkpoint.load_params_only(imported)
    assert config.objective == "mlm" and config.model.type_vocab_size == 0 and "initialised fresh" not in summary
    _, _, distilled = run_checkpoint.load_params_only(_export_params(tmp_path / "distilbert_base"))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(distilled), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again = str(tmp_path / "again")
    _run("bert_jax.distill", *_distill_flags("distilbert_base", teacher_run, corpus_file, again,
                                             f"--config.train.init_checkpoint={imported}"), cwd=tmp_path)
    after_config, _, _ = run_checkpoint.load_params_only(_export_params(tmp_path / "again"))
    assert after_config.model.to_dict() == config.model.to_dict()


def _export_params(workdir):
    from bert_jax.pretraining import run_checkpoint
    output = str(workdir) + "_params"
    run_checkpoint.export_params(str(workdir), output)
    return output
