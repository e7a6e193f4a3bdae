"""A fine-tuned model as one self-contained directory: encoder + task head parameters, the encoder config,
the tokenizer, and the task (kind, label names in id order, how input files are read, sequence length).

It has the params-only export's layout (`params/`, `config.json`, the tokenizer file, `export_info.json`)
with the task under `export_info.json`'s "task" key, so `predict`, `export --format=hf` and a further
fine-tune (e.g. MNLI -> RTE) read it with no other file. Written to a hidden name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from bert_jax.config import InputError
from bert_jax.finetuning.task_spec import TaskSpec
from bert_jax.runtime import checkpoint as checkpoint_lib

MODEL_DIR = "model"  # inside a fine-tuning workdir
FINETUNE_RECORD = "finetune_config.json"  # in a fine-tuning workdir from its start: what a resume must match
_TASK_FIELDS = ("name", "kind", "label_names", "eval_splits", "reading", "tag_scheme", "own", "version_2")
_SETTINGS = ("max_seq_length", "doc_stride", "max_query_length")


@dataclasses.dataclass(frozen=True)
class FinetunedModel:
    """What a model directory holds; `params` is a pure dict of NumPy arrays of the task model."""

    path: str
    config: ml_collections.ConfigDict  # the encoder's config (config.model) as pretraining stores it
    tokenizer: Any
    task: TaskSpec
    settings: dict[str, Any]  # max_seq_length, doc_stride, max_query_length, qa decoding
    params: dict
    info: dict


def _benchmark_reading(task: TaskSpec) -> dict[str, Any]:
    """How `predict` reads new text for a benchmark model: the columns of its official files."""
    columns = task.tsv_text_columns or ("text",)
    reading = {"file_format": "", "text_column": columns[0], "text_pair_column": columns[1] if len(columns) > 1 else "",
               "label_column": task.tsv_label_column or "label", "label_separator": ",", "tokens_column": "tokens",
               "tags_column": "tags", "context_column": "context", "question_column": "", "choice_columns": ()}
    if task.name == "swag":
        reading.update(context_column="sent1", question_column="sent2",
                       choice_columns=("ending0", "ending1", "ending2", "ending3"))
    return reading


def task_info(task: TaskSpec, config) -> dict[str, Any]:
    """The task as JSON: enough to rebuild its TaskSpec and read new files as the training files were read."""
    info = {name: getattr(task, name) for name in _TASK_FIELDS}
    info["label_names"] = list(task.label_names)
    info["eval_splits"] = list(task.eval_splits)
    info["reading"] = dict(task.reading) if task.own else _benchmark_reading(task)
    info["reading"]["choice_columns"] = list(info["reading"]["choice_columns"])
    info["settings"] = {name: config.data[name] for name in _SETTINGS}
    info["settings"]["qa"] = config.qa.to_dict()
    if task.kind == "sentence_embedding":  # pooling, normalisation and loss: what the encoder outputs
        info["settings"]["sentence"] = config.sentence.to_dict()
    return info


def sentence_settings(settings: dict):
    """A sentence encoder's `sentence` settings as a ConfigDict (None for other task models)."""
    return ml_collections.ConfigDict(settings["sentence"]) if "sentence" in settings else None


def _task_from_info(info: dict[str, Any]) -> TaskSpec:
    reading = dict(info["reading"], choice_columns=tuple(info["reading"]["choice_columns"]))
    return TaskSpec(name=info["name"], kind=info["kind"], label_names=tuple(info["label_names"]),
                    eval_splits=tuple(info["eval_splits"]), local_files={}, tfds_name=None, reading=reading,
                    tag_scheme=info["tag_scheme"], own=True, version_2=info["version_2"])


def save(path: str, params: dict, config: ml_collections.ConfigDict, tokenizer, task: TaskSpec, finetune_config,
         extra: dict[str, Any]) -> None:
    """Writes the model directory `path` (replacing one a crashed run of this fine-tune left complete)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    params = {name: np.asarray(value) for name, value in _flat(params).items()}
    checkpoint_lib.save_params_only(path, _unflat(params), config, tokenizer,
                                    {"task": task_info(task, finetune_config), **extra})


def is_model_dir(path: str) -> bool:
    """Does `path` hold a fine-tuned model (rather than a pretraining export)?"""
    try:
        _, _, info = checkpoint_lib.read_export_info(path)
    except (InputError, OSError, ValueError):
        return False
    return "task" in info


def resolve(path: str) -> str:
    """A model directory, or a finished fine-tuning workdir holding one; an unfinished one is an InputError."""
    inner = os.path.join(path, MODEL_DIR)
    if os.path.isfile(os.path.join(inner, "export_info.json")):
        return inner
    if os.path.isfile(os.path.join(path, FINETUNE_RECORD)):
        raise InputError(f"{path} is a fine-tune that has not finished (no {MODEL_DIR}/ yet): run the same "
                         "bert_jax.finetune command again to resume and finish it, then give this directory.")
    return path


def load(path: str) -> FinetunedModel:
    """Reads a model directory (or the one inside a fine-tuning workdir)."""
    path = resolve(path)
    if not os.path.isdir(path):
        raise InputError(f"{path} is not a directory; give the model directory a fine-tune wrote "
                         f"(<workdir>/{MODEL_DIR}) or its workdir.")
    config, tokenizer, info = checkpoint_lib.read_export_info(path)
    if "task" not in info:
        raise InputError(f"{path} is a pretrained encoder without a task head; fine-tune it first "
                         "(python -m bert_jax.finetune), then give the fine-tune's workdir.")
    try:
        params = ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(path), "params"))
    except Exception as error:  # noqa: BLE001 - a missing or damaged file: Orbax raises many kinds
        raise InputError(f"the parameters in {path}/params cannot be read ({str(error).splitlines()[0][:200]}); "
                         "the model directory is damaged: fine-tune again or restore it from a copy.") from None
    # Orbax stores the integer keys of layer lists as strings; the task model's own tree has integers.
    params = {tuple(int(k) if isinstance(k, str) and k.isdigit() else k for k in name): np.asarray(value)
              for name, value in _flat(params).items()}
    task = _task_from_info(info["task"])
    return FinetunedModel(os.path.abspath(path), config, tokenizer, task, dict(info["task"]["settings"]),
                          _unflat(params), info)


def _flat(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _unflat(flat: dict[tuple, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree
