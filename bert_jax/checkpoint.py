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
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
