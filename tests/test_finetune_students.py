"""Fine-tuning starts from every kind of pretrained model the project makes, through the ordinary entrypoints
and with no task-specific code: a DistilBERT student (no segment table, no pooler), a TinyBERT student (an
extra `fit_dense`), and an ELECTRA pretraining run (a generator beside the discriminator). Each model comes
from a short real run of `loop.train_and_evaluate`; every own-data task kind is fine-tuned from its workdir
for two steps: the run finishes with finite metrics, the model directory holds the student's encoder (its
tensors, nothing more, the training-only parts left out), and `predict` reads it.

The default run fine-tunes the DistilBERT student on classification; the rest of the matrix is marked slow
(`-m slow`: 17 more cases, ~10 minutes on 2 busy cores).
"""

import json
import math
import os
import random

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import make_documents, write_corpus
from flax import traverse_util
from test_distillation import _export_teacher, _teacher_config
from test_loop import _small_config
from test_own_tasks import FILLER, _config, _topic_rows, _write

from bert_jax import config as config_lib
from bert_jax.finetuning import model_dir, prediction, runner
from bert_jax.pretraining import loop
from bert_jax.runtime import checkpoint as checkpoint_lib

KINDS = ("classification", "multi_label_classification", "regression", "token_classification", "qa",
         "multiple_choice")
MODELS = ("distilbert", "tinybert", "electra")
# The default run: one pretraining run and one fine-tune (~45 CPU-seconds). DistilBERT's student is the one
# farthest from a plain BERT (no segment table, no pooler: the classifier starts a fresh one). Each of the
# three pretraining runs costs ~30 CPU-seconds more, so the other two models (ELECTRA's transfer is also checked
# in test_electra.py without a run) and the other kinds are in the slow matrix.
FAST = {("distilbert", "classification")}
LEARNING_RATE, STEPS = 1e-3, 2


# ------------------------------------------------------------------ the pretrained models (real runs)

def _stored_params(workdir):
    """{path: array} of the parameters in a pretraining workdir's newest checkpoint, read as stored (no model is
    built: cheaper than restoring the run)."""
    step = max(int(name) for name in os.listdir(checkpoint_lib.checkpoint_dir(workdir)) if name.isdigit())
    state = ocp.StandardCheckpointer().restore(os.path.join(checkpoint_lib.checkpoint_dir(workdir), str(step), "state"))
    flat = traverse_util.flatten_dict(state["params"])
    return {tuple(int(k) if k.isdigit() else k for k in path[:-1]): np.asarray(value)
            for path, value in flat.items() if path[-1] == "value"}


def _short_run(config, corpus_file, eval_file):
    config.data.update({"corpus": corpus_file, "eval_corpus": eval_file, "max_seq_length": 32,
                        "eval_num_examples": 8})
    config.masking.max_predictions_per_seq = 5
    config.train.update({"global_batch_size": 8, "num_train_steps": 2, "warmup_steps": 1, "learning_rate": 1e-3,
                         "log_every_steps": 1, "eval_every_steps": 2, "eval_batch_size": 8})
    config.checkpoint.update({"every_steps": 2, "max_to_keep": 1})
    return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus_file, small_tokenizer):
    """build(name) -> (workdir, its stored config, its parameters {path: array}) of a 2-step pretraining run of
    model `name`, made once per module on first use."""
    root = tmp_path_factory.mktemp("students")
    eval_file = write_corpus(root / "eval.txt", make_documents(8, seed=5))
    made = {}

    def teacher_export():
        if "teacher" not in made:
            teacher_config = _teacher_config(vocab_size=320, max_position_embeddings=64, num_hidden_layers=2)
            teacher_config.data.tokenizer_vocab_size = 300
            made["teacher"] = _export_teacher(root, small_tokenizer, teacher_config)
        return made["teacher"]

    def build(name):
        if name in made:
            return made[name]
        if name == "electra":
            config = config_lib.electra_recipe(_small_config(corpus_file, eval_file, small_tokenizer.model_path, 2))
            config.electra.generator_hidden_fraction = 0.5
        else:
            config = config_lib.roberta_recipe(config_lib.default_config())
            config.distill.recipe = name
            config.teacher_checkpoint = teacher_export()
            if name == "tinybert":  # narrower than the teacher: fit_dense maps 16 -> 32
                config.model.update({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "intermediate_size": 32})
        workdir = str(root / name)
        loop.train_and_evaluate(_short_run(config, corpus_file, eval_file), workdir)
        with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
            stored = json.load(f)
        made[name] = (workdir, stored, _stored_params(workdir))
        return made[name]

    return build


# ------------------------------------------------------------------ tiny own-data files of every kind

