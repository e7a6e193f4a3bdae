"""Every checkpoint bert_jax writes or reads, of every kind, goes through this module (Orbax I/O only).

Three kinds: a pretraining run's checkpoints (train state, resolved config, tokenizer, corpus fingerprint
and data-iterator position: `Checkpointer`), params-only exports (`save_params_only` / `read_export_info`
/ `restore_params_only`), and the best parameters of a fine-tuning seed (`save_finetuned_params` /
`restore_finetuned_params`). What model the arrays belong to is the caller's business, and whether a
run's checkpoints fit a new config is `pretraining/resume_check.py`'s.

A checkpoint is self-contained: `evaluate` and `export` need nothing but the checkpoint directory. Orbax
writes each step into a temporary directory and renames it when complete, so a crash mid-save leaves the
previous step as the latest restorable one (the trainer's Checkpointer deletes such leftovers). A step
directory that was damaged afterwards (a file deleted, truncated or overwritten) fails to restore:
`restore_latest` then names it, sets it aside and falls back to the step before.
"""

from __future__ import annotations

import base64
import errno
import json
import logging as std_logging
import os
import sys
from collections.abc import Callable

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from bert_jax.config import InputError
from bert_jax.config import from_stored as config_from_stored
from bert_jax.runtime import atomic

_ITEMS = ("state", "meta")
_DAMAGED_DIR = "checkpoints_damaged"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def _first_line(error: BaseException) -> str:
    """The gist of an Orbax/TensorStore error, without the pages of spec JSON that follow it."""
    text = str(error).strip().split(" [tensorstore_spec")[0]
    return f"{type(error).__name__}: {text.splitlines()[0][:240]}" if text else type(error).__name__


_fallout_quieted = False


def _quiet_failed_restore_fallout() -> None:
    """Drops the echoes of a failed restore, which is already reported in one line.

    Orbax abandons the reads still in flight; when they finish, each one prints an 'Event loop is
    closed' traceback (an unraisable exception) or an asyncio 'Task exception was never retrieved':
    hundreds of lines for one damaged checkpoint. Only those two messages are dropped.
    """
    global _fallout_quieted
    if _fallout_quieted:
        return
    _fallout_quieted = True
    previous_hook = sys.unraisablehook

    def unraisable_hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
            previous_hook(unraisable)

    sys.unraisablehook = unraisable_hook
    std_logging.getLogger("asyncio").addFilter(
        lambda record: not ("Task exception was never retrieved" in record.getMessage()
                            and "orbax" in record.getMessage()))


