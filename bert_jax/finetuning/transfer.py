"""Where fine-tuning starts: the encoder (and pooler) of a pretraining checkpoint, a fresh task head.

`config.init_checkpoint` is a params-only export (`bert_jax.export` / `bert_jax.import_hf`), a
pretraining workdir (its newest checkpoint), or a fine-tuned model (intermediate-task transfer, e.g.
MNLI -> RTE: its encoder and pooler are kept, its head is not). Only the `bert/...` tensors are taken; the MLM and NSP/SOP
heads and any optimizer state are dropped. An encoder tensor whose shape differs, or that exists on one
side only, is an error naming the tensor: a silent partial load would fine-tune a half-random encoder.
The pooler is the one exception: RoBERTa's MLM-only pretraining has none, so a classifier starts a fresh one.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np
from flax import nnx, traverse_util

from bert_jax.config import InputError
from bert_jax.finetuning import model_dir
from bert_jax.pretraining import run_checkpoint
from bert_jax.runtime import checkpoint as checkpoint_lib

ENCODER = "bert"
_POOLER = (ENCODER, "pooler")


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A pretraining checkpoint's config, tokenizer and parameters (a pure dict of NumPy arrays)."""

    config: ml_collections.ConfigDict
    tokenizer: object
    params: dict
    source: str


def load_pretrained(path: str) -> Pretrained:
    """Reads a params-only export or the newest checkpoint of a pretraining workdir."""
    if not path:
        raise InputError("config.init_checkpoint is empty; give a params-only export (bert_jax.export / "
                         "bert_jax.import_hf) or a pretraining workdir.")
    if model_dir.is_model_dir(model_dir.resolve(path)):  # a fine-tuned model: its encoder, not its head
        model = model_dir.load(path)
        return Pretrained(model.config, model.tokenizer, model.params, model.path)
    if os.path.isfile(os.path.join(path, "export_info.json")):
        config, tokenizer, params = run_checkpoint.load_params_only(path)
    elif os.path.isdir(checkpoint_lib.checkpoint_dir(path)):
        run = run_checkpoint.restore_run_checkpoint(path)
        config, tokenizer, params = run.config, run.tokenizer, run.state.params
    else:
        raise InputError(f"config.init_checkpoint={path} is neither a params-only export (no export_info.json) "
                         "nor a pretraining workdir (no checkpoints/); export one with `python -m bert_jax.export`.")
    return Pretrained(config, tokenizer, nnx.to_pure_dict(jax.device_get(params)), os.path.abspath(path))


def resolve_model_config(pretrained_model, overrides) -> ml_collections.ConfigDict:
    """The checkpoint's encoder config with the fine-tuning config's non-empty `model` fields on top."""
    model = ml_collections.ConfigDict(pretrained_model.to_dict())
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in model:
            raise InputError(f"config.model.{name} is not an encoder setting; known: {sorted(model.keys())}.")
        model[name] = value
    return model


def _name(path: tuple) -> str:
    return "/".join(str(p) for p in path)


@dataclasses.dataclass(frozen=True)
class Transfer:
    """The task model's parameters, and which tensors came from where."""

    params: dict
    loaded: list[str]
    fresh: list[str]
    dropped: list[str]


def transfer_encoder(pretrained: dict, fresh: dict) -> Transfer:
    """`fresh` (the task model's pure-dict params) with every encoder tensor replaced by the pretrained one."""
    source = traverse_util.flatten_dict(pretrained)
    target = traverse_util.flatten_dict(fresh)
    merged, loaded, fresh_names = {}, [], []
    for path, value in target.items():
        if path[0] != ENCODER or (path[:2] == _POOLER and path not in source):
            merged[path] = value
            fresh_names.append(_name(path))
            continue
        if path not in source:
            raise InputError(f"the checkpoint has no encoder tensor {_name(path)} (shape {np.shape(value)}); the "
                             "fine-tuning config's model differs from the checkpoint's (layers or ALBERT sharing?).")
        if np.shape(source[path]) != np.shape(value):
            raise InputError(f"encoder tensor {_name(path)} has shape {np.shape(source[path])} in the checkpoint but "
                             f"{np.shape(value)} in the fine-tuning config; remove the config.model override or "
                             "use a matching checkpoint.")
        merged[path] = np.asarray(source[path], dtype=np.asarray(value).dtype)
        loaded.append(_name(path))
    dropped = [_name(p) for p in source if p not in target]
    unexpected = [name for name in dropped if name.startswith(ENCODER + "/") and not name.startswith("bert/pooler/")]
    if unexpected:
        raise InputError(f"the checkpoint's encoder has tensors the fine-tuning model lacks: {unexpected[:5]}; the "
                         "fine-tuning config's model differs from the checkpoint's (more layers or groups?).")
    return Transfer(traverse_util.unflatten_dict(merged), loaded, fresh_names, dropped)