def _files(kind, directory, seed):
    """(train, dev) files of `kind`: 32 training rows (two steps of 16), 16 dev rows, with learnable labels."""
    rng = random.Random(seed)
    paths = []
    for split, count in (("train", 32), ("dev", 16)):
        if kind in ("classification", "regression"):
            rows = _topic_rows(count, seed + len(paths))
            cell = (lambda t, ls: ls[0]) if kind == "classification" else (lambda t, ls: f"{len(t) / 10:.2f}")
            text = "text\tlabel\n" + "".join(f"{t}\t{cell(t, ls)}\n" for t, ls in rows)
            paths.append(_write(directory / f"{split}.tsv", text))
        elif kind == "multi_label_classification":
            rows = [{"text": t, "label": ls} for t, ls in _topic_rows(count, seed + len(paths), multi=True)]
            paths.append(_write(directory / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
        elif kind == "token_classification":
            lines = []
            for _ in range(count):
                words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
                tags = ["O"] * len(words)
                at = rng.randrange(len(words) - 1)
                words[at:at + 2], tags[at:at + 2] = ["king", "gold"], ["B-ROY", "I-ROY"]
                lines.append(json.dumps({"tokens": words, "tags": tags}) + "\n")
            paths.append(_write(directory / f"{split}.jsonl", "".join(lines)))
        elif kind == "qa":
            paragraphs = []
            for i in range(count):
                words = [rng.choice(FILLER) for _ in range(rng.randint(6, 12))]
                words.insert(rng.randrange(len(words) + 1), "king")
                context = " ".join(words) + "."
                paragraphs.append({"context": context, "qas": [{
                    "id": f"{split}{i}", "question": "who is it?",
                    "answers": [{"text": "king", "answer_start": context.index("king")}]}]})
            paths.append(_write(directory / f"{split}.json", json.dumps({"data": [{"paragraphs": paragraphs}]})))
        else:  # multiple_choice: the choice that holds 'gold'
            lines = ["context,choice0,choice1,label\n"]
            for _ in range(count):
                right, wrong = ["gold"] + [rng.choice(FILLER) for _ in range(2)], [rng.choice(FILLER) for _ in range(3)]
                label = rng.randrange(2)
                choices = (right, wrong) if label == 0 else (wrong, right)
                context = " ".join(rng.choice(FILLER) for _ in range(5))
                lines.append(f"{context},{' '.join(choices[0])},{' '.join(choices[1])},{label}\n")
            paths.append(_write(directory / f"{split}.csv", "".join(lines)))
    return paths


def _finite_numbers(metrics: dict) -> dict:
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numbers and all(math.isfinite(v) for v in numbers.values()), metrics
    return numbers


# ------------------------------------------------------------------ the matrix

def _matrix():
    for name in MODELS:
        for kind in KINDS:
            marks = () if (name, kind) in FAST else (pytest.mark.slow,)
            yield pytest.param(name, kind, id=f"{name}-{kind}", marks=marks)


@pytest.mark.parametrize("name, kind", list(_matrix()))
def test_every_task_kind_fine_tunes_from_the_model(pretrained, tmp_path, name, kind):
    source, stored, theirs = pretrained(name)
    train, dev = _files(kind, tmp_path, seed=KINDS.index(kind))
    config = _config(kind, train, dev)
    config.init_checkpoint = source
    config.data.update({"max_seq_length": 32, "max_query_length": 8, "doc_stride": 16})
    config.train.update({"global_batch_size": 16, "eval_batch_size": 16, "num_train_epochs": 1.0,
                         "learning_rate": LEARNING_RATE, "log_every_steps": 1000})
    workdir = tmp_path / "run"
    report = runner.finetune(config, str(workdir))

    # The run finished with finite dev metrics, through the ordinary runner.
    seed = report["seeds"][0]
    assert report["kind"] == kind and seed["num_train_steps"] == STEPS and seed["best_step"] >= 1
    _finite_numbers(seed["best"]["validation"])
    assert (workdir / "metrics.json").is_file()

    # The model directory holds the student's encoder: the same tensors, a learning-rate's step or two away.
    model = model_dir.load(str(workdir))
    mine = traverse_util.flatten_dict(model.params)
    encoder = {p for p in theirs if p[0] == "bert" and p[1] != "pooler"}
    assert encoder and encoder == {p for p in mine if p[0] == "bert" and p[1] != "pooler"}
    moved = {p: float(np.abs(np.asarray(mine[p], np.float64) - np.asarray(theirs[p], np.float64)).max())
             for p in encoder}
    assert max(moved.values()) <= 2 * LEARNING_RATE * STEPS, max(moved.items(), key=lambda item: item[1])
    assert max(moved.values()) > 0  # and fine-tuning trained it
    assert model.config.model.to_dict() == stored["model"]
    if name == "distilbert":
        assert model.config.model.type_vocab_size == 0
        assert "token_type_embeddings" not in model.params["bert"]["embeddings"]
    if name == "tinybert":
        assert ("fit_dense", "kernel") in theirs and "fit_dense" not in model.params
    if name == "electra":
        assert {"generator", "generator_head", "discriminator_head"} <= {p[0] for p in theirs}
        assert not {"generator", "generator_head", "discriminator_head"} & set(model.params)
    # A fresh task head beside the encoder, and none of the pretraining model's other parts.
    assert set(model.params) - {"bert"} and set(model.params).isdisjoint({p[0] for p in theirs} - {"bert"})

    # predict reads the model directory and scores the labelled dev file.
    output = tmp_path / ("predictions.json" if kind == "qa" else "predictions.jsonl")
    predicted = prediction.predict_file(str(workdir), str(dev), str(output), batch_size=16)
    assert predicted["examples"] == (16 if kind != "qa" else len(json.loads(output.read_text())))
    if kind != "qa":
        assert len(output.read_text().splitlines()) == 16
    _finite_numbers(predicted.get("metrics") or {"examples": predicted["examples"]})
