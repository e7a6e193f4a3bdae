"""XLM's MLM + TLM mixture: exact per-epoch shares of pairs and languages, both kinds of rows in one batch
with the right keys and values, the config's one-line errors, the resume check, and a small mixed run."""

import json
import os

import numpy as np
import pytest
from conftest import make_documents, write_corpus

from bert_jax import config as config_lib
from bert_jax import prepare_corpus
from bert_jax.config import InputError
from bert_jax.data import mixture, pipeline, tlm_mixture, tokenizer_factory
from bert_jax.pretraining import evaluation, loop, resume_check

MAX_SEQ_LENGTH = 32
_WORDS = ("river", "mountain", "forest", "village", "king", "queen", "ship", "harbor", "winter", "summer")


def _write_pair(directory, name, count, seed, src="en", tgt="fr"):
    rng = np.random.default_rng(seed)
    src_lines = [" ".join(rng.choice(_WORDS, rng.integers(3, 8))) for _ in range(count)]
    prefix = os.path.join(directory, name)
    for language, lines in ((src, src_lines), (tgt, [" ".join(reversed(s.split())) for s in src_lines])):
        with open(f"{prefix}.{language}", "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    return prefix


def _corpora(directory):
    """A monolingual corpus of en and de (en is also a side of the pairs) and en-fr pairs: languages de, en, fr."""
    texts = {language: write_corpus(directory / f"{language}.txt", make_documents(n, seed=40 + n))
             for language, n in (("en", 30), ("de", 10))}
    return f"en:{texts['en']},de:{texts['de']}", f"en-fr:{_write_pair(directory, 'train.en-fr', 80, 0)}"


def _config(corpus, parallel, tokenizer_path, num_steps=2, tlm_ratio=0.5):
    config = config_lib.default_config()
    config.objective = "mlm"
    config.model.update({"vocab_size": 320, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 1,
                         "intermediate_size": 32, "max_position_embeddings": MAX_SEQ_LENGTH, "num_languages": 3})
    config.data.update({"instance_format": "translation_pairs", "corpus": corpus, "parallel_corpus": parallel,
                        "tlm_ratio": tlm_ratio, "tokenizer_model": tokenizer_path, "tokenizer_vocab_size": 300,
                        "max_seq_length": MAX_SEQ_LENGTH, "eval_num_examples": 8, "eval_fraction": 0.2,
                        "preprocess_workers": 1})
    config.masking.max_predictions_per_seq = 5
    config.train.update({"global_batch_size": 8, "num_train_steps": num_steps, "warmup_steps": 1,
                         "log_every_steps": 1, "eval_every_steps": num_steps, "eval_batch_size": 8})
    config.checkpoint.update({"every_steps": num_steps, "async_save": False})
    return config


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, small_tokenizer):
    directory = tmp_path_factory.mktemp("mixed")
    corpus, parallel = _corpora(directory)
    config = _config(corpus, parallel, small_tokenizer.model_path)
    return config, tlm_mixture.tokenize_splits(config.data, str(directory / "run"), small_tokenizer)


def _options(tokenizer, seed=0):
    return {"max_seq_length": MAX_SEQ_LENGTH, "short_seq_prob": 0.1, "seed": seed, "objective": "mlm",
            "instance_format": "translation_pairs", "special_ids": tokenizer.special_ids}


def test_an_epoch_holds_exactly_tlm_ratio_pairs_and_q_i_of_each_language(mixed, small_tokenizer):
    _, splits = mixed
    train = splits["train"]
    assert train.languages == ["de", "en", "fr"] and [s for s, _, _ in train.parallel.pairs] == [1]
    build = train.builder(_options(small_tokenizer))
    sizes = [len(b) for b in build.builders]  # de, en, pairs
    epoch = len(build)
    batch_size = 4
    iterator = pipeline.make_pretraining_iterator(train, max_seq_length=MAX_SEQ_LENGTH, short_seq_prob=0.1,
                                                  batch_size=batch_size, seed=0, num_epochs=1, objective="mlm",
                                                  instance_format="translation_pairs",
                                                  special_ids=small_tokenizer.special_ids, language_alpha=0.3)
    groups = np.concatenate([batch["languages"] for batch in iterator])  # de 0, en 1, the pairs 3 (fr: 2)
    mix = mixture.Mixture(sizes, tlm_mixture.weights(sizes[:2], 0.3, 0.5), seed=0)
    located = [mix.locate(position)[0] for position in range(epoch)]
    assert len(groups) == epoch // batch_size * batch_size
    np.testing.assert_array_equal(groups, np.asarray([0, 1, 3])[located[:len(groups)]])
    counts = np.bincount(located, minlength=3)
    assert abs(counts[2] - 0.5 * epoch) < 1  # the pairs' share of the epoch is tlm_ratio, to the row
    q = mixture.alpha_weights(sizes[:2], 0.3)  # the languages share the rest by q_i
    assert np.all(np.abs(counts[:2] - 0.5 * q * epoch) < 1) and counts.sum() == epoch
    assert sizes[0] < sizes[1] and counts[0] / counts[1] > sizes[0] / sizes[1]  # alpha 0.3 lifts the smaller


