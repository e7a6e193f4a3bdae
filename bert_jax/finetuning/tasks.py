"""The fine-tuning tasks (GLUE, CoNLL-2003 NER, SQuAD, SWAG) and reading their examples.

Each task reads either the user's local files in the official format (`data_dir`, parsed in
`task_files.py`) or a TFDS dataset the user has prepared in array_record format. TensorFlow is not a
dependency, so TFDS datasets are read with `as_data_source` (random access), never `tfds.load`, and
nothing is ever downloaded: a missing dataset is an `InputError` that says how to get it.

Split names are TFDS's (`validation`, MNLI's `validation_matched`, CoNLL-2003's `dev`) for local
files too, so one config names the same split either way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import tensorflow_datasets as tfds

from bert_jax.config import InputError
from bert_jax.finetuning import own_tasks, task_files
from bert_jax.finetuning.qa import Answer, QAExample
from bert_jax.finetuning.task_files import (
    ChoiceExample,
    ClassificationExample,
    TokenExample,
)
from bert_jax.finetuning.task_spec import TaskSpec

__all__ = ["TASKS", "ChoiceExample", "ClassificationExample", "TaskSpec", "TokenExample", "get_task",
           "load_examples"]

KINDS = own_tasks.OWN_KINDS


_GLUE_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_MNLI_FILES = {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
               "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
               "test_mismatched": "test_mismatched.tsv"}
_ENTAILMENT = ("entailment", "not_entailment")
CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def _glue(name, label_names, text_features, tsv_text_columns, tsv_label_column, *,
          kind="classification", files=None, eval_splits=("validation",)) -> TaskSpec:
    return TaskSpec(name=name, kind=kind, label_names=label_names, eval_splits=eval_splits,
                    local_files=files or _GLUE_FILES, tfds_name=f"glue/{name}", text_features=text_features,
                    tsv_text_columns=tsv_text_columns, tsv_label_column=tsv_label_column)


def _squad(version: str) -> TaskSpec:
    return TaskSpec(name=f"squad_v{version}", kind="qa", label_names=(), eval_splits=("validation",),
                    local_files={"train": f"train-v{version}.json", "validation": f"dev-v{version}.json"},
                    tfds_name=f"squad/v{version}", version_2=version == "2.0")


TASKS: dict[str, TaskSpec] = {task.name: task for task in (
    # CoLA's label column has no header; read_glue_tsv names it "label".
    _glue("cola", ("unacceptable", "acceptable"), ("sentence",), ("sentence",), "label"),
    _glue("sst2", ("negative", "positive"), ("sentence",), ("sentence",), "label"),
    _glue("mrpc", ("not_equivalent", "equivalent"), ("sentence1", "sentence2"), ("#1 String", "#2 String"),
          "Quality"),
    _glue("qqp", ("not_duplicate", "duplicate"), ("question1", "question2"), ("question1", "question2"),
          "is_duplicate"),
    _glue("stsb", (), ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", kind="regression"),
    _glue("mnli", ("entailment", "neutral", "contradiction"), ("premise", "hypothesis"),
          ("sentence1", "sentence2"), "gold_label", files=_MNLI_FILES,
          eval_splits=("validation_matched", "validation_mismatched")),
    _glue("qnli", _ENTAILMENT, ("question", "sentence"), ("question", "sentence"), "label"),
    _glue("rte", _ENTAILMENT, ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label"),
    _glue("wnli", ("not_entailment", "entailment"), ("sentence1", "sentence2"), ("sentence1", "sentence2"),
          "label"),
    TaskSpec(name="conll2003", kind="token_classification", label_names=CONLL2003_TAGS, eval_splits=("dev",),
             local_files={"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}, tfds_name="conll2003",
             tag_scheme="IOB1"),
    _squad("1.1"),
    _squad("2.0"),
    # The installed TFDS has no SWAG builder (only HellaSwag): local swagaf CSVs only.
    TaskSpec(name="swag", kind="multiple_choice", label_names=("0", "1", "2", "3"), eval_splits=("validation",),
             local_files={"train": "train.csv", "validation": "val.csv", "test": "test.csv"}, tfds_name=None),
)}


def get_task(name: str) -> TaskSpec:
    """The registered task called `name`."""
    if name not in TASKS:
        raise InputError(f"unknown fine-tuning task {name!r}; known tasks: {', '.join(TASKS)}, or a task kind for "
                         f"your own files: {', '.join(own_tasks.OWN_KINDS)}.")
    return TASKS[name]


def resolve_task(config) -> TaskSpec:
    """The task of a fine-tuning config: a benchmark by name, or the user's own files for a task kind."""
    if own_tasks.is_own(config):
        return own_tasks.make_task(config)
    stray = [field for field in own_tasks.SPLITS.values() if config.data[field]]
    if stray:
        raise InputError(f"config.data.{stray[0]} is set, but config.task={config.task!r} is a benchmark read from "
                         f"data_dir or TFDS; for your own files set config.task to one of {', '.join(own_tasks.OWN_KINDS)}.")
    return get_task(config.task)


