"""XLM's translation LM rows against hand-computed layouts, the parallel-file checks, the tokenized splits
through the pipeline, and a toy translation that only a model reading the source can learn."""

import gzip
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.data import pipeline, translation_pairs
from bert_jax.finetuning import steps as finetuning_steps
from bert_jax.finetuning import transfer
from bert_jax.model import encoder, pretraining_heads
from bert_jax.pretraining import evaluation, loop, resume_check
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import parallel


class _Draws:
    """An rng whose `random()` draws are given in advance: the swap draw first, then truncate_seq_pair's."""

    def __init__(self, *values):
        self._values = list(values)

    def random(self, size=None):
        if size is None:
            return self._values.pop(0)
        drawn, self._values = self._values[:size], self._values[size:]
        return np.asarray(drawn)


def test_row_layout_by_hand():
    row = translation_pairs.make_translation_pair(np.array([10, 11, 12]), np.array([20, 21]), 1, 2, _Draws(0.9), 10)
    assert row["input_ids"].tolist() == [2, 10, 11, 12, 3, 20, 21, 3, 0, 0]  # [CLS] src [SEP] tgt [SEP] pad
    assert row["segment_ids"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert row["attention_mask"].tolist() == [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert row["position_ids"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 0]  # restart at the target
    assert row["language_ids"].tolist() == [1, 1, 1, 1, 1, 2, 2, 2, 0, 0]
    assert row["next_sentence_labels"] == 0 and all(v.dtype == np.int32 for v in row.values())


def test_row_swapped_and_truncated_by_hand():
    """Swap draw 0.1 < 0.5: the target goes first. 3 + 5 tokens into 8 - 3 = 5: the longer side (the source,
    second) loses from the back, the front, then on the 3-3 tie (second side) the back: src[1:3]."""
    row = translation_pairs.make_translation_pair(np.array([10, 11, 12, 13, 14]), np.array([20, 21, 22]), 2, 1,
                                                  _Draws(0.1, 0.9, 0.1, 0.9), 8)
    assert row["input_ids"].tolist() == [2, 20, 21, 22, 3, 11, 12, 3]
    assert row["segment_ids"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert row["attention_mask"].tolist() == [1] * 8
    assert row["position_ids"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert row["language_ids"].tolist() == [1, 1, 1, 1, 1, 2, 2, 2]  # the target's language goes first with it


def test_monolingual_rows_carry_the_same_keys():
    row = {"input_ids": np.array([2, 7, 8, 3, 0]), "attention_mask": np.array([1, 1, 1, 1, 0])}
    features = translation_pairs.monolingual_features(row, 3)
    assert features["position_ids"].tolist() == [0, 1, 2, 3, 0]
    assert features["language_ids"].tolist() == [3, 3, 3, 3, 0]


def test_a_row_is_one_instance_whose_sides_see_each_other():
    """With position_ids the encoder reads attention_mask as instance ids: a TLM row (mask 1 everywhere) is one
    instance, so a change on the target side reaches the source's outputs and vice versa, while padding does not."""
    model = encoder.BertModel(encoder.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32,
                                                 max_position_embeddings=16, num_languages=2),
                              rngs=nnx.Rngs(params=0))
    rows = [translation_pairs.make_translation_pair(np.array([10, 11, 12]), np.array(target), 0, 1, _Draws(0.9), 12)
            for target in ([20, 21], [30, 21])]
    batch = {key: jnp.asarray(np.stack([row[key] for row in rows])) for key in rows[0]}

    @nnx.jit
    def forward(model, input_ids):
        return model(input_ids, batch["segment_ids"], batch["attention_mask"], position_ids=batch["position_ids"],
                     language_ids=batch["language_ids"])[0]

    output = np.asarray(forward(model, batch["input_ids"]))
    assert np.abs(output[0, 1:4] - output[1, 1:4]).min() > 1e-5  # the source tokens saw the changed target word
    again = forward(model, batch["input_ids"].at[:, 9].set(17))  # another token in padding
    np.testing.assert_array_equal(np.asarray(again)[:, :8], output[:, :8])


# ------------------------------------------------------------------ parallel files

def _write_pair(directory, name, src_lines, tgt_lines, src="en", tgt="fr"):
    prefix = os.path.join(directory, name)
    for language, lines in ((src, src_lines), (tgt, tgt_lines)):
        with open(f"{prefix}.{language}", "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    return prefix


def _data(spec, **fields):
    data = config_lib.default_config().data
    data.update({"instance_format": "translation_pairs", "parallel_corpus": spec, **fields})
    return data


def _lines(spec):
    return [list(pair.lines()) for pair in translation_pairs.parallel_pairs(_data(spec))]


def test_parallel_file_errors_name_the_file_and_line(tmp_path):
    good = _write_pair(tmp_path, "good", ["a b", "c d"], ["x y", "z w"])
    assert _lines(f"en-fr:{good}") == [[("a b", "x y"), ("c d", "z w")]]
    short = _write_pair(tmp_path, "short", ["a", "b", "c"], ["x", "y"])
    with pytest.raises(InputError, match=rf"{short}\.fr ends after line 2 but {short}\.en goes on"):
        _lines(f"en-fr:{short}")
    empty = _write_pair(tmp_path, "empty", ["a", "b", "c"], ["x", "  ", "z"])
    with pytest.raises(InputError, match=rf"{empty}\.fr line 2 is empty"):
        _lines(f"en-fr:{empty}")
    binary = _write_pair(tmp_path, "binary", ["a"], ["x"])
    with gzip.open(f"{binary}.fr", "wt") as f:
        f.write("x\n")
    with pytest.raises(InputError, match=rf"{binary}\.fr is gzip-compressed"):
        _lines(f"en-fr:{binary}")
    with pytest.raises(InputError, match=rf"needs the file {tmp_path}/good\.de, which does not exist"):
        _lines(f"en-de:{good}")
    for spec in (f"en:{good}", f"en-en:{good}", "en-fr", f"en-fr-de:{good}"):
        with pytest.raises(InputError, match="is not 'SRC-TGT:PREFIX'"):
            _lines(spec)
    for error in (str(e) for e in _errors(tmp_path, short, empty, binary)):
        assert "\n" not in error


def _errors(tmp_path, *prefixes):
    errors = []
    for prefix in prefixes:
        try:
            _lines(f"en-fr:{prefix}")
        except InputError as e:
            errors.append(e)
    return errors


def test_config_validation(tmp_path):
    config = config_lib.default_config()
    config.objective = "mlm"
    config.data.update({"instance_format": "translation_pairs", "parallel_corpus": "en-fr:/p/a,de-en:/p/b"})
    with pytest.raises(InputError, match=r"has 3 languages \['de', 'en', 'fr'\].*set config.model.num_languages=3"):
        config_lib.validate(config)
    config.model.num_languages = 3
    config_lib.validate(config)
    config.objective = "mlm_nsp"
    with pytest.raises(InputError, match="need config.objective='mlm'"):
        config_lib.validate(config)
    config.objective = "mlm_sbo"  # the objective is named first, not the language table it then cannot feed
    with pytest.raises(InputError, match="need config.objective='mlm', got 'mlm_sbo'"):
        config_lib.validate(config)


def test_inputs_that_would_train_on_other_data_than_asked_are_refused():
    """A language table no batch feeds, parallel text no run reads, one pair named twice (its lines would be
    trained on twice) and one language in two spellings (two ids): each refused in one line."""
    config = config_lib.default_config()
    config.objective = "mlm"
    config.data.instance_format = "full_sentences"
    config.model.num_languages = 2
    with pytest.raises(InputError, match=r"num_languages=2 adds XLM's language embeddings.*every token would be "
                                         r"language 0: set config.model.num_languages=0"):
        config_lib.validate(config)
    config.model.num_languages = 0
    config.data.parallel_corpus = "en-fr:/p/a"
    with pytest.raises(InputError, match=r"parallel text is read only with config.data.instance_format="
                                         r"'translation_pairs' \(got 'full_sentences'\)"):
        config_lib.validate(config)
    config.data.instance_format, config.model.num_languages = "translation_pairs", 3
    config.data.parallel_corpus = "en-fr:/p/a,de-en:/p/b,en-fr:/p/c"
    with pytest.raises(InputError, match="names 'en-fr' twice; give each language pair once"):
        config_lib.validate(config)
    config.data.parallel_corpus = "en-fr:/p/a"
    config.data.corpus = "EN:/m/en.txt,de:/m/de.txt"
    with pytest.raises(InputError, match="'EN' and 'en' name one language in two spellings"):
        config_lib.validate(config)


def test_evaluating_a_translation_pair_run_on_monolingual_text_is_refused(monkeypatch):
    """`evaluate --corpus` builds plain text rows, which carry none of a TLM run's language ids."""
    from types import SimpleNamespace

    from bert_jax.pretraining import run_checkpoint

    config = config_lib.default_config()
    config.data.instance_format = "translation_pairs"
    run = SimpleNamespace(config=config, tokenizer=None)
    monkeypatch.setattr(run_checkpoint, "restore_run_checkpoint", lambda workdir, step: run)
    with pytest.raises(InputError, match="--corpus evaluates monolingual text rows, but this run trained on "
                                         "translation pairs"):
        evaluation.evaluate_checkpoint("RUN", corpus="en:/m/en.txt")


# ------------------------------------------------------------------ tokenized splits through the pipeline

_WORDS = ("river", "mountain", "forest", "village", "king", "queen", "ship", "harbor", "winter", "summer", "bridge",
          "castle", "garden")


def _sentences(rng, count):
    return [" ".join(rng.choice(_WORDS, rng.integers(3, 9))) for _ in range(count)]


def test_tokenized_splits_build_tlm_batches(tmp_path, small_tokenizer):
    rng = np.random.default_rng(0)
    english = _sentences(rng, 60)
    french = [" ".join(reversed(s.split())) for s in english]  # another word order: a toy translation
    german = [" ".join(word + "en" for word in s.split()) for s in english]
    en_fr = _write_pair(tmp_path, "train.en-fr", english, french)
    de_en = _write_pair(tmp_path, "train.de-en", german, english, src="de", tgt="en")
    data = _data(f"en-fr:{en_fr},de-en:{de_en}", eval_fraction=0.25, preprocess_workers=1)
    workdir = str(tmp_path / "run")
    splits = translation_pairs.tokenize_splits(data, workdir, small_tokenizer)
    assert len(splits["train"]) + len(splits["eval"]) == 120 and 10 < len(splits["eval"]) < 50
    assert [(s, t) for s, t, _ in splits["train"].pairs] == [(1, 2), (0, 1)]  # de=0, en=1, fr=2
    build = splits["train"].instance_builder(max_seq_length=128, special_ids=small_tokenizer.special_ids)
    assert len(build) == len(splits["train"])
    languages = {0: "de", 1: "en", 2: "fr"}
    lookup = {"en": english, "fr": french, "de": german}
    for instance in range(0, len(build), 7):
        row = build(instance, np.random.default_rng(instance))
        first = (row["segment_ids"] == 0) & (row["attention_mask"] == 1)
        second = row["segment_ids"] == 1
        sides = [(row["input_ids"][mask][int(mask is first):-1], int(row["language_ids"][mask][0]))
                 for mask in (first, second)]
        for tokens, language in sides:  # each side decodes to a line of its language's file
            assert small_tokenizer.decode(tokens.tolist()) in lookup[languages[language]]
        assert {language for _, language in sides} in ({1, 2}, {0, 1})
    assert translation_pairs.tokenize_splits(data, workdir, small_tokenizer)["train"].pairs[0][2].statistics[
        "directory"] == splits["train"].pairs[0][2].statistics["directory"]  # the cache is reused

    iterator = pipeline.make_pretraining_iterator(splits["train"], max_seq_length=64, short_seq_prob=0.0,
                                                  batch_size=4, seed=0, objective="mlm",
                                                  instance_format="translation_pairs",
                                                  special_ids=small_tokenizer.special_ids)
    batch = next(iterator)
    assert {key: batch[key].shape for key in ("input_ids", "position_ids", "language_ids")} == {
        "input_ids": (4, 64), "position_ids": (4, 64), "language_ids": (4, 64)}
    eval_set = pipeline.make_eval_batches(splits["eval"], max_seq_length=64, batch_size=8, num_examples=12,
                                          objective="mlm", instance_format="translation_pairs",
                                          special_ids=small_tokenizer.special_ids)
    assert eval_set[-1]["language_ids"].shape == (8, 64) and eval_set[-1]["example_weights"].tolist() == [1] * 4 + [0] * 4


# ------------------------------------------------------------------ a translation only the source can tell

def _toy_config(vocab, max_seq_length, steps, layers):
    config = config_lib.default_config()
    config.objective = "mlm"
    config.model.update({"vocab_size": 5 + 2 * vocab, "hidden_size": 64, "num_hidden_layers": layers,
                         "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 32,
                         "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "num_languages": 2})
    config.data.update({"tokenizer_vocab_size": 5 + 2 * vocab, "max_seq_length": max_seq_length})
    config.masking.max_predictions_per_seq = 4
    config.train.update({"global_batch_size": 32, "num_train_steps": steps, "warmup_steps": 10,
                         "learning_rate": 3e-3})
    config.mesh.data = 1
    return config


def _target_only_row(source, target, rng, max_seq_length):
    """The MLM-only baseline's row: [CLS] target [SEP] in the target language, no source."""
    del source, rng
    row = {key: np.zeros(max_seq_length, np.int32) for key in ("input_ids", "segment_ids", "attention_mask")}
    row["input_ids"][:len(target) + 2] = [2, *target, 3]
    row["attention_mask"][:len(target) + 2] = 1
    return translation_pairs.monolingual_features(dict(row, next_sentence_labels=np.int32(0)), 1)


def _tlm_row(source, target, rng, max_seq_length):
    return translation_pairs.make_translation_pair(source, target, 0, 1, rng, max_seq_length)


def _target_accuracy(make_row, config, train_pairs, test_pairs, steps):
    """Trains with the project's train step (on-device masking of either side), then masks each target word
    of held-out pairs in turn, the source (if the row has it) in view, and returns the share predicted."""
    sharding, create_state, train_step, predict = _compiled(config)
    rng, length = np.random.default_rng(1), config.data.max_seq_length
    state = create_state()
    for _ in range(steps):
        rows = [make_row(*train_pairs[i], rng, length) for i in rng.integers(0, len(train_pairs), 32)]
        state, _ = train_step(state, parallel.to_global_batch({k: np.stack([r[k] for r in rows]) for k in rows[0]},
                                                              sharding))
    rows = [make_row(*pair, _Draws(0.9), length) for pair in test_pairs]  # no swap: the target is second
    batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
    first_target = int(np.argmax(batch["segment_ids"][0])) or 1  # after [CLS] src [SEP], or after [CLS]
    positions = range(first_target, first_target + len(test_pairs[0][1]))
    predicted = np.stack([predict(state.params, batch, position) for position in positions], axis=1)
    return float(np.mean(predicted == batch["input_ids"][:, positions]))


_COMPILED = {}


def _compiled(config):
    """(batch sharding, create_state, train_step, predict) of `config`, built once: both models of a comparison
    have the same shapes, so they share the compiled programs."""
    key = config.to_json()
    if key not in _COMPILED:
        mesh = parallel.make_mesh(config.mesh)
        setup, create_state = steps_lib.make_pretraining_setup(config, mesh)

        @jax.jit
        def predict(params, batch, position):
            """The predicted word at `position` of every row, with that word replaced by [MASK]."""
            input_ids = batch["input_ids"].at[:, position].set(4)
            logits, _ = nnx.merge(setup.graphdef, params)(
                input_ids, batch["segment_ids"], batch["attention_mask"],
                jnp.full((len(input_ids), 1), position), position_ids=batch["position_ids"],
                language_ids=batch["language_ids"])
            return logits[:, 0].argmax(-1)

        _COMPILED[key] = (parallel.batch_sharding(mesh), create_state,
                          steps_lib.make_train_step(setup, mesh, config.train), predict)
    return _COMPILED[key]


def _toy_translation(vocab, words, count, seed):
    """Source sentences of `words` words drawn independently from `vocab` (ids 5..), translated word by word
    through a random bijection into the target vocabulary (ids 5+vocab..): the target alone says nothing of
    its own words, the source says all of them."""
    rng = np.random.default_rng(seed)
    translation = np.random.default_rng(99).permutation(vocab)
    sources = rng.integers(0, vocab, (count, words))
    return [(s + 5, translation[s] + 5 + vocab) for s in sources]


def _tlm_against_target_only(vocab, words, steps, layers):
    pairs = _toy_translation(vocab, words, 4200, seed=0)
    config = _toy_config(vocab, 2 * words + 3, steps, layers)
    tlm = _target_accuracy(_tlm_row, config, pairs[:4000], pairs[4000:], steps)
    target_only = _target_accuracy(_target_only_row, config, pairs[:4000], pairs[4000:], steps)
    return tlm, target_only


def test_tlm_learns_a_translation_that_target_only_mlm_cannot():
    """One-word sentences: the masked target word is the source word's image (1.0 in 100 steps here)."""
    tlm, target_only = _tlm_against_target_only(vocab=8, words=1, steps=100, layers=1)
    assert target_only < 0.25  # chance is 1/8
    assert tlm > 0.6 and tlm > 2 * target_only, (tlm, target_only)


@pytest.mark.slow
def test_tlm_learns_a_longer_translation_almost_perfectly():
    """Three words, aligned by the positions that restart at the target (1.0 in 300 steps here)."""
    tlm, target_only = _tlm_against_target_only(vocab=8, words=3, steps=300, layers=2)
    assert target_only < 0.25
    assert tlm > 0.95 and tlm > 3 * target_only, (tlm, target_only)


# ------------------------------------------------------------------ a run: resume check and end to end

def _tlm_config(spec, tokenizer_path, num_steps=3):
    config = config_lib.default_config()
    config.objective = "mlm"
    config.model.update({"vocab_size": 320, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": 64, "num_languages": 2})
    config.data.update({"instance_format": "translation_pairs", "parallel_corpus": spec,
                        "tokenizer_model": tokenizer_path, "tokenizer_vocab_size": 300, "max_seq_length": 64,
                        "eval_num_examples": 16, "eval_fraction": 0.2, "preprocess_workers": 1})
    config.masking.max_predictions_per_seq = 8
    config.train.update({"global_batch_size": 8, "num_train_steps": num_steps, "warmup_steps": 1,
                         "log_every_steps": 1, "eval_every_steps": num_steps, "eval_batch_size": 8})
    config.checkpoint.update({"every_steps": num_steps, "async_save": False})
    return config


def test_resume_compares_the_parallel_files_and_the_language_table(tmp_path, small_tokenizer):
    english = _sentences(np.random.default_rng(1), 20)
    prefix = _write_pair(tmp_path, "train.en-fr", english, [s[::-1] for s in english])
    config = _tlm_config(f"en-fr:{prefix}", small_tokenizer.model_path)
    fingerprint = translation_pairs.corpus_fingerprint(config.data)
    meta = {"config": json.loads(config.to_json()), "tokenizer_kind": small_tokenizer.kind,
            "tokenizer_model": small_tokenizer.serialized_model(), "corpus": fingerprint, "data_state": None}

    def check(new_config, new_fingerprint):
        return resume_check.check_resume(meta, new_config, tokenizer=small_tokenizer,
                                         corpus_fingerprint=new_fingerprint, directory="/runs/tlm", step=3)

    assert check(config, fingerprint).restart_data == ""
    reversed_pair = config_lib.from_stored(config.to_dict())
    reversed_pair.data.parallel_corpus = f"fr-en:{prefix}"  # the same files, the languages the other way round
    with pytest.raises(InputError, match="the training corpus changed since the checkpoint"):
        check(reversed_pair, translation_pairs.corpus_fingerprint(reversed_pair.data))
    with open(f"{prefix}.fr", "a", encoding="utf-8") as f:
        f.write("one more line\n")
    with pytest.raises(InputError, match=r"the training corpus changed since the checkpoint \(parallel corpus en-fr"):
        check(config, translation_pairs.corpus_fingerprint(config.data))
    more_languages = config_lib.from_stored(config.to_dict())
    more_languages.model.num_languages = 3
    with pytest.raises(InputError, match="config.model.num_languages is 2 there and 3 now"):
        check(more_languages, fingerprint)


@pytest.mark.slow
def test_a_tlm_run_trains_evaluates_and_resumes(tmp_path, small_tokenizer):
    """The whole path: parallel files -> tokenized pairs -> TLM batches -> train step -> checkpoint; the
    evaluate command's figures equal the run's own, and a longer run resumes the checkpoint."""
    english = _sentences(np.random.default_rng(2), 80)
    prefix = _write_pair(tmp_path, "train.en-fr", english, [" ".join(reversed(s.split())) for s in english])
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(_tlm_config(f"en-fr:{prefix}", small_tokenizer.model_path), workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    in_run = [m for m in lines if m["split"] == "eval"][-1]
    assert in_run["step"] == 3 and in_run["num_examples"] == 16 and 0 < in_run["mlm_loss"] < 10
    offline = evaluation.evaluate_checkpoint(workdir, step=3)
    assert offline["mlm_loss"] == pytest.approx(in_run["mlm_loss"], rel=1e-6)
    result = loop.train_and_evaluate(_tlm_config(f"en-fr:{prefix}", small_tokenizer.model_path, num_steps=4), workdir)
    assert result["step"] == 4


def test_fine_tuning_keeps_the_language_table_and_feeds_language_0():
    """A task model built from a TLM checkpoint's config.model has the table, the transfer loads it, and its
    inputs (no language_ids) all get language 0's row: the documented choice for fine-tuning and prediction."""
    model_config = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "intermediate_size": 32, "max_position_embeddings": 16, "num_languages": 2}
    pretrained = pretraining_heads.BertForPreTraining(encoder.BertConfig(**model_config), objective="mlm",
                                                      rngs=nnx.Rngs(params=0))
    task = finetuning_steps.build_task_model(model_config, "classification", num_labels=3, seed=1)
    moved = transfer.transfer_encoder(nnx.to_pure_dict(nnx.state(pretrained, nnx.Param)),
                                      nnx.to_pure_dict(nnx.state(task, nnx.Param)))
    assert "bert/embeddings/language_embeddings/embedding" in moved.loaded
    ids = jnp.asarray([[2, 7, 8, 3]])
    embeddings = pretrained.bert.embeddings
    as_language_0 = embeddings(ids, jnp.zeros_like(ids), language_ids=jnp.zeros_like(ids), deterministic=True,
                               rngs=None)
    np.testing.assert_array_equal(embeddings(ids, jnp.zeros_like(ids), deterministic=True, rngs=None), as_language_0)


def test_a_tokenizer_is_trained_on_both_sides_and_nothing_else(tmp_path):
    english = _sentences(np.random.default_rng(3), 200)
    french = [" ".join(word + "é" for word in s.split()) for s in english]  # 'é' only on the French side
    prefix = _write_pair(tmp_path, "train.en-fr", english, french)
    workdir = tmp_path / "run"
    _, tokenizer = translation_pairs.default_or_given_inputs(_data(f"en-fr:{prefix}", tokenizer_vocab_size=60),
                                                             str(workdir))
    assert (workdir / "tokenizer" / "spm.model").is_file() and not (workdir / "corpus").exists()
    assert tokenizer.special_ids.unk not in {i for s in french[:20] for i in tokenizer.encode(s)}