def _check_rows(batch, special_ids, pair_group=3):
    keys = {"input_ids", "segment_ids", "attention_mask", "next_sentence_labels", "position_ids", "language_ids",
            "languages", "mask_seeds"}
    assert keys <= set(batch)
    kinds = set()
    for row in range(len(batch["input_ids"])):
        real = batch["attention_mask"][row] == 1
        n = int(real.sum())
        assert real[:n].all() and batch["input_ids"][row][0] == special_ids.cls
        positions, languages = batch["position_ids"][row], batch["language_ids"][row]
        assert not positions[~real].any() and not languages[~real].any()
        group = int(batch["languages"][row])
        if group == pair_group:  # [CLS] a [SEP] b [SEP]: positions restart at b, one language per side
            second = batch["segment_ids"][row] == 1
            first_length = n - int(second.sum())
            np.testing.assert_array_equal(positions[:n], np.r_[np.arange(first_length), np.arange(n - first_length)])
            assert {int(languages[0]), int(languages[n - 1])} == {1, 2}  # en and fr
            kinds.add("pair")
        else:  # monolingual: positions 0..n-1, its own language on every real token, one segment
            np.testing.assert_array_equal(positions[:n], np.arange(n))
            assert (languages[:n] == group).all() and group in (0, 1) and not batch["segment_ids"][row].any()
            kinds.add("monolingual")
    return kinds


def test_every_batch_stacks_both_kinds_of_rows_with_their_keys(mixed, small_tokenizer):
    _, splits = mixed
    for dynamic in (True, False):
        iterator = pipeline.make_pretraining_iterator(splits["train"], max_seq_length=MAX_SEQ_LENGTH,
                                                      short_seq_prob=0.1, batch_size=8, seed=1, objective="mlm",
                                                      instance_format="translation_pairs", dynamic_masking=dynamic,
                                                      special_ids=small_tokenizer.special_ids)
        kinds = set()
        for _ in range(3):
            kinds |= _check_rows(next(iterator), small_tokenizer.special_ids)
        assert kinds == {"pair", "monolingual"}


def test_the_held_out_set_has_each_language_and_the_pairs(mixed, small_tokenizer):
    _, splits = mixed
    batches = pipeline.make_eval_batches(splits["eval"], max_seq_length=MAX_SEQ_LENGTH, batch_size=8,
                                         num_examples=4, objective="mlm", instance_format="translation_pairs",
                                         special_ids=small_tokenizer.special_ids)
    real = np.concatenate([b["languages"][b["example_weights"] > 0] for b in batches])
    assert sorted(real.tolist()) == [0] * 4 + [1] * 4 + [3] * 4
    for batch in batches:
        _check_rows({k: v[batch["example_weights"] > 0] for k, v in batch.items()}, small_tokenizer.special_ids)
    again = pipeline.make_eval_batches(splits["eval"], max_seq_length=MAX_SEQ_LENGTH, batch_size=8,
                                       num_examples=4, objective="mlm", instance_format="translation_pairs",
                                       special_ids=small_tokenizer.special_ids)
    for a, b in zip(batches, again):  # fixed: the same rows and mask seeds every time
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_config_errors_are_one_line(tmp_path):
    corpus, parallel = _corpora(tmp_path)
    config = _config(corpus, parallel, "")
    assert config_lib.run_languages(config.data) == ["de", "en", "fr"]
    config_lib.validate(config)
    config.data.languages = ("de", "en", "fr")  # recorded when the run starts
    assert config_lib.eval_groups(config.data) == ("de", "en", "fr", "tlm")
    errors = []
    for field, value, message in (
            ("model.num_languages", 2, (r"parallel_corpus and config.data.corpus have 3 languages \['de', 'en', "
                                        r"'fr'\], but config.model.num_languages is 2; set config.model.num_languages=3")),
            ("data.tlm_ratio", 0.0, r"tlm_ratio is the share .* must be in \(0, 1\]"),
            ("data.tlm_ratio", 1.5, r"must be in \(0, 1\]"),
            ("data.corpus", str(tmp_path / "en.txt"), "has no language tags, but mixed with translation pairs")):
        broken = config_lib.from_stored(config.to_dict())
        section, name = field.split(".")
        broken[section][name] = value
        with pytest.raises(InputError, match=message) as raised:
            config_lib.validate(broken)
        errors.append(str(raised.value))
    assert all("\n" not in error for error in errors)
    tlm_only = config_lib.from_stored(config.to_dict())
    tlm_only.data.tlm_ratio = 1.0  # the monolingual corpus is left out: TLM only, the parallel languages
    assert config_lib.run_languages(tlm_only.data) == ["en", "fr"] and not config_lib.mixes_monolingual(tlm_only.data)
    assert tlm_mixture.data_module(tlm_only.data) is not tlm_mixture


