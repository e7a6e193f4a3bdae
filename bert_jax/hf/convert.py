"""Conversion both ways between a bert_jax model and a Hugging Face transformers directory.

`export_hf` writes a pretraining run's checkpoint as a transformers directory (`files.py` writes it,
`names.py` maps the tensor names; a DistilBERT student's are in `distilbert_names.py`, a ModernBERT's in
`modernbert_names.py`);
`import_hf_directory` turns a transformers BERT/RoBERTa/ALBERT/DistilBERT/ModernBERT directory, or an ELECTRA
discriminator (with its generator when there is one; `electra_names.py`), into a params-only export, which
pretraining, distillation and fine-tuning read like their own.
"""

from __future__ import annotations

import os

import jax
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.data import tokenizer_factory
from bert_jax.hf import distilbert_names, electra_names, modernbert_names
from bert_jax.hf import files as hf_files
from bert_jax.hf import names as hf_names
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import run_checkpoint
from bert_jax.runtime import checkpoint as checkpoint_lib


def export_hf(workdir: str, output: str, *, step: int | None = None) -> str:
    """Writes checkpoint `step` (default latest) of a pretraining run as a transformers directory; returns a
    summary line."""
    run = run_checkpoint.restore_run_checkpoint(workdir, step)
    params = nnx.to_pure_dict(jax.device_get(run.state.params))
    if run.config.objective == "electra":
        written = hf_files.write_electra_directories(output, params, run.config, run.tokenizer)
        return f"wrote step {run.step} of {workdir} as " + ", ".join(
            f"{architecture} to {directory}" for architecture, directory in written.items())
    architecture = hf_files.write_hf_directory(output, params, run.config, run.tokenizer)
    dropped = ("; TinyBERT's fit_dense (the student-to-teacher width map, used only in training) is not part of "
               f"{architecture} and was left out") if "fit_dense" in params else ""
    if "sbo_head" in params:
        dropped = (f"; SpanBERT's span-boundary head (sbo_head, used only in pretraining) is not part of "
                   f"{architecture} and was left out")
    return f"wrote step {run.step} of {workdir} as {architecture} to {output}{dropped}"


def config_from_hf(config_overrides: dict, tokenizer):
    """Our config of an imported HF model: the defaults, its encoder fields and objective, its tokenizer's size."""
    config = config_lib.default_config()
    config.model.update(config_overrides["model"])
    config.objective = config_overrides["objective"]
    config.data.tokenizer_vocab_size = tokenizer.vocab_size
    return config


def import_hf_directory(input_dir: str, output: str, *, generator: str | None = None) -> str:
    """Converts an HF BERT/RoBERTa/ALBERT/DistilBERT/ModernBERT/ELECTRA directory into a params-only export;
    returns a summary line. A DistilBertForMaskedLM becomes objective 'mlm' with type_vocab_size 0 (no segment
    table); a ModernBertForMaskedLM objective 'mlm' with ModernBERT's block flags in config.model.

    ELECTRA: `input_dir` is the discriminator (ElectraForPreTraining, or ElectraModel: a fresh RTD head);
    the generator (ElectraForMaskedLM) comes from `generator`, else from a `generator/` directory beside
    `input_dir`, else is initialised fresh at config.electra's default size.
    """
    tensors, hf_config, tokenizer = hf_files.read_hf_directory(input_dir)
    notes = []
    if hf_config["model_type"] == "electra":
        generator = generator or _sibling_generator(input_dir)
        generator_files = hf_files.read_hf_directory(generator)[:2] if generator else None
        if generator is None:
            notes.append("no generator directory (--generator, or generator/ beside --input): the generator is "
                         "initialised fresh")
        imported = electra_names.from_hf_electra(tensors, hf_config, config_lib.default_config().electra,
                                                 where=input_dir, generator=generator_files,
                                                 generator_where=generator or "--generator")
        notes += imported.notes
    else:
        if generator:
            raise config_lib.InputError(f"--generator is for ELECTRA; {input_dir} is a {hf_config['model_type']} "
                                        "model.")
        if hf_config["model_type"] == distilbert_names.MODEL_TYPE:
            imported = distilbert_names.from_hf_distilbert(tensors, hf_config)
        elif hf_config["model_type"] == modernbert_names.MODEL_TYPE:
            imported = modernbert_names.from_hf_modernbert(tensors, hf_config)
        else:
            imported = hf_names.from_hf_state_dict(tensors, hf_config)
    config = config_from_hf(imported.config_overrides, tokenizer)
    config.electra.update(imported.config_overrides.get("electra", {}))
    config.data.max_seq_length = min(config.data.max_seq_length, config.model.max_position_embeddings)
    config_lib.validate(config)
    tokenizer_factory.check_fits_model(tokenizer, config.model.vocab_size)
    fresh = nnx.to_pure_dict(nnx.state(pretraining_heads.build_model(config, seed=config.train.seed), nnx.Param))
    params = nnx.state(nnx.eval_shape(lambda: pretraining_heads.build_model(config, seed=0)), nnx.Param)
    nnx.replace_by_pure_dict(params, hf_names.with_fresh_heads(imported.params, fresh))
    info = {"source": os.path.abspath(input_dir), "hf_architecture": hf_config.get("architectures"),
            "fresh_heads": imported.missing_heads, "unused_hf_tensors": imported.unexpected_keys}
    if hf_config["model_type"] == "electra":
        info["generator_source"] = os.path.abspath(generator) if generator else None
    checkpoint_lib.save_params_only(output, params, config, tokenizer, info)
    if imported.missing_heads:
        notes.append(f"initialised fresh (absent from the checkpoint): {', '.join(imported.missing_heads)}")
    if imported.unexpected_keys:
        notes.append(f"unused HF tensors: {', '.join(imported.unexpected_keys)}")
    return f"imported {input_dir} ({config.objective}) to {output}" + "".join(f"\n  {n}" for n in notes)


def _sibling_generator(input_dir: str) -> str | None:
    """<parent of input_dir>/generator when it is an HF directory other than input_dir (export_hf's layout)."""
    candidate = os.path.join(os.path.dirname(os.path.abspath(input_dir)), "generator")
    if os.path.abspath(input_dir) != candidate and os.path.isfile(os.path.join(candidate, "config.json")):
        return candidate
    return None
