"""Fine-tuning end to end: each task kind learns a small synthetic task written in its official file
format, the encoder really comes from the checkpoint, and bad checkpoints or data end in clear errors.

The "pretrained" checkpoint is a randomly initialised tiny encoder exported as params-only: the tasks are
built so that a 2-layer encoder learns them from scratch in a few hundred steps (keyword detection,
tagging by word identity, "the word after 'gold'" spans, the ending that contains 'gold').
"""

import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import _WORDS
from flax import nnx, traverse_util

from bert_jax import config as pretrain_config
from bert_jax.config import InputError
from bert_jax.finetuning import config as finetune_config
from bert_jax.finetuning import runner, steps, transfer
from bert_jax.model import pretraining_heads
from bert_jax.runtime import checkpoint as checkpoint_lib

FILLER = [w for w in _WORDS if w not in ("gold", "king", "queen", "city", "village")]


def _export_random_encoder(output, tokenizer, objective="mlm_nsp"):
    config = pretrain_config.default_config()
    config.objective = objective
    config.model.update({"vocab_size": 320, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "intermediate_size": 128, "max_position_embeddings": 128})
    config.data.tokenizer_vocab_size = 300
    params = nnx.state(pretraining_heads.build_model(config, seed=7), nnx.Param)
    checkpoint_lib.save_params_only(str(output), params, config, tokenizer, {"source": "test", "format": "params"})
    return str(output)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, small_tokenizer):
    return _export_random_encoder(tmp_path_factory.mktemp("pretrained") / "export", small_tokenizer)


def _config(task, init_checkpoint, data_dir, *, epochs=6.0, max_seq_length=48):
    config = finetune_config.default_config()
    config.task = task
    config.init_checkpoint = init_checkpoint
    config.data.data_dir = str(data_dir)
    config.data.max_seq_length = max_seq_length
    config.train.update({"global_batch_size": 16, "eval_batch_size": 32, "num_train_epochs": epochs,
                         "learning_rate": 1e-3, "log_every_steps": 1000})
    return config


def _words(rng, n):
    return [rng.choice(FILLER) for _ in range(n)]


