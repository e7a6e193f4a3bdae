"""Checkpoints in and out: params-only exports, Hugging Face exports, and imports from Hugging Face.

A params-only export (`checkpoint.save_params_only`) is the hand-over point: pretraining writes it,
`import_hf` writes it from someone else's checkpoint, and fine-tuning / feature extraction / continued
pretraining read it with `load_params_only`.
"""

from __future__ import annotations

import os

import jax
from flax import nnx

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import config as config_lib
from bert_jax import evaluation, hf_io, interop, train
from bert_jax.data import tokenizer as tokenizer_lib


def _directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def _abstract_params(config):
    """ShapeDtypeStructs (on one device) of the pretraining model's parameters for `config`."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = nnx.state(nnx.eval_shape(lambda: train.build_model(config, seed=0)), nnx.Param)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)


def load_params_only(export_dir: str):
    """(config, tokenizer, params as an nnx.State of the pretraining model) of a params-only export."""
    config, tokenizer, _ = checkpoint_lib.read_export_info(export_dir)
    config = config_lib.validate(config)
    return config, tokenizer, checkpoint_lib.restore_params_only(export_dir, _abstract_params(config))


def export_checkpoint(workdir: str, output: str, *, step: int | None = None, fmt: str = "params") -> str:
    """Writes checkpoint `step` (default latest) of a pretraining run as `fmt`; returns a summary line."""
    run = evaluation.restore_run_checkpoint(workdir, step)
    step, config, tokenizer, params = run.step, run.config, run.tokenizer, run.state.params
    if fmt == "hf":
        architecture = hf_io.write_hf_directory(output, nnx.to_pure_dict(jax.device_get(params)), config, tokenizer)
        return f"wrote step {step} of {workdir} as {architecture} to {output}"
    checkpoint_lib.save_params_only(output, params, config, tokenizer,
                                    {"source": os.path.abspath(workdir), "step": step, "format": "params"})
    training_bytes = _directory_bytes(os.path.join(checkpoint_lib.checkpoint_dir(workdir), str(step)))
    return (f"wrote the params of step {step} to {output}: {_directory_bytes(output) / 2**20:.1f} MiB "
            f"(the training checkpoint with optimizer state: {training_bytes / 2**20:.1f} MiB)")


def import_hf_directory(input_dir: str, output: str) -> str:
    """Converts an HF BERT/RoBERTa/ALBERT directory into a params-only export; returns a summary line."""
    tensors, hf_config, tokenizer = hf_io.read_hf_directory(input_dir)
    imported = interop.from_hf_state_dict(tensors, hf_config)
    config = config_lib.default_config()
    config.model.update(imported.config_overrides["model"])
    config.objective = imported.config_overrides["objective"]
    config.data.tokenizer_vocab_size = tokenizer.vocab_size
    config.data.max_seq_length = min(config.data.max_seq_length, config.model.max_position_embeddings)
    config_lib.validate(config)
    tokenizer_lib.check_fits_model(tokenizer, config.model.vocab_size)
    fresh = nnx.to_pure_dict(nnx.state(train.build_model(config, seed=config.train.seed), nnx.Param))
    params = nnx.state(nnx.eval_shape(lambda: train.build_model(config, seed=0)), nnx.Param)
    nnx.replace_by_pure_dict(params, interop.with_fresh_heads(imported.params, fresh))
    info = {"source": os.path.abspath(input_dir), "hf_architecture": hf_config.get("architectures"),
            "fresh_heads": imported.missing_heads, "unused_hf_tensors": imported.unexpected_keys}
    checkpoint_lib.save_params_only(output, params, config, tokenizer, info)
    notes = []
    if imported.missing_heads:
        notes.append(f"initialised fresh (absent from the checkpoint): {', '.join(imported.missing_heads)}")
    if imported.unexpected_keys:
        notes.append(f"unused HF tensors: {', '.join(imported.unexpected_keys)}")
    return f"imported {input_dir} ({config.objective}) to {output}" + "".join(f"\n  {n}" for n in notes)
