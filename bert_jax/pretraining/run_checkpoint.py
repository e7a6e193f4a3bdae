"""A pretraining run's checkpoints as models: restore one with its config and tokenizer, export and load
the params-only form.

A params-only export is the hand-over point: pretraining writes it (`export_params`), `import_hf` writes
it from someone else's checkpoint, and fine-tuning / feature extraction / continued pretraining read it
with `load_params_only`. The files themselves are written and read by `runtime/checkpoint.py`; this module
knows what model they hold.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.data import tokenizer_factory
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import checkpoint as checkpoint_lib
from bert_jax.runtime import parallel


class RunCheckpoint(NamedTuple):
    """One checkpoint of a pretraining run, restored with everything needed to use it."""

    step: int
    config: Any
    tokenizer: Any
    mesh: Any
    setup: steps_lib.Setup
    state: steps_lib.TrainState


def restore_run_checkpoint(workdir: str, step: int | None = None) -> RunCheckpoint:
    """Checkpoint `step` (default: the latest) of the run in `workdir`, with its own config and tokenizer."""
    checkpointer = checkpoint_lib.Checkpointer(workdir, create=False, async_save=False)
    step, meta = checkpointer.restore_meta(step)
    config = config_lib.validate(config_lib.from_stored(meta["config"]))
    tokenizer = tokenizer_factory.tokenizer_from_serialized(meta["tokenizer_kind"], meta["tokenizer_model"])
    mesh = parallel.make_mesh(config.mesh)
    setup, _ = steps_lib.make_pretraining_setup(config, mesh, tokenizer)
    state = checkpointer.restore_state(step, setup.abstract_state)
    checkpointer.close()
    return RunCheckpoint(step, config, tokenizer, mesh, setup, state)


def _directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def _abstract_params(config):
    """ShapeDtypeStructs (on one device) of the pretraining model's parameters for `config`."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = nnx.state(nnx.eval_shape(lambda: pretraining_heads.build_model(config, seed=0)), nnx.Param)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)


def load_params_only(export_dir: str):
    """(config, tokenizer, params as an nnx.State of the pretraining model) of a params-only export."""
    config, tokenizer, _ = checkpoint_lib.read_export_info(export_dir)
    config = config_lib.validate(config)
    return config, tokenizer, checkpoint_lib.restore_params_only(export_dir, _abstract_params(config))


def export_params(workdir: str, output: str, *, step: int | None = None) -> str:
    """Writes checkpoint `step` (default latest) of a pretraining run as a params-only export; returns a
    summary line."""
    run = restore_run_checkpoint(workdir, step)
    step, config, tokenizer, params = run.step, run.config, run.tokenizer, run.state.params
    checkpoint_lib.save_params_only(output, params, config, tokenizer,
                                    {"source": os.path.abspath(workdir), "step": step, "format": "params"})
    training_bytes = _directory_bytes(os.path.join(checkpoint_lib.checkpoint_dir(workdir), str(step)))
    return (f"wrote the params of step {step} to {output}: {_directory_bytes(output) / 2**20:.1f} MiB "
            f"(the training checkpoint with optimizer state: {training_bytes / 2**20:.1f} MiB)")