class Checkpointer:
    """A thin wrapper over ocp.CheckpointManager with the items this project stores."""

    def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True, create: bool = True,
                 cleanup_tmp: bool = False):
        """`cleanup_tmp`: delete unfinished saves of a killed run (only the run that writes may ask)."""
        directory = checkpoint_dir(workdir)
        if not create and not os.path.isdir(directory):
            raise InputError(f"no checkpoints in {directory}: point --workdir at a pretraining run directory.")
        self.directory = directory
        self._saving: int | None = None  # the step of an asynchronous save not yet waited for
        self.manager = ocp.CheckpointManager(
            directory, item_names=_ITEMS,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                                 enable_async_checkpointing=async_save,
                                                 cleanup_tmp_directories=cleanup_tmp))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, state, *, config, tokenizer, data_state=None, corpus=None) -> None:
        """Saves asynchronously (when enabled); `wait()` before relying on it being on disk.

        `corpus` (the run's `corpus.corpus_fingerprint`) lets a resumed run notice changed text.
        """
        meta = {"config": json.loads(config.to_json()), "tokenizer_kind": tokenizer.kind,
                "tokenizer_model": base64.b64encode(tokenizer.serialized_model()).decode("ascii"),
                "data_state": data_state, "corpus": corpus}
        self.wait()  # Orbax waits for the previous save anyway; its error is that step's, not this one's
        self._saving = step
        try:
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)), force=True)
        except Exception as e:
            self._explain_disk_full(e, f"the checkpoint of step {step}")
            raise

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise InputError(f"no checkpoint found in {self.directory}.")
        if step is None:
            return max(steps)
        if step not in steps:
            raise InputError(f"no checkpoint for step {step} in {self.directory}; available steps: {sorted(steps)}: "
                             "give --step one of them, or leave --step out for the newest.")
        return step

    def restore_meta(self, step: int | None = None) -> tuple[int, dict]:
        """(step, meta): 'config' (a dict), 'tokenizer_kind', 'tokenizer_model' (bytes), 'data_state' and
        'corpus' (None in checkpoints written before it was stored)."""
        step = self._resolve_step(step)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = dict(restored["meta"])
            meta["tokenizer_model"] = base64.b64decode(meta["tokenizer_model"])
        except Exception as e:  # a missing, truncated or overwritten file: Orbax raises many kinds
            self._raise_if_removed(step, e)
            raise InputError(f"the checkpoint {self.step_path(step)} cannot be read ({_first_line(e)}); it is "
                             "damaged: delete it or use an older step.") from e
        meta.setdefault("tokenizer_kind", "sentencepiece")
        meta.setdefault("corpus", None)
        return step, meta

    def restore_state(self, step: int, abstract_state):
        """Restores the train state onto the shardings of `abstract_state` (ShapeDtypeStructs)."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        except Exception as e:  # damage and a model mismatch look alike to Orbax (missing or odd metadata)
            self._raise_if_removed(step, e)
            raise InputError(f"the checkpoint {self.step_path(step)} cannot be restored ({_first_line(e)}); it is "
                             "damaged, or it was written by an older bert_jax or another config: use an older "
                             "step, the code and config it was written with, or a new --workdir.") from e
        return restored["state"]

    def restore_latest(self, abstract_state, *, before: int | None = None,
                       check_meta: Callable[[int, dict], None] | None = None) -> tuple[int, object, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores (at or before step `before`), or None.

        One that fails is logged with its path and the error, set aside under `checkpoints_damaged/` (so a
        new save can take its step) and the next older one is tried. `check_meta(step, meta)` may refuse a
        checkpoint whose meta is unusable (InputError), as if it were damaged. If none restores, nothing is
        moved and InputError names the directory: that is more likely another config than damage.
        """
        steps = sorted((s for s in self.all_steps() if before is None or s <= before), reverse=True)
        failures = []
        for step in steps:
            try:
                _, meta = self.restore_meta(step)
                if check_meta is not None:
                    check_meta(step, meta)
                state = self.restore_state(step, abstract_state)
            except InputError as e:
                _quiet_failed_restore_fallout()
                logging.warning("%s Trying the checkpoint before it.", e)
                failures.append(e)
                continue
            for damaged in steps[:len(failures)]:
                self._set_aside(damaged)
            if failures:
                logging.warning("fell back to the checkpoint of step %d (%s)", step, self.step_path(step))
            return step, state, meta
        if failures:
            raise InputError(f"none of the {len(failures)} checkpoints in {self.directory} can be restored; the "
                             f"newest: {failures[0]}")
        return None

    def _raise_if_removed(self, step: int, error: Exception) -> None:
        """A step that vanished while it was read was not damaged: a live run rotated it away."""
        if not os.path.isdir(self.step_path(step)):
            raise InputError(f"the checkpoint {self.step_path(step)} was removed while it was read: a running "
                             "pretraining keeps only its newest checkpoint.max_to_keep checkpoints; use a newer step, "
                             "or read it after the run ends.") from error

    def _set_aside(self, step: int) -> None:
        """Moves a damaged step directory out of Orbax's sight, keeping it for inspection."""
        self.wait()
        if jax.process_index() == 0 and os.path.isdir(self.step_path(step)):
            damaged_dir = os.path.join(os.path.dirname(self.directory), _DAMAGED_DIR)
            os.makedirs(damaged_dir, exist_ok=True)
            target, n = os.path.join(damaged_dir, str(step)), 1
            while os.path.exists(target):
                target, n = os.path.join(damaged_dir, f"{step}.{n}"), n + 1
            os.rename(self.step_path(step), target)
            logging.warning("moved the damaged checkpoint %s to %s", self.step_path(step), target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"bert_jax: damaged checkpoint {step} set aside")
        self.manager.reload()

    def _explain_disk_full(self, error: Exception, what: str) -> None:
        """A full disk is the user's to fix: InputError naming the directory; Orbax's own temporary
        directory holds the partial save, and the complete checkpoints before it stay as they were."""
        disk_full = (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
                     or "No space left on device" in str(error))
        if disk_full:
            # The failed save's other writers report into an event loop Orbax has closed ("Event loop is
            # closed" tracebacks from tensorstore callbacks): noise after the cause is known.
            std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
            kept = self.all_steps()
            raise InputError(f"no space left on device while saving {what} in {self.directory}; the complete "
                             f"checkpoints there ({', '.join(map(str, kept)) or 'none'}) are untouched: free space "
                             "or move the workdir to a larger disk, then run the same command again to resume.") from error

    def wait(self) -> None:
        saving, self._saving = self._saving, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # an asynchronous save's error surfaces here
            self._explain_disk_full(e, "a checkpoint" if saving is None else f"the checkpoint of step {saving}")
            raise

    def close(self) -> None:
        self.wait()
        self.manager.close()