def load_examples(task: TaskSpec, split: str, *, data_dir: str = "", tfds_data_dir: str | None = None,
                  max_examples: int = 0) -> list[Any]:
    """The examples of one split: from local files in `data_dir` if given, else from TFDS.

    Returns ClassificationExample (classification, regression), TokenExample, ChoiceExample or
    `bert_jax.finetuning.qa.QAExample` (qa). `max_examples` > 0 keeps only the first ones (quick runs).
    """
    if split not in task.local_files:
        raise InputError(f"task {task.name} has no split {split!r}; its splits are {', '.join(task.splits)}.")
    if task.own:
        examples = own_tasks.read_split(task, split)
        if not examples:
            raise InputError(f"{task.local_files[split]} has no examples.")
        return examples[:max_examples] if max_examples > 0 else examples
    if data_dir:
        examples = _read_local(task, split, data_dir)
        what = os.path.join(data_dir, task.local_files[split])
    else:
        examples = _read_tfds(task, split, tfds_data_dir, max_examples)
        what = f"TFDS {task.tfds_name} split {split!r}"
    if not examples:
        raise InputError(f"{what} has no examples; give the {task.name} {split} data in its official format.")
    return examples[:max_examples] if max_examples > 0 else examples


def _read_local(task: TaskSpec, split: str, data_dir: str) -> list[Any]:
    path = os.path.join(data_dir, task.local_files[split])
    if not os.path.isfile(path):
        tfds_hint = f", or leave data_dir empty to read TFDS {task.tfds_name}" if task.tfds_name else ""
        raise InputError(f"{task.name} {split} file {path} not found; put the {task.name} files "
                         f"({', '.join(task.local_files.values())}) in data_dir={data_dir!r}{tfds_hint}.")
    if task.kind in ("classification", "regression"):
        return task_files.read_glue_tsv(path, task, split)
    if task.kind == "token_classification":
        return task_files.read_conll(path, task, split)
    if task.kind == "qa":
        return task_files.read_squad_json(path)
    return task_files.read_swag_csv(path, task, split)


# ------------------------------------------------------------------ TFDS