def test_resume_compares_the_ratio_and_both_corpora(tmp_path, small_tokenizer):
    corpus, parallel = _corpora(tmp_path)
    config = _config(corpus, parallel, small_tokenizer.model_path)
    fingerprint = tlm_mixture.corpus_fingerprint(config.data)
    meta = {"config": json.loads(config.to_json()), "tokenizer_kind": small_tokenizer.kind,
            "tokenizer_model": small_tokenizer.serialized_model(), "corpus": fingerprint, "data_state": None}

    def check(new_config):
        return resume_check.check_resume(meta, new_config, tokenizer=small_tokenizer, directory="/runs/xlm", step=2,
                                         corpus_fingerprint=tlm_mixture.data_module(new_config.data).corpus_fingerprint(
                                             new_config.data))

    assert check(config).restart_data == ""
    other = config_lib.from_stored(config.to_dict())
    other.data.tlm_ratio = 0.25
    with pytest.raises(InputError, match=r"translation pairs among the training rows .* is 0.5 there and 0.25 now"):
        check(other)
    tlm_only = config_lib.from_stored(config.to_dict())
    tlm_only.data.tlm_ratio = 1.0
    with pytest.raises(InputError, match="is 0.5 there and 1.0 now.*the training corpus changed"):
        check(tlm_only)
    with open(str(tmp_path / "de.txt"), "a", encoding="utf-8") as f:
        f.write("\nOne more document.\n")
    with pytest.raises(InputError, match=r"the training corpus changed since the checkpoint \(2 languages \(de, en\).* "
                                         r"and parallel corpus en-fr"):
        check(config)
    with open(f"{parallel.split(':', 1)[1]}.fr", "a", encoding="utf-8") as f:
        f.write("one more line\n")
    meta["corpus"] = tlm_mixture.corpus_fingerprint(config.data)
    assert check(config).restart_data == ""
    with open(f"{parallel.split(':', 1)[1]}.en", "a", encoding="utf-8") as f:
        f.write("one more line\n")
    with pytest.raises(InputError, match="the training corpus changed since the checkpoint"):
        check(config)


@pytest.mark.slow  # a tiny run, its evaluation and a resume: about a minute on 2 shared cores
def test_a_mixed_run_reports_each_language_and_the_pairs(tmp_path, small_tokenizer, caplog):
    corpus, parallel = _corpora(tmp_path)
    workdir = str(tmp_path / "run")
    caplog.set_level("INFO")
    final = loop.train_and_evaluate(_config(corpus, parallel, small_tokenizer.model_path), workdir)
    assert "Mixing MLM and TLM: 50% of the rows are translation pairs" in caplog.text
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        in_run = [m for m in map(json.loads, f) if m["split"] == "eval"][-1]
    for group in ("de", "en", "tlm"):
        assert 0.0 <= in_run[f"mlm_accuracy/{group}"] <= 1.0 and in_run[f"mlm_loss/{group}"] > 0
        assert final[f"mlm_accuracy/{group}"] == in_run[f"mlm_accuracy/{group}"]
    assert "mlm_accuracy/fr" not in in_run  # fr has pairs only: it is in the tlm figure
    assert 16 < in_run["num_examples"] <= 24  # 8 pairs, 8 rows of en, and what de's held-out documents fill
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["data"]["languages"] == ["de", "en", "fr"]
    offline = evaluation.evaluate_checkpoint(workdir, step=2)
    for name in ("mlm_accuracy/en", "mlm_accuracy/tlm", "mlm_loss/tlm", "mlm_accuracy"):
        assert offline[name] == pytest.approx(in_run[name], rel=1e-6), name
    assert loop.train_and_evaluate(_config(corpus, parallel, small_tokenizer.model_path, num_steps=3),
                                   workdir)["step"] == 3


def test_prepare_corpus_trains_one_tokenizer_on_both_corpora(tmp_path):
    corpus, parallel = _corpora(tmp_path)
    with open(tmp_path / "de.txt", "a", encoding="utf-8") as f:
        f.write("\n" + "\n".join(f"Über {word} ß." for word in _WORDS) + "\n")  # ü and ß: only in de's text
    prefix = _write_pair(tmp_path, "train.en-fr", 80, 0)
    with open(f"{prefix}.fr", encoding="utf-8") as f:
        french = [line.replace("e", "é") for line in f]  # é: only on the French side of the pairs
    with open(f"{prefix}.fr", "w", encoding="utf-8") as f:
        f.writelines(french)
    config = _config(corpus, parallel, "")
    config.data.tokenizer_vocab_size = 120
    summary = prepare_corpus.prepare(config, str(tmp_path / "run"))
    json.dumps(summary)  # what the command prints
    assert set(summary["splits"]["train"]["monolingual"]["languages"]) == {"de", "en"}
    assert summary["splits"]["train"]["parallel"]["documents"] > 50
    tokenizer = tokenizer_factory.load_tokenizer(summary["tokenizer"])
    for text in ("Über ß", french[0]):
        assert tokenizer.special_ids.unk not in tokenizer.encode(text), text
