"""Resuming a workdir with another config, tokenizer or corpus: `pretraining/resume_check.py` sorts every
difference (refused always, refused unless config.train.allow_changed_data, warned, allowed), and the
trainer checks before it writes anything; the data iterator restarts where the old stream had got to when
its saved position belongs to another layout."""

import hashlib
import json
import logging
import math
import os
import pathlib
import shutil

import numpy as np
import pytest
from test_loop import _small_config

from bert_jax import config as config_lib
from bert_jax.data import pipeline, sentencepiece_tokenizer, tokenizer_factory
from bert_jax.pretraining import loop, optim, resume_check
from bert_jax.runtime import checkpoint as checkpoint_lib

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "pre_layout_run"
_CORPUS = {"train": {"fingerprint": "0123456789abcdef", "what": "'corpus.txt'", "files": 1, "bytes": 52_000},
           "eval": None}


@pytest.fixture(scope="module")
def other_tokenizer(corpus_file, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("other_spm") / "spm"
    return tokenizer_factory.load_tokenizer(sentencepiece_tokenizer.train_tokenizer([corpus_file], str(prefix), 200))


def _config(corpus, tokenizer_path, num_steps=3):
    config = _small_config(corpus, "", tokenizer_path, num_steps)
    config.data.eval_fraction = 0.2
    config.masking.max_predictions_per_seq = 10  # enough for packed rows, so that packing can be switched on
    config.checkpoint.async_save = False
    return config


def _meta(config, tokenizer, corpus=_CORPUS):
    return {"config": json.loads(config.to_json()), "tokenizer_kind": tokenizer.kind,
            "tokenizer_model": tokenizer.serialized_model(), "corpus": corpus, "data_state": None}


def _changed(config, **changes):
    config = config_lib.from_stored(config.to_dict())
    for path, value in changes.items():
        group, _, name = path.rpartition("__")
        (config[group] if group else config)[name] = value
    return config


def _check(meta, config, tokenizer, corpus=_CORPUS, step=6):
    return resume_check.check_resume(meta, config, tokenizer=tokenizer, corpus_fingerprint=corpus,
                                     directory="/runs/a/checkpoints", step=step)


def _messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# ------------------------------------------------------------------ the classification, on config pairs

def test_every_config_field_is_classified():
    fields = {key.removeprefix("config.") for key in config_lib.config_keys(config_lib.default_config())}
    assert set(resume_check._FIELDS) == fields


def test_every_refused_difference_is_named_in_one_message(corpus_file, small_tokenizer, other_tokenizer):
    stored = _config(corpus_file, small_tokenizer.model_path)
    changes = {"model__hidden_size": 64, "model__num_attention_heads": 4, "objective": "mlm_sop",
               "data__tokenizer_vocab_size": 250, "train__global_batch_size": 16, "data__max_seq_length": 32,
               "masking__kind": "whole_word", "masking__mask_rate": 0.2, "data__instance_format": "full_sentences",
               "data__short_seq_prob": 0.3, "data__eval_num_examples": 20, "data__eval_seed": 7,
               "data__eval_fraction": 0.1, "train__seed": 3, "data__pack_sequences": True,
               "data__tokenizer_model": other_tokenizer.model_path}
    new = _changed(stored, **changes)
    moved = {"train": dict(_CORPUS["train"], fingerprint="fedcba9876543210", bytes=52_100), "eval": None}
    with pytest.raises(config_lib.InputError) as refused:
        _check(_meta(stored, small_tokenizer), new, other_tokenizer, corpus=moved)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(
        "the checkpoints in /runs/a/checkpoints (newest: step 6) were written for another model and with other data: ")
    for path, value in changes.items():
        name = "config." + path.replace("__", ".")
        if path != "data__tokenizer_model":
            there = _changed(stored).to_dict()
            for part in path.split("__"):
                there = there[part]
            shown = repr if isinstance(value, str) else str
            assert f"{name} is {shown(there)} there and {shown(value)} now: " in message, name
    assert "config.train.global_batch_size is 8 there and 16 now: the data stream would skip examples" in message
    assert (f"the tokenizer is {small_tokenizer.model_path!r} (sentencepiece, {small_tokenizer.vocab_size} pieces) "
            f"there and {other_tokenizer.model_path!r} (sentencepiece, {other_tokenizer.vocab_size} pieces) now, "
            "another model: the embeddings would index other pieces") in message
    assert ("the training corpus changed since the checkpoint ('corpus.txt', 1 file of 52,000 bytes there, "
            "'corpus.txt', 1 file of 52,100 bytes now): it would be tokenized again") in message
    assert message.endswith("run with the config they were written with, or give a new --workdir "
                            "(config.train.allow_changed_data=true would accept the data changes, never another "
                            "tokenizer or model).")


def test_switching_to_spanberts_objective_or_its_table_is_refused(corpus_file, small_tokenizer):
    """The span-boundary head is parameters the checkpoint lacks (or of other shapes): never resumed."""
    stored = _config(corpus_file, small_tokenizer.model_path)
    with pytest.raises(config_lib.InputError, match=r"another model: config\.objective is 'mlm_nsp' there and "
                       r"'mlm_sbo' now: the heads and the loss would be another objective's"):
        _check(_meta(stored, small_tokenizer), _changed(stored, objective="mlm_sbo"), small_tokenizer)
    spanbert = _changed(stored, objective="mlm_sbo")
    with pytest.raises(config_lib.InputError, match=r"config\.model\.sbo_max_span_positions is 15 there and 20 now: "
                       "the parameters would not fit"):
        _check(_meta(spanbert, small_tokenizer), _changed(spanbert, model__sbo_max_span_positions=20,
                                                         train__allow_changed_data=True), small_tokenizer)


def test_sampling_exponents_count_only_where_they_act(corpus_file, small_tokenizer):
    """A monolingual run ignores language_alpha and tokenizer_alpha: changing them never refuses its resume. A
    multilingual one samples with them: another language_alpha is another stream, another tokenizer_alpha a
    tokenizer it was not trained with (unless the tokenizer was given)."""
    stored = _config(corpus_file, "")
    _check(_meta(stored, small_tokenizer), _changed(stored, data__language_alpha=0.3, data__tokenizer_alpha=0.5),
           small_tokenizer)
    multilingual = _changed(stored, data__languages=("de", "en"))
    with pytest.raises(config_lib.InputError, match=r"other data: config\.data\.language_alpha is 0\.7 there and 0\.3 now"):
        _check(_meta(multilingual, small_tokenizer), _changed(multilingual, data__language_alpha=0.3), small_tokenizer)
    with pytest.raises(config_lib.InputError, match=r"another model: config\.data\.tokenizer_alpha is 0\.3 there and "
                       r"0\.5 now: the tokenizer is not trained again"):
        _check(_meta(multilingual, small_tokenizer), _changed(multilingual, data__tokenizer_alpha=0.5,
                                                             train__allow_changed_data=True), small_tokenizer)
    given = _changed(multilingual, data__tokenizer_model=small_tokenizer.model_path)
    _check(_meta(given, small_tokenizer), _changed(given, data__tokenizer_alpha=0.5), small_tokenizer)


def test_block_flags_count_only_where_the_model_reads_them(corpus_file, small_tokenizer):
    """rope_theta means nothing to learned positions, the local base and the layer pattern nothing without a
    local window: another value resumes. Where they act, they are another function."""
    stored = _config(corpus_file, small_tokenizer.model_path)
    _check(_meta(stored, small_tokenizer), _changed(stored, model__rope_theta=5e3, model__local_rope_theta=1e3,
                                                    model__global_attention_every_n_layers=4), small_tokenizer)
    rotary = _changed(stored, model__position_encoding="rotary")
    with pytest.raises(config_lib.InputError, match=r"config\.model\.rope_theta is 10000\.0 there and 5000\.0 now"):
        _check(_meta(rotary, small_tokenizer), _changed(rotary, model__rope_theta=5e3), small_tokenizer)
    _check(_meta(rotary, small_tokenizer), _changed(rotary, model__local_rope_theta=1e3), small_tokenizer)
    local = _changed(rotary, model__local_attention_window=4, model__global_attention_every_n_layers=2)
    with pytest.raises(config_lib.InputError, match=r"local_rope_theta is 0\.0 there and 1000\.0 now.*"
                       r"global_attention_every_n_layers is 2 there and 3 now"):
        _check(_meta(local, small_tokenizer), _changed(local, model__local_rope_theta=1e3,
                                                       model__global_attention_every_n_layers=3), small_tokenizer)


def test_data_changes_alone_name_the_flag_as_a_way_out(corpus_file, small_tokenizer):
    stored = _config(corpus_file, small_tokenizer.model_path)
    with pytest.raises(config_lib.InputError, match=r"were written with other data: config\.train\.seed is 0 there "
                       r"and 1 now: .*give a new --workdir, or set --config\.train\.allow_changed_data=true"):
        _check(_meta(stored, small_tokenizer), _changed(stored, train__seed=1), small_tokenizer)


def test_speed_logging_and_checkpoint_switches_are_allowed(corpus_file, small_tokenizer, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    stored = _config(corpus_file, small_tokenizer.model_path)
    same_tokenizer_elsewhere = shutil.copy(small_tokenizer.model_path, tmp_path / "copy.model")
    new = _changed(stored, model__attention_impl="dot_product", model__vocab_pad_multiple=1, model__scan_layers=True,
                   model__remat_policy="full", model__gather_masked_positions=False, train__donate_state=False,
                   train__log_every_steps=7, train__eval_every_steps=9, train__eval_batch_size=8,
                   checkpoint__every_steps=5, checkpoint__max_to_keep=1, checkpoint__async_save=True,
                   mesh__fsdp=2, mesh__data=4, data__preprocess_workers=3,
                   data__tokenizer_model=str(same_tokenizer_elsewhere))
    plan = _check(_meta(stored, small_tokenizer), new, tokenizer_factory.load_tokenizer(str(same_tokenizer_elsewhere)))
    assert plan.restart_data == ""  # the saved data position still applies
    assert not _messages(caplog, logging.WARNING)
    info = " ".join(_messages(caplog, logging.INFO))
    assert "config.model.scan_layers is False there and True now" in info and "(the same tokenizer)" in info


def test_one_worker_more_or_less_carries_the_data_position_over(corpus_file, small_tokenizer):
    stored = _config(corpus_file, small_tokenizer.model_path)
    plan = _check(_meta(stored, small_tokenizer), _changed(stored, data__num_workers=1), small_tokenizer)
    assert plan.restart_data == "data.num_workers"
    with pytest.raises(config_lib.InputError, match=r"config\.data\.num_workers is 0 there and 2 now: the saved "
                                                    r"position carries over into one worker process at most, not 2"):
        _check(_meta(stored, small_tokenizer), _changed(stored, data__num_workers=2), small_tokenizer)
    packed = _changed(stored, data__pack_sequences=True)
    with pytest.raises(config_lib.InputError, match=r"num_workers is 0 there and 1 now: each worker packs its own"):
        _check(_meta(packed, small_tokenizer), _changed(packed, data__num_workers=1), small_tokenizer)


def test_allow_changed_data_accepts_data_but_never_another_tokenizer_or_model(
        corpus_file, small_tokenizer, other_tokenizer, caplog):
    stored = _config(corpus_file, small_tokenizer.model_path)
    data = {"train__global_batch_size": 16, "data__pack_sequences": True, "masking__kind": "whole_word",
            "data__eval_seed": 7, "train__allow_changed_data": True}
    appended = {"train": dict(_CORPUS["train"], fingerprint="fedcba9876543210", bytes=52_100), "eval": None}
    caplog.set_level(logging.INFO)
    plan = _check(_meta(stored, small_tokenizer), _changed(stored, **data), small_tokenizer, corpus=appended)
    assert plan.restart_data == "masking.kind, train.global_batch_size, data.pack_sequences, training corpus"
    warning, = _messages(caplog, logging.WARNING)
    assert warning.startswith("resuming step 6 with changed data, as config.train.allow_changed_data asks: ")
    for name in ("global_batch_size", "pack_sequences", "masking.kind", "eval_seed", "training corpus"):
        assert name in warning

    with pytest.raises(config_lib.InputError) as refused:
        _check(_meta(stored, small_tokenizer), _changed(stored, model__num_hidden_layers=3, **data), other_tokenizer)
    message = str(refused.value)
    assert "config.model.num_hidden_layers is 2 there and 3 now" in message and "the tokenizer is " in message
    assert "global_batch_size" not in message and "were written for another model: " in message


def test_more_steps_warn_of_the_schedule_with_the_learning_rate_before_and_after(corpus_file, small_tokenizer, caplog):
    caplog.set_level(logging.INFO)
    stored = _config(corpus_file, small_tokenizer.model_path, num_steps=6)
    new = _changed(stored, train__num_train_steps=12)
    assert _check(_meta(stored, small_tokenizer), new, small_tokenizer).restart_data == ""
    after = float(optim.learning_rate_schedule(new.train)(6))
    assert after > 0
    assert _messages(caplog, logging.WARNING) == [(
        "resuming step 6 with other settings: config.train.num_train_steps is 6 there and 12 now; the learning-rate "
        f"schedule changes from step 6 on (learning rate at step 6: 0 before, {after:.6g} now)")]


def test_a_checkpoint_without_a_corpus_fingerprint_resumes_unchecked(corpus_file, small_tokenizer, caplog):
    caplog.set_level(logging.INFO)
    stored = _config("/old/place/corpus.txt", small_tokenizer.model_path)
    new = _changed(stored, data__corpus=corpus_file)
    assert _check(_meta(stored, small_tokenizer, corpus=None), new, small_tokenizer).restart_data == ""
    assert any("holds no corpus fingerprint" in m and "could not be checked" in m and "/old/place/corpus.txt" in m
               for m in _messages(caplog, logging.WARNING))


# ------------------------------------------------------------------ the data position across layouts

def _iterator(sources, tokenizer, pack):
    return pipeline.make_pretraining_iterator(sources["train"], max_seq_length=64, short_seq_prob=0.1, batch_size=4,
                                              seed=0, pack_sequences=pack, special_ids=tokenizer.special_ids)


def test_a_position_carries_over_between_layouts(sources, small_tokenizer):
    unpacked, packed = _iterator(sources, small_tokenizer, False), _iterator(sources, small_tokenizer, True)
    for _ in range(3):
        next(unpacked), next(packed)
    assert pipeline.examples_taken(unpacked.get_state(), 4) == 12
    instances = pipeline.examples_taken(packed.get_state(), 4)
    assert instances == packed.get_state()["next_index"] > 12  # packed rows hold several instances

    moved = _iterator(sources, small_tokenizer, False)
    assert pipeline.restart_at(moved, 10, pack_sequences=False, batch_size=4) == 12  # up to a whole batch
    expected, got = next(unpacked), next(moved)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    repacked = _iterator(sources, small_tokenizer, True)
    assert pipeline.restart_at(repacked, 12, pack_sequences=True, batch_size=4) == 12
    state = repacked.get_state()
    assert state["next_index"] == 12 and state["parent"] == {"next_index": 12} and not state["open_rows"]
    assert next(repacked)["input_ids"].shape == (4, 64)


# ------------------------------------------------------------------ end to end, through the trainer

def _digest(directory) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(pathlib.Path(directory).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_file, small_tokenizer):
    """(workdir with a checkpoint at step 3, its corpus file, its config); cases resume a copy."""
    root = tmp_path_factory.mktemp("resume")
    corpus = shutil.copy(corpus_file, root / "corpus.txt")
    config = _config(str(corpus), small_tokenizer.model_path)
    loop.train_and_evaluate(config, str(root / "run"))
    return root / "run", str(corpus), config


def _copy(trained, tmp_path, **changes):
    workdir, _, config = trained
    shutil.copytree(workdir, tmp_path / "run")
    return str(tmp_path / "run"), _changed(config, **changes)


def _train_steps(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [m["step"] for m in map(json.loads, f) if m["split"] == "train"]


def test_another_tokenizer_is_refused_before_anything_is_written(trained, tmp_path, small_tokenizer, other_tokenizer):
    workdir, config = _copy(trained, tmp_path, data__tokenizer_model=other_tokenizer.model_path,
                            train__num_train_steps=6)
    before = _digest(workdir)
    with pytest.raises(config_lib.InputError, match="another model: the embeddings would index other pieces") as e:
        loop.train_and_evaluate(config, workdir)
    assert small_tokenizer.model_path in str(e.value) and other_tokenizer.model_path in str(e.value)
    assert _digest(workdir) == before  # config.json untouched, no new checkpoint, nothing tokenized


def test_packing_switched_on_is_refused_and_with_the_flag_restarts_the_data_where_it_was(trained, tmp_path, caplog):
    workdir, config = _copy(trained, tmp_path, data__pack_sequences=True, train__num_train_steps=5)
    before = _digest(workdir)
    with pytest.raises(config_lib.InputError, match=r"config\.data\.pack_sequences is False there and True now: the "
                       r"data iterator's saved position is one of unpacked rows and cannot be restored into packed"):
        loop.train_and_evaluate(config, workdir)
    assert _digest(workdir) == before

    caplog.set_level(logging.INFO)
    config.train.allow_changed_data = True
    assert loop.train_and_evaluate(config, workdir)["step"] == 5
    assert _train_steps(workdir) == [1, 2, 3, 4, 5]
    assert checkpoint_lib.Checkpointer(workdir, create=False).all_steps() == [3, 5]
    assert any(m.startswith("the data iterator restarts at example 24 of this process's stream: its saved position "
                            "(24 examples into the old stream)") for m in _messages(caplog, logging.WARNING))


@pytest.mark.slow  # long end-to-end case: `-m slow`, to keep CI under 20 minutes
def test_a_document_added_to_the_corpus_is_refused_and_accepted_with_the_flag(trained, tmp_path, caplog):
    workdir, config = _copy(trained, tmp_path, train__num_train_steps=4)
    corpus = pathlib.Path(trained[1])
    original, stat = corpus.read_bytes(), corpus.stat()
    try:
        corpus.write_bytes(original + b"\nA new document was added here.\nIt has two sentences.\n")
        before = _digest(workdir)
        with pytest.raises(config_lib.InputError, match=r"with other data: the training corpus changed since the "
                           r"checkpoint \(.*corpus\.txt', 1 file of [\d,]+ bytes there, .*, 1 file of [\d,]+ bytes "
                           r"now\): it would be tokenized again"):
            loop.train_and_evaluate(config, workdir)
        assert _digest(workdir) == before

        caplog.set_level(logging.INFO)
        config.train.allow_changed_data = True
        assert loop.train_and_evaluate(config, workdir)["step"] == 4
        assert any("changed data" in m and "training corpus" in m for m in _messages(caplog, logging.WARNING))
    finally:
        corpus.write_bytes(original)
        os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the next cases see the corpus of the checkpoint


def test_more_steps_resume_and_log_the_schedule_change(trained, tmp_path, caplog):
    workdir, config = _copy(trained, tmp_path, train__num_train_steps=5)
    caplog.set_level(logging.INFO)
    assert loop.train_and_evaluate(config, workdir)["step"] == 5
    assert _train_steps(workdir) == [1, 2, 3, 4, 5]
    after = float(optim.learning_rate_schedule(config.train)(3))
    assert (f"the learning-rate schedule changes from step 3 on (learning rate at step 3: 0 before, {after:.6g} now)"
            in " ".join(_messages(caplog, logging.WARNING)))
    _, meta = checkpoint_lib.Checkpointer(workdir, create=False).restore_meta(5)
    assert meta["corpus"]["train"]["files"] == 1  # the fingerprint a later resume compares with


def test_a_checkpoint_from_before_the_fingerprint_still_resumes(tmp_path, caplog):
    shutil.copytree(FIXTURE, tmp_path / "fixture")
    workdir = str(tmp_path / "fixture" / "run")
    config = config_lib.from_stored(json.loads(pathlib.Path(workdir, "config.json").read_text()))
    config.data.corpus = str(tmp_path / "fixture" / "corpus.txt")  # the stored path was the fixture's /tmp one
    config.train.num_train_steps = 3
    caplog.set_level(logging.INFO)
    loop.train_and_evaluate(config, workdir)
    assert any("holds no corpus fingerprint" in m and "held out by their text" in m
               for m in _messages(caplog, logging.WARNING))
    assert checkpoint_lib.Checkpointer(workdir, create=False).all_steps() == [2, 3]


def test_decaying_from_a_stable_phase_checkpoint_warns_of_each_change(corpus_file, small_tokenizer, caplog):
    """A warmup-stable-decay run resumed from its stable phase to decay there (ModernBERT's phases): the
    learning rate changes only from the resumed step on, so it goes on, naming every changed field."""
    caplog.set_level(logging.INFO)
    stored = _config(corpus_file, small_tokenizer.model_path, num_steps=20)
    stored.train.update({"schedule": "wsd", "decay_steps": 4, "warmup_steps": 2})
    new = _changed(stored, train__num_train_steps=10, train__decay_start_step=6, train__decay_shape="1-sqrt")
    config_lib.validate(new)
    assert _check(_meta(stored, small_tokenizer), new, small_tokenizer).restart_data == ""
    peak = stored.train.learning_rate
    warning, = _messages(caplog, logging.WARNING)
    assert warning == (
        "resuming step 6 with other settings: config.train.num_train_steps is 20 there and 10 now; "
        "config.train.decay_shape is 'linear' there and '1-sqrt' now; config.train.decay_start_step is -1 there and 6 "
        f"now; the learning-rate schedule changes from step 6 on (learning rate at step 6: {peak:.6g} before, "
        f"{peak:.6g} now)")


def test_another_optimizer_is_refused_before_its_state_is_restored(corpus_file, small_tokenizer):
    stored = _config(corpus_file, small_tokenizer.model_path)
    with pytest.raises(config_lib.InputError, match=(
            r"^the checkpoints in /runs/a/checkpoints \(newest: step 6\) were written for another optimizer: "
            r"config\.train\.optimizer is 'adamw' there and 'lamb' now: the checkpoint's optimizer state would not "
            r"fit another optimizer's; run with the config they were written with, or give a new --workdir\.$")):
        _check(_meta(stored, small_tokenizer), _changed(stored, train__optimizer="lamb"), small_tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["lamb", "stable_adamw"])
def test_a_stable_phase_checkpoint_decays_in_the_trainer(corpus_file, small_tokenizer, tmp_path, optimizer):
    """Trains a 'wsd' run into its stable phase, then resumes its step-6 checkpoint with the decay moved
    there: the logged learning rates of steps 7-10 are the decay's, and nothing before step 6 is trained again."""
    workdir = str(tmp_path / "run")
    stable = _config(corpus_file, small_tokenizer.model_path, num_steps=6)
    stable.train.update({"optimizer": optimizer, "schedule": "wsd", "decay_steps": 4, "decay_start_step": 20})
    stable.checkpoint.every_steps = 6
    loop.train_and_evaluate(stable, workdir)
    decay = _changed(stable, train__num_train_steps=10, train__decay_start_step=6, train__decay_shape="1-sqrt")
    assert loop.train_and_evaluate(decay, workdir)["step"] == 10
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        logged = {m["step"]: m["learning_rate"] for m in map(json.loads, f) if m["split"] == "train"}
    assert sorted(logged) == list(range(1, 11))
    peak = stable.train.learning_rate
    assert [logged[s] for s in (3, 4, 5, 6)] == pytest.approx([peak] * 4)
    # the metrics of step s report the rate of the update that made it, schedule(s - 1)
    assert [logged[s] for s in (7, 8, 9, 10)] == pytest.approx([peak * (1 - math.sqrt((s - 1 - 6) / 4))
                                                                 for s in (7, 8, 9, 10)], rel=1e-5)
