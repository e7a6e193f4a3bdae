"""Fine-tuned models to and from transformers: a model directory (`model_dir.py`) <-> an HF directory of
a *ForSequenceClassification / *ForTokenClassification / *ForQuestionAnswering / *ForMultipleChoice model.

The tensor names and config.json fields live in `hf/task_names.py`, the files in `hf/files.py`; this
module reads and writes the model directory around them. An imported model is a model directory like the
ones fine-tuning writes, so `predict`, `export` and a further fine-tune read it alike; its files are read
with the fine-tuning config's default column names (text_column 'text', label_column 'label', ...).
"""

from __future__ import annotations

import os

import numpy as np
from flax import nnx, traverse_util

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.data import tokenizer_factory
from bert_jax.finetuning import config as finetune_config_lib
from bert_jax.finetuning import model_dir, own_tasks, steps
from bert_jax.finetuning.task_spec import TaskSpec
from bert_jax.hf import convert as hf_convert
from bert_jax.hf import files as hf_files
from bert_jax.hf import task_names

_MAX_SEQ_LENGTH = 512  # an imported model's sequence length when its tokenizer names none


def export_finetuned_hf(path: str, output: str) -> str:
    """Writes the fine-tuned model at `path` (a model directory or a fine-tuning workdir) as a transformers
    directory that AutoModelFor<its task> loads; returns a summary line."""
    model = model_dir.load(path)
    kind, label_names = model.task.kind, model.task.label_names
    ids = model.tokenizer.special_ids
    max_seq_length = model.settings["max_seq_length"]
    state_dict = task_names.to_hf_task_state_dict(model.params, model.config, kind, label_names,
                                                  pad_token_id=ids.pad, max_seq_length=max_seq_length)
    hf_config = task_names.hf_task_config_dict(model.config, kind, label_names, pad_token_id=ids.pad,
                                               bos_token_id=ids.cls, eos_token_id=ids.sep)
    architecture = hf_files.write_hf_files(output, state_dict, hf_config, model.tokenizer,
                                           model_max_length=max_seq_length)
    labels = f" with labels {', '.join(label_names)}" if kind not in ("regression", "qa") and label_names else ""
    return f"wrote the {kind} model {model.path} as {architecture}{labels} to {output}"


def is_hf_task_directory(input_dir: str) -> bool:
    """Does the HF directory's config.json name a task model class (rather than a pretraining one)?"""
    return task_names.task_kind(hf_files.read_hf_config(input_dir)) is not None


def import_hf_finetuned(input_dir: str, output: str) -> str:
    """Converts an HF fine-tuned BERT/RoBERTa/ALBERT task model directory into a model directory; returns a
    summary line."""
    if os.path.isdir(output) and os.listdir(output):  # model_dir.save replaces what is there
        raise InputError(f"{output} is not empty; choose a new --output directory.")
    tensors, hf_config, tokenizer = hf_files.read_hf_directory(input_dir)
    imported = task_names.from_hf_task_state_dict(tensors, hf_config)
    config = hf_convert.config_from_hf(imported.config_overrides, tokenizer)
    config.data.max_seq_length = _max_seq_length(config, hf_config, hf_files.read_tokenizer_config(input_dir))
    # Pretraining fields a task model never uses, kept valid for short sequences.
    config.masking.max_predictions_per_seq = min(config.masking.max_predictions_per_seq, config.data.max_seq_length)
    config_lib.validate(config)
    tokenizer_factory.check_fits_model(tokenizer, config.model.vocab_size)
    width = task_names.head_width(imported.kind, imported.label_names)
    check_complete(imported.params, config.model, imported.kind, width)

    finetune_config = finetune_config_lib.default_config()
    finetune_config.task = imported.kind
    finetune_config.data.max_seq_length = config.data.max_seq_length
    finetune_config_lib.validate(finetune_config)
    task = TaskSpec(name=imported.kind, kind=imported.kind, label_names=imported.label_names, eval_splits=(),
                    local_files={}, tfds_name=None, reading=own_tasks.reading_settings(finetune_config),
                    tag_scheme=_tag_scheme(imported.kind, imported.label_names), own=True)
    info = {"source": os.path.abspath(input_dir), "format": "hf_import",
            "hf_architecture": hf_config.get("architectures"), "unused_hf_tensors": imported.unexpected_keys}
    model_dir.save(output, imported.params, config, tokenizer, task, finetune_config, info)
    notes = f"\n  unused HF tensors: {', '.join(imported.unexpected_keys)}" if imported.unexpected_keys else ""
    labels = f", labels {', '.join(imported.label_names)}" if imported.label_names else ""
    return (f"imported {input_dir} ({hf_config['architectures'][0]}: {imported.kind}{labels}, "
            f"max_seq_length {config.data.max_seq_length}) to {output}{notes}")


def _max_seq_length(config, hf_config: dict, tokenizer_config: dict) -> int:
    """The tokenizer's model_max_length where it names a usable one, else min(512, the positions)."""
    positions = config.model.max_position_embeddings
    if task_names.task_model_type(config) == "roberta":  # HF RoBERTa's positions start at pad_token_id + 1
        positions -= hf_config.get("pad_token_id", 1) + 1
    named = tokenizer_config.get("model_max_length")
    if isinstance(named, int) and 8 <= named <= positions:
        return named
    return min(_MAX_SEQ_LENGTH, positions)


def _tag_scheme(kind: str, label_names) -> str:
    """Token classification tags: IOBES when any tag is E- or S-, else BIO (IOB1 looks the same by name)."""
    if kind != "token_classification":
        return ""
    return "IOBES" if any(name[:2] in ("E-", "S-") for name in label_names) else "BIO"


def check_complete(params: dict, model_config, kind: str, width: int) -> None:
    """The imported tensors are exactly our task model's parameters, each with its shape."""
    abstract = nnx.eval_shape(lambda: steps.build_task_model(model_config, kind, width, seed=0))
    expected = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
    got = traverse_util.flatten_dict(params)
    expected = {tuple(map(str, key)): value.shape for key, value in expected.items()}
    got = {tuple(map(str, key)): np.shape(value) for key, value in got.items()}
    if expected != got:
        differ = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        raise InputError(f"the imported tensors do not make a {kind} model: {['/'.join(k) for k in differ[:5]]} "
                         "differ; this checkpoint's layout is not one bert_jax reads.")