def tfds_source(task: TaskSpec, split: str, tfds_data_dir: str | None) -> tuple[Any, tfds.core.DatasetInfo]:
    """A random-access source of a prepared array_record TFDS split and its DatasetInfo; never downloads."""
    local_hint = f"pass the local {task.name} files ({', '.join(task.local_files.values())}) with " \
                 "--config.data.data_dir"
    if task.tfds_name is None:
        raise InputError(f"task {task.name} has no TFDS dataset; {local_hint}.")
    where = tfds_data_dir or tfds.core.constants.get_default_data_dir()
    build = f"tfds build {task.tfds_name} --file_format=array_record --data_dir={where}"
    not_prepared = (f"TFDS dataset {task.tfds_name} is not prepared in {where}; prepare it where there is "
                    f"network with `{build}` (and copy that directory here), or {local_hint}.")
    try:
        # GLUE and CoNLL-2003 are not registered until their modules are imported: a prepared copy is
        # then found from its files, and a missing one raises DatasetNotFoundError.
        builder = tfds.builder(task.tfds_name, data_dir=tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise InputError(not_prepared) from None
    if not builder.is_prepared():
        raise InputError(not_prepared)
    if split not in builder.info.splits:
        raise InputError(f"TFDS {task.tfds_name} in {where} has no split {split!r}; it has "
                         f"{', '.join(builder.info.splits)}.")
    try:
        return builder.as_data_source(split=split), builder.info
    except NotImplementedError:
        raise InputError(f"TFDS {task.tfds_name} in {where} is stored as {builder.info.file_format.value}, "
                         f"which cannot be read without TensorFlow; rebuild it with `{build}`, or "
                         f"{local_hint}.") from None


def _read_tfds(task: TaskSpec, split: str, tfds_data_dir: str | None, max_examples: int) -> list[Any]:
    source, info = tfds_source(task, split, tfds_data_dir)
    count = len(source) if max_examples <= 0 else min(len(source), max_examples)
    rows = []
    for start in range(0, count, 4096):  # one read call per batch of rows, not one per row
        rows.extend(source.__getitems__(list(range(start, min(start + 4096, count)))))
    if task.kind in ("classification", "regression"):
        label_ids = _tfds_label_ids(task, info)
        return [glue_example(task, f"{split}-{features['idx']}", features, label_ids) for features in rows]
    if task.kind == "token_classification":
        tag_names = tuple(info.features["ner"].feature.names)
        return [ner_example(f"{split}-{index}", features, tag_names) for index, features in enumerate(rows)]
    return [squad_example(features) for features in rows]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def glue_example(task: TaskSpec, guid: str, features: Mapping[str, Any],
                 label_ids: tuple[int, ...] = ()) -> ClassificationExample:
    """A GLUE TFDS feature dict -> example; TFDS marks unlabeled test rows with label -1.

    `label_ids[i]` is our id of TFDS class i (identity if empty); `guid` is `{split}-{idx}`.
    """
    texts = [_text(features[name]) for name in task.text_features]
    label = features["label"]
    if task.kind == "regression":
        label = None if label == -1 else float(label)
    else:
        label = None if label == -1 else (label_ids[label] if label_ids else int(label))
    return ClassificationExample(guid=guid, text_a=texts[0], text_b=texts[1] if len(texts) > 1 else None,
                                 label=label)


def _tfds_label_ids(task: TaskSpec, info: tfds.core.DatasetInfo) -> tuple[int, ...]:
    """Our id of each TFDS class, matched by name, so a differently ordered build still agrees."""
    if task.kind == "regression":
        return ()
    names = tuple(info.features["label"].names)
    if sorted(names) != sorted(task.label_names):
        raise InputError(f"TFDS {task.tfds_name} has labels {', '.join(names)}, not {task.name}'s "
                         f"{', '.join(task.label_names)}; rebuild it with TFDS's glue builder.")
    return tuple(task.label_names.index(name) for name in names)


def ner_example(guid: str, features: Mapping[str, Any], tag_names: tuple[str, ...]) -> TokenExample:
    """A conll2003 TFDS feature dict -> example; `ner` holds ClassLabel ids into `tag_names`."""
    return TokenExample(guid=guid, words=tuple(_text(w) for w in features["tokens"]),
                        labels=tuple(tag_names[int(i)] for i in features["ner"]))


def squad_example(features: Mapping[str, Any]):
    """A squad TFDS feature dict -> QAExample; only v2.0 has `is_impossible`."""
    answers = features["answers"]
    return QAExample(qid=_text(features["id"]), question=_text(features["question"]),
                     context=_text(features["context"]),
                     answers=tuple(Answer(text=_text(t), start=int(s))
                                   for t, s in zip(answers["text"], answers["answer_start"])),
                     is_impossible=bool(features.get("is_impossible", False)))
