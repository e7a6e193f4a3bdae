"""End to end: the default job in a subprocess, exact resume, evaluate == in-run eval, clear errors."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import make_documents, write_corpus

from bert_jax import config as config_lib
from bert_jax.pretraining import evaluation, loop
from bert_jax.runtime import checkpoint as checkpoint_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _metrics(workdir, split):
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
    return [m for m in lines if m["split"] == split]


def test_default_job_and_evaluate_command(tmp_path):
    workdir = tmp_path / "run"
    result = _run("bert_jax.pretrain", "--config=configs/bert_tiny.py", f"--workdir={workdir}",
                  "--config.train.num_train_steps=3", "--config.train.warmup_steps=1",
                  "--config.train.log_every_steps=1", "--config.train.eval_every_steps=3",
                  "--config.checkpoint.every_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 3/3 | loss" in result.stderr and "seq/s | ETA" in result.stderr
    assert "checkpoint_manager.py" not in result.stderr  # Orbax's INFO chatter is filtered from the log
    assert (workdir / "corpus" / "stdlib_docstrings.txt").stat().st_size > 500_000  # the embedded corpus
    assert (workdir / "tokenizer" / "spm.model").exists()
    assert [m["step"] for m in _metrics(workdir, "train")] == [1, 2, 3]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    in_run = _metrics(workdir, "eval")[-1]
    assert in_run["step"] == 3 and in_run["num_examples"] > 100

    evaluated = _run("bert_jax.evaluate", f"--workdir={workdir}", "--step=3")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    figures = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert figures["step"] == 3 and figures["num_examples"] == in_run["num_examples"]
    for name in ("mlm_accuracy", "mlm_loss", "nsp_accuracy"):
        assert figures[name] == pytest.approx(in_run[name], rel=1e-6, abs=1e-7), name


def _small_config(corpus, eval_corpus, tokenizer_path, num_steps):
    config = config_lib.default_config()
    config.model.update({"vocab_size": 320, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": 64})
    config.data.update({"corpus": corpus, "eval_corpus": eval_corpus, "tokenizer_model": tokenizer_path,
                        "tokenizer_vocab_size": 300, "max_seq_length": 64, "eval_num_examples": 40,
                        "eval_fraction": 0.2})  # 60 documents: about 12 held out when no eval_corpus is given
    config.masking.max_predictions_per_seq = 8
    config.train.update({"global_batch_size": 8, "num_train_steps": num_steps, "warmup_steps": 2,
                         "learning_rate": 1e-3, "log_every_steps": 1, "eval_every_steps": 3, "eval_batch_size": 16})
    config.checkpoint.update({"every_steps": 3, "max_to_keep": 5})
    return config


def test_restart_resumes_exactly_and_evaluate_matches(tmp_path, corpus_file, small_tokenizer):
    eval_file = write_corpus(tmp_path / "eval.txt", make_documents(12, seed=5))
    workdir = str(tmp_path / "run")
    config = _small_config(corpus_file, eval_file, small_tokenizer.model_path, num_steps=6)
    loop.train_and_evaluate(config, workdir)
    checkpointer = checkpoint_lib.Checkpointer(workdir, create=False)
    assert checkpointer.all_steps() == [3, 6]
    first_run = _metrics(workdir, "train")

    # The evaluation command's figures for a checkpoint equal the in-run evaluation at that step.
    in_run = next(m for m in _metrics(workdir, "eval") if m["step"] == 3)
    offline = evaluation.evaluate_checkpoint(workdir, step=3, corpus=eval_file)
    for name in ("mlm_accuracy", "mlm_loss", "nsp_accuracy", "num_examples"):
        assert offline[name] == pytest.approx(in_run[name], rel=1e-6), name

    # Simulate a crash after the step-3 checkpoint: step 6 never made it to disk.
    uninterrupted = _restore_params(workdir, 6, config)
    checkpointer.close()
    shutil.rmtree(os.path.join(checkpoint_lib.checkpoint_dir(workdir), "6"))

    loop.train_and_evaluate(_small_config(corpus_file, eval_file, small_tokenizer.model_path, 6), workdir)
    resumed = _restore_params(workdir, 6, config)
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise: same batches, masks and dropout after the restart
    second_run = _metrics(workdir, "train")
    assert [m["step"] for m in second_run] == [1, 2, 3, 4, 5, 6]  # every step once, none duplicated
    for before, after in zip(first_run, second_run, strict=True):
        assert before["loss"] == after["loss"] and before["mlm_accuracy"] == after["mlm_accuracy"]


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_packed_run_with_the_speed_switches_resumes_exactly(tmp_path, corpus_file, small_tokenizer, monkeypatch):
    """Packed rows (several NSP instances each), fused attention, scanned and rematerialised layers, through
    the real trainer: the train step gets the packed keys, and a restart is still bitwise exact."""
    from bert_jax.runtime import parallel

    def config():
        c = _small_config(corpus_file, "", small_tokenizer.model_path, num_steps=6)
        c.data.update({"pack_sequences": True, "max_instances_per_pack": 3, "short_seq_prob": 0.5})
        c.masking.max_predictions_per_seq = 10
        c.model.update({"attention_impl": "dot_product", "attention_probs_dropout_prob": 0.0, "scan_layers": True,
                        "remat_policy": "dots_saveable"})
        return c

    seen_keys, to_global_batch = set(), parallel.to_global_batch

    def recording(batch, sharding):
        seen_keys.update(batch)
        return to_global_batch(batch, sharding)

    monkeypatch.setattr(parallel, "to_global_batch", recording)
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config(), workdir)
    assert {"position_ids", "pair_positions", "pair_weights"} <= seen_keys
    first_run = _metrics(workdir, "train")
    uninterrupted = _restore_params(workdir, 6, config())
    shutil.rmtree(os.path.join(checkpoint_lib.checkpoint_dir(workdir), "6"))
    loop.train_and_evaluate(config(), workdir)
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(_restore_params(workdir, 6, config())),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert [m["loss"] for m in _metrics(workdir, "train")] == [m["loss"] for m in first_run]


def _restore_params(workdir, step, config):
    from bert_jax.data import tokenizer_factory
    from bert_jax.pretraining import steps as steps_lib
    from bert_jax.runtime import parallel
    mesh = parallel.make_mesh(config.mesh)
    setup, _ = steps_lib.make_pretraining_setup(config, mesh, tokenizer_factory.load_tokenizer(config.data.tokenizer_model))
    checkpointer = checkpoint_lib.Checkpointer(workdir, create=False)
    state = checkpointer.restore_state(step, setup.abstract_state)
    checkpointer.close()
    return jax.device_get((state.params, state.opt_state, state.step))


def test_missing_corpus_is_a_one_line_error(tmp_path):
    result = _run("bert_jax.pretrain", "--config=configs/bert_tiny.py", f"--workdir={tmp_path}",
                  f"--config.data.corpus={tmp_path / 'no_such_dir'}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no text files match config.data.corpus")


def test_bad_config_is_a_one_line_error(tmp_path):
    result = _run("bert_jax.pretrain", "--config=configs/bert_tiny.py", f"--workdir={tmp_path}",
                  "--config.model.num_attention_heads=3")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "hidden_size (128) is not divisible by config.model.num_attention_heads (3)" in result.stderr


def test_tokenizer_larger_than_model_vocab_is_refused(tmp_path, corpus_file, small_tokenizer):
    config = _small_config(corpus_file, "", small_tokenizer.model_path, num_steps=2)
    config.model.vocab_size = 200  # the tokenizer has about 280 pieces
    config.data.tokenizer_vocab_size = 200
    with pytest.raises(config_lib.InputError, match=r"has \d+ pieces but config.model.vocab_size is 200"):
        loop.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize("recipe", [pytest.param("albert", marks=pytest.mark.slow), "roberta"])
def test_recipes_train_and_evaluate(tmp_path, corpus_file, small_tokenizer, recipe):
    """ALBERT (SOP, n-gram static masks, factorized + shared) and RoBERTa (MLM, packed) end to end."""
    config = _small_config(corpus_file, "", small_tokenizer.model_path, num_steps=3)
    config.data.eval_fraction = 0.2
    if recipe == "albert":
        config.model.update({"embedding_size": 16, "num_hidden_groups": 1})
        config.objective = "mlm_sop"
        config.masking.update({"kind": "ngram", "dynamic": False, "dupe_factor": 3})
    else:
        config.objective = "mlm"
        config.data.instance_format = "full_sentences"
        config.masking.kind = "whole_word"
    workdir = str(tmp_path / recipe)
    final = loop.train_and_evaluate(config, workdir)
    assert final["step"] == 3 and final["num_examples"] > 0
    assert ("sop_accuracy" in final) == (recipe == "albert")
    assert "nsp_accuracy" not in final
    offline = evaluation.evaluate_checkpoint(workdir, step=3)
    assert offline["mlm_loss"] == pytest.approx(final["mlm_loss"], rel=1e-6)


@pytest.mark.slow  # long end-to-end case: `-m slow`, to keep CI under 20 minutes
def test_relative_paths_are_stored_absolute(tmp_path, corpus_file, small_tokenizer, monkeypatch):
    """A run started with relative paths can be evaluated and resumed from any other directory."""
    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(corpus_file, here / "corpus.txt")
    shutil.copy(small_tokenizer.model_path, here / "spm.model")
    monkeypatch.chdir(here)
    config = _small_config("corpus.txt", "", "spm.model", num_steps=3)
    config.data.eval_fraction = 0.2
    loop.train_and_evaluate(config, "run")
    stored = json.loads((here / "run" / "config.json").read_text())
    assert stored["data"]["corpus"] == str(here / "corpus.txt")
    assert stored["data"]["tokenizer_model"] == str(here / "spm.model")
    monkeypatch.chdir(tmp_path)  # elsewhere: the stored paths still lead to the corpus and the tokenizer
    figures = evaluation.evaluate_checkpoint(str(here / "run"))
    assert figures["step"] == 3 and figures["num_examples"] > 0


@pytest.mark.slow  # a run, its evaluation and two refused resumes: over a minute on 2 shared cores
def test_a_multilingual_run_reports_each_language_and_refuses_another_mixture(tmp_path, small_tokenizer, caplog):
    texts = {language: write_corpus(tmp_path / f"{language}.txt", make_documents(n, seed=20 + n))
             for language, n in (("ru", 16), ("en", 40), ("de", 10))}
    corpus = f"ru:{texts['ru']},en:{texts['en']}"
    workdir = str(tmp_path / "run")
    config = _small_config(corpus, "", small_tokenizer.model_path, num_steps=2)
    config.objective = "mlm"  # the smallest program to compile: one tiny layer, no pair head
    config.model.update({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 32})
    config.train.eval_every_steps = 2
    config.checkpoint.every_steps = 2
    caplog.set_level("INFO")
    final = loop.train_and_evaluate(config, workdir)
    assert "Sampling 2 languages with q_i proportional to p_i^0.7" in caplog.text
    in_run = _metrics(workdir, "eval")[-1]
    for language in ("en", "ru"):
        assert 0.0 <= in_run[f"mlm_accuracy/{language}"] <= 1.0 and in_run[f"mlm_loss/{language}"] > 0
        assert final[f"mlm_accuracy/{language}"] == in_run[f"mlm_accuracy/{language}"]
    assert "mlm_accuracy/en" not in _metrics(workdir, "train")[-1]
    assert "mlm_acc by language en " in caplog.text
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data"]["languages"] == ["en", "ru"]  # the ids: index in the sorted languages
    offline = evaluation.evaluate_checkpoint(workdir, step=2)
    for name in ("mlm_accuracy/en", "mlm_accuracy/ru", "mlm_loss/ru", "mlm_accuracy"):
        assert offline[name] == pytest.approx(in_run[name], rel=1e-6), name

    again = config_lib.from_stored(config.to_dict())
    again.data.language_alpha = 0.3
    with pytest.raises(config_lib.InputError, match=r"config.data.language_alpha is 0.7 there and 0.3 now"):
        loop.train_and_evaluate(again, workdir)
    more = config_lib.from_stored(config.to_dict())
    more.data.corpus = f"{corpus},de:{texts['de']}"
    with pytest.raises(config_lib.InputError, match=r"2 languages \(en, ru\), 2 files of [0-9,]+ bytes there, "
                                                    r"3 languages \(de, en, ru\)"):
        loop.train_and_evaluate(more, workdir)


def test_tagged_corpus_paths_are_made_absolute_behind_their_tags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_lib.default_config()
    config.data.corpus = "en:text/en.txt, ja:tfds:wikipedia/20230601.ja,en:~/more.txt"
    config.data.eval_corpus = "en:held/en.txt,ja:held/ja.txt"
    stored = loop._absolute_paths(config)
    assert stored.data.corpus == (f"en:{tmp_path}/text/en.txt,ja:tfds:wikipedia/20230601.ja,"
                                  f"en:{os.path.expanduser('~/more.txt')}")
    assert stored.data.eval_corpus == f"en:{tmp_path}/held/en.txt,ja:{tmp_path}/held/ja.txt"