def _write_sst2(data_dir, num_train=320, num_dev=64, seed=0):
    """Positive iff the sentence contains 'gold'."""
    rng = random.Random(seed)
    for name, count in (("train.tsv", num_train), ("dev.tsv", num_dev)):
        with open(data_dir / name, "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            for i in range(count):
                words = _words(rng, rng.randint(5, 10))
                if i % 2:
                    words.insert(rng.randrange(len(words) + 1), "gold")
                f.write(f"{' '.join(words)}\t{i % 2}\n")


def test_classification_learns_keyword_and_writes_outputs(pretrained, tmp_path):
    _write_sst2(tmp_path)
    report = runner.finetune(_config("sst2", pretrained, tmp_path), str(tmp_path / "run"))
    accuracy = report["seeds"][0]["best"]["validation"]["accuracy"]
    assert accuracy >= 0.95, report["seeds"][0]["history"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["summary"]["validation"]["accuracy"]["mean"] == pytest.approx(accuracy)
    rows = list(csv.reader(open(tmp_path / "run" / "seed_0" / "predictions_validation.tsv"), delimiter="\t"))
    assert rows[0] == ["guid", "prediction"] and len(rows) == 65
    assert {r[1] for r in rows[1:]} <= {"negative", "positive"}
    assert os.path.isdir(tmp_path / "run" / "seed_0" / "best_params")

    before = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(InputError, match=r"run already holds a finished fine-tune .*metrics\.json\); give a new "):
        runner.finetune(_config("sst2", pretrained, tmp_path), str(tmp_path / "run"))
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before  # the results are kept as they were


def test_regression_learns_a_count(pretrained, tmp_path):
    """STS-B format; the score is the number of 'gold' words in sentence 1 (0-3)."""
    rng = random.Random(1)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    for name, count in (("train.tsv", 320), ("dev.tsv", 64)):
        with open(tmp_path / name, "w", encoding="utf-8") as f:
            f.write(header)
            for i in range(count):
                words, score = _words(rng, rng.randint(4, 8)), i % 4
                for _ in range(score):
                    words.insert(rng.randrange(len(words) + 1), "gold")
                f.write(f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{' '.join(words)}\t{' '.join(_words(rng, 5))}\t"
                        f"{score:.3f}\n")
    report = runner.finetune(_config("stsb", pretrained, tmp_path, epochs=8.0), str(tmp_path / "run"))
    best = report["seeds"][0]["best"]["validation"]
    assert report["primary_metric"] == "spearman"
    assert best["spearman"] >= 0.9 and best["pearson"] >= 0.85, report["seeds"][0]["history"]


def _write_conll(path, num_sentences, rng):
    """Tags by word identity: king/queen are people (a 'king queen' run is one entity), city/village places."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("-DOCSTART- -X- -X- O\n\n")
        for _ in range(num_sentences):
            tags, previous = [], "O"
            words = _words(rng, rng.randint(5, 10))
            for _ in range(rng.randint(1, 3)):
                words.insert(rng.randrange(len(words) + 1), rng.choice(["king", "queen", "city", "village"]))
            for word in words:
                kind = {"king": "PER", "queen": "PER", "city": "LOC", "village": "LOC"}.get(word)
                tag = "O" if kind is None else (f"I-{kind}" if previous.endswith(kind) else f"B-{kind}")
                tags.append(tag)
                previous = tag
            f.writelines(f"{w} NN B-NP {t}\n" for w, t in zip(words, tags))
            f.write("\n")


def test_token_classification_learns_entities(pretrained, tmp_path):
    rng = random.Random(2)
    _write_conll(tmp_path / "train.txt", 320, rng)
    _write_conll(tmp_path / "valid.txt", 64, rng)
    report = runner.finetune(_config("conll2003", pretrained, tmp_path), str(tmp_path / "run"))
    assert report["seeds"][0]["best"]["dev"]["f1"] >= 0.9, report["seeds"][0]["history"]
    lines = (tmp_path / "run" / "seed_0" / "predictions_dev.txt").read_text().splitlines()
    assert len(lines[0].split()) == 3  # word, gold tag, predicted tag: conlleval's input


def _squad_json(num_questions, rng, version_2=False):
    """The answer is the one ruler or place word of the context; contexts need several windows."""
    paragraphs = []
    for i in range(num_questions):
        words = _words(rng, rng.randint(30, 45))
        impossible = version_2 and i % 3 == 0
        answer_index = rng.randrange(len(words))
        if not impossible:
            words[answer_index] = rng.choice(["king", "queen", "city", "village"])
        context = " ".join(words)
        qa = {"id": f"q{i}", "question": "which ruler or place ?", "answers": [], "is_impossible": impossible}
        if not impossible:
            start = len(" ".join(words[:answer_index])) + (1 if answer_index else 0)
            qa["answers"] = [{"text": words[answer_index], "answer_start": start}]
        paragraphs.append({"context": context, "qas": [qa]})
    return {"version": "v2.0" if version_2 else "1.1", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}


@pytest.mark.parametrize("version", ["1.1", pytest.param("2.0", marks=pytest.mark.slow)])
def test_qa_learns_spans_over_windows(pretrained, tmp_path, version):
    rng = random.Random(3)
    for split, count in (("train", 320), ("dev", 64)):
        (tmp_path / f"{split}-v{version}.json").write_text(json.dumps(_squad_json(count, rng, version == "2.0")))
    config = _config(f"squad_v{version}", pretrained, tmp_path, epochs=8.0, max_seq_length=40)
    config.data.doc_stride = 16
    report = runner.finetune(config, str(tmp_path / "run"))
    best = report["seeds"][0]["best"]["validation"]
    assert best["f1"] >= 85.0, report["seeds"][0]["history"]
    predictions = json.loads((tmp_path / "run" / "seed_0" / "predictions_validation.json").read_text())
    assert len(predictions) == 64
    if version == "2.0":
        assert best["NoAns_total"] > 0 and best["HasAns_total"] > 0


def test_multiple_choice_learns_the_gold_ending(pretrained, tmp_path):
    rng = random.Random(4)
    header = ["video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
              "ending0", "ending1", "ending2", "ending3", "label"]
    for name, count in (("train.csv", 320), ("val.csv", 64)):
        with open(tmp_path / name, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for i in range(count):
                sent1, sent2 = " ".join(_words(rng, 6)), " ".join(_words(rng, 3))
                endings = [" ".join(_words(rng, 4)) for _ in range(4)]
                label = rng.randrange(4)
                endings[label] = endings[label] + " gold"
                writer.writerow([f"v{i}", i, f"{sent1} {sent2}", sent1, sent2, "gold", *endings, label])
    report = runner.finetune(_config("swag", pretrained, tmp_path), str(tmp_path / "run"))
    assert report["seeds"][0]["best"]["validation"]["accuracy"] >= 0.9, report["seeds"][0]["history"]


def test_transfer_takes_the_encoder_and_drops_the_pretraining_heads(pretrained):
    source = transfer.load_pretrained(pretrained)
    assert {"mlm_head", "pair_head"} <= set(source.params)
    fresh = nnx.to_pure_dict(nnx.state(steps.build_task_model(source.config.model, "classification", 3, 0), nnx.Param))
    moved = transfer.transfer_encoder(source.params, fresh)
    flat_moved, flat_source = traverse_util.flatten_dict(moved.params), traverse_util.flatten_dict(source.params)
    flat_fresh = traverse_util.flatten_dict(fresh)
    encoder = [p for p in flat_moved if p[0] == "bert"]
    assert encoder and all(np.array_equal(flat_moved[p], flat_source[p]) for p in encoder)
    kernels = [p for p in encoder if p[-1] in ("kernel", "embedding")]
    assert all(not np.array_equal(flat_fresh[p], flat_source[p]) for p in kernels)  # so a non-transfer would show
    assert moved.fresh == ["classifier/bias", "classifier/kernel"]
    assert {name.split("/")[0] for name in moved.dropped} == {"mlm_head", "pair_head"}
    assert set(moved.params) == {"bert", "classifier"}  # no optimizer state, no pretraining heads


def test_mlm_only_checkpoint_gets_a_fresh_pooler(tmp_path, small_tokenizer):
    source = transfer.load_pretrained(_export_random_encoder(tmp_path / "roberta", small_tokenizer, "mlm"))
    fresh = nnx.to_pure_dict(nnx.state(steps.build_task_model(source.config.model, "classification", 2, 0), nnx.Param))
    moved = transfer.transfer_encoder(source.params, fresh)
    assert "bert/pooler/dense/kernel" in moved.fresh


def test_shape_mismatch_names_the_tensor_and_both_shapes(pretrained, tmp_path):
    _write_sst2(tmp_path, num_train=16, num_dev=16)
    config = _config("sst2", pretrained, tmp_path)
    config.model.intermediate_size = 96
    with pytest.raises(InputError, match=r"bert/layers/0/intermediate/bias has shape \(128,\) in the checkpoint but "
                                         r"\(96,\) in the fine-tuning config"):
        runner.finetune(config, str(tmp_path / "run"))


def test_command_line_errors_are_one_line(pretrained, tmp_path):
    _write_sst2(tmp_path, num_train=16, num_dev=16)
    with open(tmp_path / "dev.tsv", "a", encoding="utf-8") as f:
        f.write("a sentence with a bad label\t7\n")
    command = [sys.executable, "-m", "bert_jax.finetune", "--config=configs/finetune/sst2.py",
               f"--config.init_checkpoint={pretrained}", f"--config.data.data_dir={tmp_path}",
               f"--workdir={tmp_path / 'run'}"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "dev.tsv" in last and "'7'" in last, last
    missing = subprocess.run(command[:4] + [f"--config.init_checkpoint={tmp_path / 'nowhere'}"] + command[5:],
                             capture_output=True, text=True, cwd=root, timeout=300)
    assert missing.stderr.strip().splitlines()[-1].startswith("error: config.init_checkpoint=")


def test_several_seeds_are_run_and_summarised(pretrained, tmp_path):
    _write_sst2(tmp_path, num_train=32, num_dev=16)
    config = _config("sst2", pretrained, tmp_path, epochs=1.0)
    config.train.num_seeds = 2
    config.train.seed = 5
    report = runner.finetune(config, str(tmp_path / "run"))
    assert [r["seed"] for r in report["seeds"]] == [5, 6]
    accuracies = [r["best"]["validation"]["accuracy"] for r in report["seeds"]]
    summary = report["summary"]["validation"]["accuracy"]
    assert summary["mean"] == pytest.approx(np.mean(accuracies)) and summary["std"] == pytest.approx(np.std(accuracies))
    assert all((tmp_path / "run" / f"seed_{s}" / "predictions_validation.tsv").is_file() for s in (5, 6))


@pytest.mark.slow  # long end-to-end case: `-m slow`, to keep CI under 20 minutes
def test_starts_from_a_pretraining_workdir(tmp_path, corpus_file, small_tokenizer):
    """init_checkpoint may be a pretraining run itself: its newest checkpoint's encoder is what is loaded."""
    from test_loop import _small_config

    from bert_jax.pretraining import loop
    workdir = str(tmp_path / "pretrain")
    loop.train_and_evaluate(_small_config(corpus_file, "", small_tokenizer.model_path, num_steps=3), workdir)
    source = transfer.load_pretrained(workdir)
    assert checkpoint_lib.Checkpointer(workdir, create=False).latest_step() == 3
    assert set(source.params) == {"bert", "mlm_head", "pair_head"}
    # The step-3 parameters, not the initial ones: compare with a fresh model of the same seed.
    initial = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(pretraining_heads.build_model(source.config, 0), nnx.Param)))
    trained = traverse_util.flatten_dict(source.params)
    kernel = ("bert", "layers", 0, "intermediate", "kernel")
    assert not np.array_equal(initial[kernel], trained[kernel])
    _write_sst2(tmp_path, num_train=16, num_dev=16)
    config = _config("sst2", workdir, tmp_path, epochs=1.0)
    report = runner.finetune(config, str(tmp_path / "run"))
    assert report["init_checkpoint"] == os.path.abspath(workdir)
