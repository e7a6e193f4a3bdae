"""Orbax checkpointing of a run: train state, resolved config, tokenizer and data-iterator position.

A checkpoint is self-contained: `evaluate` and `export` need nothing but the checkpoint directory. Orbax
writes each step into a temporary directory and renames it when complete, so a crash mid-save leaves the
previous step as the latest restorable one.
"""

from __future__ import annotations

import base64
import json
import os

import orbax.checkpoint as ocp

from bert_jax.config import InputError
from bert_jax.config import from_stored as config_from_stored

_ITEMS = ("state", "meta")


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
    """A thin wrapper over ocp.CheckpointManager with the items this project stores."""

    def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True, create: bool = True):
        directory = checkpoint_dir(workdir)
        if not create and not os.path.isdir(directory):
            raise InputError(f"no checkpoints in {directory}: point --workdir at a pretraining run directory.")
        self.directory = directory
        self.manager = ocp.CheckpointManager(
            directory, item_names=_ITEMS,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, *, config, tokenizer, data_state=None) -> None:
        """Saves asynchronously (when enabled); `wait()` before relying on it being on disk."""
        meta = {"config": json.loads(config.to_json()), "tokenizer_kind": tokenizer.kind,
                "tokenizer_model": base64.b64encode(tokenizer.serialized_model()).decode("ascii"),
                "data_state": data_state}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise InputError(f"no checkpoint found in {self.directory}.")
        if step is None:
            return max(steps)
        if step not in steps:
            raise InputError(f"no checkpoint for step {step} in {self.directory}; available steps: {sorted(steps)}.")
        return step

    def restore_meta(self, step: int | None = None) -> tuple[int, dict]:
        """(step, meta): 'config' (a dict), 'tokenizer_kind', 'tokenizer_model' (bytes), 'data_state'."""
        step = self._resolve_step(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = dict(restored["meta"])
        meta["tokenizer_model"] = base64.b64decode(meta["tokenizer_model"])
        meta.setdefault("tokenizer_kind", "sentencepiece")
        return step, meta

    def restore_state(self, step: int, abstract_state):
        """Restores the train state onto the shardings of `abstract_state` (ShapeDtypeStructs)."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        except (ValueError, KeyError) as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"the checkpoint at step {step} in {self.directory} does not fit the model its config "
                             f"describes ({first_line}); it was written by an older bert_jax or another config: "
                             "use the code and config it was written with, or a new --workdir.") from e
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# ---------------------------------------------------------------- params-only export (fine-tuning input)

_PARAMS = "params"
_CONFIG = "config.json"
_TOKENIZER = {"sentencepiece": "spm.model", "wordpiece": "tokenizer.json"}
_INFO = "export_info.json"


def save_params_only(output_dir: str, params, config, tokenizer, info: dict) -> None:
    """Writes params (an nnx.State of the pretraining model), the resolved config and the tokenizer.

    No optimizer state: this is what fine-tuning, feature extraction and continued pretraining start
    from. `info` (source, step, heads that were initialised fresh, ...) is kept as JSON beside it.
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(os.path.join(output_dir, _PARAMS)):
        raise InputError(f"{output_dir} already holds an export; choose a new --output directory.")
    os.makedirs(output_dir, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(output_dir, _PARAMS), params)
    checkpointer.wait_until_finished()
    with open(os.path.join(output_dir, _CONFIG), "w", encoding="utf-8") as f:
        f.write(config.to_json(indent=2))
    with open(os.path.join(output_dir, _TOKENIZER[tokenizer.kind]), "wb") as f:
        f.write(tokenizer.serialized_model())
    with open(os.path.join(output_dir, _INFO), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_kind": tokenizer.kind, **info}, f, indent=2)


def read_export_info(export_dir: str) -> tuple[object, object, dict]:
    """(config, tokenizer, info) of a params-only export, without touching the parameters."""
    from bert_jax.data import tokenizer as tokenizer_lib  # data code is not needed to save
    info_path = os.path.join(export_dir, _INFO)
    if not os.path.isfile(info_path):
        raise InputError(f"{export_dir} is not a bert_jax params-only export (no {_INFO}); make one with "
                         "`python -m bert_jax.export --format=params` or `python -m bert_jax.import_hf`.")
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    with open(os.path.join(export_dir, _CONFIG), encoding="utf-8") as f:
        config = config_from_stored(json.load(f))
    kind = info["tokenizer_kind"]
    tokenizer_path = os.path.join(export_dir, _TOKENIZER[kind])
    with open(tokenizer_path, "rb") as f:
        tokenizer = tokenizer_lib.tokenizer_from_serialized(kind, f.read(), tokenizer_path)
    return config, tokenizer, info


def exported_tokenizer_path(export_dir: str) -> str:
    """The tokenizer file of a params-only export (a SentencePiece .model or a WordPiece .json)."""
    for name in _TOKENIZER.values():
        path = os.path.join(os.path.abspath(export_dir), name)
        if os.path.isfile(path):
            return path
    raise InputError(f"{export_dir} holds no tokenizer ({' or '.join(_TOKENIZER.values())}).")


def restore_params_only(export_dir: str, abstract_params):
    """The exported params, restored onto the structure/shardings of `abstract_params`."""
    return ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(export_dir), _PARAMS), abstract_params)
