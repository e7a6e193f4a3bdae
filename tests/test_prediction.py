"""Prediction with a fine-tuned model directory: the length-bucketed path gives the predictions of the
fixed-length path (seed_run.predict_logits at max_seq_length) in input order, compiles once per bucket and
computes far fewer padded positions; `python -m bert_jax.predict` end to end; bad input in one line.
"""

import csv
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import _WORDS
from flax import nnx

from bert_jax import cli
from bert_jax import config as pretrain_config
from bert_jax.finetuning import (
    buckets,
    model_dir,
    own_tasks,
    prediction,
    qa,
    seed_run,
    steps,
    task_data,
)
from bert_jax.finetuning import config as finetune_config
from bert_jax.finetuning import features as features_lib
from bert_jax.finetuning.task_spec import TaskSpec
from bert_jax.runtime import checkpoint as checkpoint_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_SEQ_LENGTH = 128


def _save_random_model(path, tokenizer, kind, label_names=(), version_2=False, **reading):
    """A model directory holding a randomly initialised task model (what a fine-tune writes, minus training)."""
    config = pretrain_config.default_config()
    config.model.update({"vocab_size": 320, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": MAX_SEQ_LENGTH})
    finetune = finetune_config.default_config()
    finetune.task = kind
    finetune.data.max_seq_length = MAX_SEQ_LENGTH
    finetune.data.update(reading)
    task = TaskSpec(name=kind, kind=kind, label_names=tuple(label_names), eval_splits=(), local_files={},
                    tfds_name=None, reading=own_tasks.reading_settings(finetune), tag_scheme="BIO" if label_names
                    and kind == "token_classification" else "", own=True, version_2=version_2)
    model = steps.build_task_model(config.model, kind, task_data.num_labels(task), seed=3)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    model_dir.save(str(path), params, config, tokenizer, task, finetune, {"source": "test"})
    return str(path)


def _sentence(rng, n):
    return " ".join(rng.choice(_WORDS) for _ in range(n))


# 40 rows of 2 to 110 words in five length groups, shuffled, so sorting, restoring the order and every bucket
# (16, 32, 64, 128 tokens at batch size 8) are exercised.
_LENGTHS = random.Random(7).sample([n for low, high in ((2, 5), (8, 12), (18, 25), (35, 50), (70, 110))
                                    for n in np.linspace(low, high, 8).astype(int).tolist()], 40)


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory, small_tokenizer):
    return _save_random_model(tmp_path_factory.mktemp("pair") / "model", small_tokenizer, "classification",
                              ("contradiction", "entailment", "neutral"), text_column="premise",
                              text_pair_column="hypothesis")


@pytest.fixture(scope="module")
def pair_input(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("pair_input") / "new.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["premise", "hypothesis"])
        for n in _LENGTHS:
            writer.writerow([_sentence(rng, n), _sentence(rng, max(1, n // 3))])
    return str(path)


def _paths(model_path, input_path):
    model = model_dir.load(model_path)
    predictor = prediction.Predictor(model, batch_size=8)
    examples = own_tasks.examples_from_file(model.task, input_path, "predict", labelled=False)
    features = predictor.features(examples)
    bucketed, stats = predictor.logits(features.arrays)
    fixed = seed_run.predict_logits(predictor.predict_step, predictor.params, features.arrays, predictor.batch_size,
                                    predictor.mesh)
    return predictor, examples, features, bucketed, fixed, stats


@pytest.fixture(scope="module")
def pair_run(pair_model, pair_input):
    return _paths(pair_model, pair_input)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_bucketed_pair_classification_equals_fixed_length_in_input_order(pair_run, pair_input):
    predictor, examples, features, bucketed, fixed, _ = pair_run
    assert bucketed.shape == fixed.shape == (len(_LENGTHS), 3)
    np.testing.assert_array_equal(bucketed.argmax(-1), fixed.argmax(-1))
    np.testing.assert_allclose(_softmax(bucketed), _softmax(fixed), atol=1e-5)
    records = prediction.records_of(predictor.task, examples, features, bucketed, predictor.config, top_k=2)
    with open(pair_input, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["text"], r["text_pair"]) for r in records] == [(r["premise"], r["hypothesis"]) for r in rows]
    names = predictor.task.label_names
    assert [r["label"] for r in records] == [names[i] for i in fixed.argmax(-1)]
    assert all(r["top_k"][0]["label"] == r["label"] and len(r["top_k"]) == 2 for r in records)


def test_one_compile_per_bucket_and_far_less_padding(pair_run):
    predictor, _, features, _, _, stats = pair_run
    lengths = buckets.real_lengths(features.arrays["attention_mask"])
    batches = np.sort(lengths).reshape(-1, predictor.batch_size)
    assert stats.buckets == {buckets.bucket_length(b.max(), MAX_SEQ_LENGTH) for b in batches} == {16, 32, 64, 128}
    # The jitted step's own cache: one program per bucket, none for the fixed-length pass (128 was a bucket).
    assert stats.compiles == len(stats.buckets) == predictor.predict_step._cache_size() == 4
    _, again = predictor.logits(features.arrays)
    assert again.compiles == 0
    padding = 1 - stats.real_tokens / stats.computed_positions
    unbucketed = 1 - stats.real_tokens / stats.unbucketed_positions
    assert stats.computed_positions < 0.65 * stats.unbucketed_positions and padding < unbucketed - 0.2
    assert [buckets.bucket_length(n, 128) for n in (1, 16, 17, 33, 100, 128)] == [16, 16, 32, 64, 128, 128]


def test_bucketed_token_classification_equals_fixed_length(tmp_path, small_tokenizer):
    path = _save_random_model(tmp_path / "model", small_tokenizer, "token_classification",
                              ("B-PER", "I-PER", "O"))
    rng = random.Random(1)
    conll = tmp_path / "new.conll"
    conll.write_text("\n\n".join("\n".join(rng.choice(_WORDS) for _ in range(n)) for n in _LENGTHS) + "\n",
                     encoding="utf-8")
    predictor, examples, features, bucketed, fixed, _ = _paths(path, str(conll))
    real = features.arrays["attention_mask"] > 0
    np.testing.assert_allclose(_softmax(bucketed[real]), _softmax(fixed[real]), atol=1e-5)
    assert (bucketed[~real] == prediction.PAD_LOGIT).all()
    names = predictor.task.label_names
    word_index = features.arrays["word_index"]
    expected = features_lib.predicted_tags(examples, word_index, fixed.argmax(-1), names)
    records = prediction.records_of(predictor.task, examples, features, bucketed, predictor.config, top_k=1)
    assert [r["tags"] for r in records] == expected
    assert [len(r["tokens"]) for r in records] == _LENGTHS


def _squad(rng, path):
    paragraphs = []
    for i, n in enumerate(_LENGTHS[:16]):
        context = _sentence(rng, n * 3)  # up to 330 words: several windows of 128 tokens
        paragraphs.append({"context": context, "qas": [{"id": f"q{i}", "question": _sentence(rng, 4),
                                                        "answers": []}]})
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")
    return str(path)


def test_bucketed_qa_equals_fixed_length_answers(tmp_path, small_tokenizer):
    path = _save_random_model(tmp_path / "model", small_tokenizer, "qa")
    predictor, examples, features, bucketed, fixed, stats = _paths(path, _squad(random.Random(2), tmp_path / "q.json"))
    assert len(bucketed) > len(examples)  # long contexts are split into windows
    real = features.arrays["attention_mask"] > 0
    np.testing.assert_allclose(bucketed[real], fixed[real], atol=1e-5)
    # Padded positions can never hold an answer (no characters), so the reference masks them alike.
    fixed[~real] = prediction.PAD_LOGIT
    settings = predictor.config.qa
    expected, _, _ = qa.decode_predictions(examples, features.qa, fixed[..., 0], fixed[..., 1],
                                           n_best_size=settings.n_best_size,
                                           max_answer_length=settings.max_answer_length)
    records = prediction.records_of(predictor.task, examples, features, bucketed, predictor.config, top_k=3)
    assert [(r["id"], r["answer"]) for r in records] == list(expected.items())
    assert all(r["answer"] and len(r["top_k"]) == 3 for r in records)
    assert len(stats.buckets) > 1
    squad_file = str(tmp_path / "q.json")
    prediction.predict_file(path, squad_file, str(tmp_path / "predictions.json"), batch_size=8)
    assert json.loads((tmp_path / "predictions.json").read_text()) == expected  # the official script's input


def test_labelled_input_is_scored_and_multi_label_regression_records(tmp_path, small_tokenizer):
    path = _save_random_model(tmp_path / "model", small_tokenizer, "classification", ("neg", "pos"))
    labelled = tmp_path / "dev.tsv"
    labelled.write_text("text\tlabel\nthe king walked\tpos\na cold night\tneg\nold stone\tpos\n", encoding="utf-8")
    report = prediction.predict_file(path, str(labelled), str(tmp_path / "out.tsv"), batch_size=8)
    assert set(report["metrics"]) >= {"accuracy", "macro_f1"} and report["examples"] == 3
    with open(tmp_path / "out.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["text"] for r in rows] == ["the king walked", "a cold night", "old stone"]
    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text("text\nthe king walked\na cold night\n", encoding="utf-8")
    multi = _save_random_model(tmp_path / "multi", small_tokenizer, "multi_label_classification", ("x", "y", "z"))
    report = prediction.predict_file(multi, str(unlabelled), str(tmp_path / "multi.jsonl"), top_k=3, batch_size=8)
    records = [json.loads(line) for line in (tmp_path / "multi.jsonl").read_text().splitlines()]
    assert len(records) == 2 and "metrics" not in report
    assert all(len(r["probabilities"]) == 3 and set(r["labels"]) <= set(r["probabilities"]) for r in records)
    regression = _save_random_model(tmp_path / "reg", small_tokenizer, "regression")
    prediction.predict_file(regression, str(unlabelled), str(tmp_path / "reg.csv"), batch_size=8)
    with open(tmp_path / "reg.csv", encoding="utf-8") as f:
        assert [np.isfinite(float(r["score"])) for r in csv.DictReader(f)] == [True, True]


def test_multiple_choice_buckets_by_the_longest_choice(tmp_path, small_tokenizer):
    path = _save_random_model(tmp_path / "model", small_tokenizer, "multiple_choice")
    rng = random.Random(3)
    rows = [[_sentence(rng, n), _sentence(rng, 2), _sentence(rng, n // 2 + 1), str(i % 2)]
            for i, n in enumerate(_LENGTHS[:16])]
    with open(tmp_path / "new.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["context", "choice0", "choice1", "label"], *rows])
    predictor, examples, features, bucketed, fixed, stats = _paths(path, str(tmp_path / "new.csv"))
    assert bucketed.shape == (16, 2) and len(stats.buckets) == 2
    np.testing.assert_allclose(_softmax(bucketed), _softmax(fixed), atol=1e-5)
    report = prediction.predict_file(path, str(tmp_path / "new.csv"), str(tmp_path / "out.jsonl"), batch_size=8)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["choice"] for r in records] == fixed.argmax(-1).tolist()
    assert [r["context"] for r in records] == [row[0] for row in rows] and "accuracy" in report["metrics"]


# ------------------------------------------------------------------ the command


def _run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bert_jax.predict", *args], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_command_labels_csv_and_jsonl_inputs(pair_model, pair_input, tmp_path):
    result = _run(f"--model={pair_model}", f"--input={pair_input}", f"--output={tmp_path / 'out.csv'}", "--top_k=2",
                  "--batch_size=8")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["examples"] == len(_LENGTHS) and report["compiles"] == len(report["buckets"])
    assert report["padding_fraction"] < report["padding_fraction_unbucketed"] and report["examples_per_second"] > 0
    with open(tmp_path / "out.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(_LENGTHS) and all(len(json.loads(r["top_k"])) == 2 for r in rows)
    jsonl = tmp_path / "new.jsonl"
    jsonl.write_text("".join(json.dumps({"premise": f"{w} walked", "hypothesis": w}) + "\n" for w in _WORDS[:5]),
                     encoding="utf-8")
    result = _run(f"--model={pair_model}", f"--input={jsonl}", f"--output={tmp_path / 'out.jsonl'}")
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text_pair"] for r in records] == list(_WORDS[:5])
    assert all(r["label"] in ("contradiction", "entailment", "neutral") for r in records)


def test_a_pretrained_export_is_refused_in_one_line(tmp_path, small_tokenizer, pair_input):
    config = pretrain_config.default_config()
    config.model.update({"vocab_size": 320, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64})
    checkpoint_lib.save_params_only(str(tmp_path / "export"), {"w": np.zeros(2, np.float32)}, config,
                                    small_tokenizer, {"source": "test", "format": "params"})
    result = _run(f"--model={tmp_path / 'export'}", f"--input={pair_input}", f"--output={tmp_path / 'o.jsonl'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "pretrained encoder without a task head; fine-tune it first" in result.stderr


def _error(work) -> str:
    with pytest.raises(SystemExit) as stopped:
        cli.run(["predict"], work)
    return str(stopped.value.code)


def test_bad_inputs_are_one_error_line(pair_model, tmp_path):
    missing = tmp_path / "new.csv"
    missing.write_text("text\nhello\n", encoding="utf-8")
    message = _error(lambda: prediction.predict_file(pair_model, str(missing), str(tmp_path / "o.jsonl")))
    assert message.startswith("error: ") and "no column 'premise'" in message and "'text'" in message
    message = _error(lambda: prediction.predict_file(pair_model, str(missing), str(tmp_path / "o.json")))
    assert "SQuAD-style" in message and ".jsonl" in message
    message = _error(lambda: prediction.predict_file(pair_model, str(missing), str(tmp_path / "nowhere" / "o.csv")))
    assert "does not exist" in message
    message = _error(lambda: prediction.predict_file(str(tmp_path / "none"), str(missing), str(tmp_path / "o.csv")))
    assert "is not a directory" in message
    assert not list(tmp_path.glob("o.*"))