# ---------------------------------------------------------------- params-only export (fine-tuning input)

_PARAMS = "params"
_CONFIG = "config.json"
_TOKENIZER = {"sentencepiece": "spm.model", "wordpiece": "tokenizer.json", "bpe": "tokenizer.json"}
_INFO = "export_info.json"


def save_params_only(output_dir: str, params, config, tokenizer, info: dict) -> None:
    """Writes params (an nnx.State of the pretraining model), the resolved config and the tokenizer.

    No optimizer state: this is what fine-tuning, feature extraction and continued pretraining start
    from. `info` (source, step, heads that were initialised fresh, ...) is kept as JSON beside it. The
    files are written into a hidden sibling directory renamed to `output_dir` when complete, so a killed
    or failed export never leaves a partial directory that looks like an export (one process only).
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(os.path.join(output_dir, _PARAMS)):
        raise InputError(f"{output_dir} already holds an export; choose a new --output directory.")
    with atomic.directory(output_dir) as partial:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(partial, _PARAMS), params)
        checkpointer.wait_until_finished()
        atomic.write_text(os.path.join(partial, _CONFIG), config.to_json(indent=2))
        atomic.write_bytes(os.path.join(partial, _TOKENIZER[tokenizer.kind]), tokenizer.serialized_model())
        atomic.write_json(os.path.join(partial, _INFO), {"tokenizer_kind": tokenizer.kind, **info}, indent=2)


def read_export_info(export_dir: str) -> tuple[object, object, dict]:
    """(config, tokenizer, info) of a params-only export, without touching the parameters."""
    from bert_jax.data import tokenizer_factory
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
        tokenizer = tokenizer_factory.tokenizer_from_serialized(kind, f.read(), tokenizer_path)
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


# ---------------------------------------------------------------- fine-tuned parameters (best dev score)

FINETUNED_PARAMS = "best_params"


def save_finetuned_params(seed_dir: str, params: dict) -> None:
    """Writes a fine-tuning seed's best parameters (a pure dict of arrays) to `<seed_dir>/best_params`."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(os.path.abspath(seed_dir), FINETUNED_PARAMS), params, force=True)
    checkpointer.wait_until_finished()


def restore_finetuned_params(seed_dir: str) -> dict:
    """The best parameters a fine-tuning seed wrote, as a pure dict of NumPy arrays."""
    return ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(seed_dir), FINETUNED_PARAMS))
