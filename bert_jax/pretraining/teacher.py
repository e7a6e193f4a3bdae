"""A distillation run's teacher: copied into the workdir once, then the source of the student's config.

`config.teacher_checkpoint` may be a pretraining workdir, a params-only export or a transformers directory;
on the first start it is written as a params-only export to <workdir>/teacher (atomically), and every
later start reads that copy. A resume therefore never depends on the original still being there, and a
teacher changed on disk cannot change what the student learns from mid-run.
"""

from __future__ import annotations

import os

import jax
from absl import logging
from flax import nnx, traverse_util

from bert_jax import config as config_lib
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import run_checkpoint
from bert_jax.runtime import checkpoint as checkpoint_lib

TEACHER_DIR = "teacher"
# The student's own choices, kept from config.model when the DistilBERT recipe takes the teacher's shape.
_STUDENT_SWITCHES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "dtype",
                     "attention_impl", "vocab_pad_multiple", "scan_layers", "remat_policy", "gather_masked_positions",
                     "matmul_dtype", "fused_qkv")
# What a narrower (TinyBERT) student takes from the teacher: the vocabulary and what its inputs look like.
_FROM_TEACHER = ("vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps")


def teacher_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), TEACHER_DIR)


def materialise(source: str, workdir: str, import_hf_directory=None) -> str:
    """<workdir>/teacher, written from `source` unless it is already there; returns its path.

    `import_hf_directory(source, output)` converts a transformers directory (`hf.convert`'s; the command passes
    it in, since the HF readers sit above this folder); without it such a teacher is refused.
    """
    target = teacher_dir(workdir)
    if os.path.isfile(os.path.join(target, "export_info.json")):
        _check_same_source(source, target)
        return target
    if not source:
        raise config_lib.InputError("distillation needs a teacher: give --config.teacher_checkpoint=<a pretraining "
                                    "workdir, a params export or a transformers directory>.")
    if not os.path.isdir(source):
        raise config_lib.InputError(f"config.teacher_checkpoint={source} is not a directory; give a pretraining "
                                    "workdir, a params export or a transformers directory.")
    if os.path.isdir(checkpoint_lib.checkpoint_dir(source)):
        summary = run_checkpoint.export_params(source, target)
    elif os.path.isfile(os.path.join(source, "export_info.json")):
        if "task" in checkpoint_lib.read_export_info(source)[2]:
            raise config_lib.InputError(f"config.teacher_checkpoint={source} is a fine-tuned model (a task head, no "
                                        "masked-LM head); give the pretraining run or export it was fine-tuned from.")
        config, tokenizer, params = run_checkpoint.load_params_only(source)
        checkpoint_lib.save_params_only(target, params, config, tokenizer,
                                        {"source": os.path.abspath(source), "format": "params"})
        summary = f"copied the params export {source} to {target}"
    elif os.path.isfile(os.path.join(source, "config.json")) and import_hf_directory is not None:
        summary = import_hf_directory(source, target)
    elif os.path.isfile(os.path.join(source, "config.json")):
        raise config_lib.InputError(f"config.teacher_checkpoint={source} is a transformers directory; convert it with "
                                    "python -m bert_jax.import_hf --input=... --output=DIR and give DIR.")
    else:
        raise config_lib.InputError(
            f"config.teacher_checkpoint={source} is neither a pretraining workdir (no checkpoints/), a params "
            "export (no export_info.json) nor a transformers directory (no config.json).")
    logging.info("teacher: %s", summary)
    return target


def _check_same_source(source: str, target: str) -> None:
    """The workdir's teacher copy must come from the teacher this command names: a run that died before its
    first checkpoint and is restarted with another teacher would otherwise quietly keep the old one."""
    copied_from = checkpoint_lib.read_export_info(target)[2].get("source", "")
    if source and os.path.abspath(source) not in (target, copied_from):
        raise config_lib.InputError(f"{target} holds the teacher copied from {copied_from}, but "
                                    f"config.teacher_checkpoint is {os.path.abspath(source)}; give the same teacher "
                                    "to resume, or a new --workdir for another teacher.")
    logging.info("using the teacher copied into %s (from %s)", target, copied_from)


def adopt_teacher(config, directory: str):
    """The run's config with the teacher of `directory` (a params export) adopted, see `with_teacher`, and the
    teacher's tokenizer as the run's."""
    teacher, _, _ = checkpoint_lib.read_export_info(directory)
    return with_teacher(config, teacher, tokenizer_model=checkpoint_lib.exported_tokenizer_path(directory),
                        where=directory)


def with_teacher(config, teacher, *, tokenizer_model: str = "", where: str = "the teacher config"):
    """`config` with the teacher's encoder config and objective filled in (`teacher` is the teacher's run
    config), and the student shaped by the recipe: DistilBERT takes the teacher's shape with half its layers
    and no segment table (unless `train.init_checkpoint` gave the student already, or the teacher has no
    position table to fold it into); TinyBERT keeps
    config.model's shape and takes the teacher's vocabulary and input conventions."""
    if teacher.objective == "electra":
        raise config_lib.InputError(f"the teacher in {where} is an ELECTRA discriminator, which has no masked-LM "
                                    "head to distil from; use an MLM-pretrained teacher (BERT, RoBERTa).")
    if teacher.model.num_hidden_groups:
        raise config_lib.InputError(f"the teacher in {where} shares its layers (ALBERT, num_hidden_groups="
                                    f"{teacher.model.num_hidden_groups}): layer-to-layer distillation needs a teacher "
                                    "with its own weights per layer.")
    config = config_lib.from_stored(config.to_dict())
    config.distill.teacher_model = config_lib.from_stored(teacher.to_dict()).model
    config.distill.teacher_objective = teacher.objective
    config.objective = "mlm"
    if config.distill.recipe == "distilbert" and not config.train.init_checkpoint:
        student = teacher.model.to_dict()
        student.update({name: config.model[name] for name in _STUDENT_SWITCHES})
        # No segment table, its row 0 folded into the positions; a teacher without a position table (rotary,
        # ALiBi) has nowhere to fold it, so its student keeps the teacher's table.
        learned = teacher.model.get("position_encoding", "learned") == "learned"
        segments = 0 if learned else teacher.model.type_vocab_size
        student.update(num_hidden_layers=max(1, teacher.model.num_hidden_layers // 2), type_vocab_size=segments)
        config.model.update(student)
    elif config.distill.recipe == "tinybert" and not config.train.init_checkpoint:
        config.model.update({name: teacher.model[name] for name in _FROM_TEACHER})
    if tokenizer_model:
        config.data.tokenizer_model = tokenizer_model
    config.data.tokenizer_vocab_size = min(teacher.data.tokenizer_vocab_size, config.model.vocab_size)
    config.data.max_seq_length = min(config.data.max_seq_length, teacher.model.max_position_embeddings)
    config.masking.max_predictions_per_seq = min(config.masking.max_predictions_per_seq, config.data.max_seq_length)
    logging.info("distilling a %s student (%s) from a %s teacher (%s)",
                 f"{config.model.num_hidden_layers}x{config.model.hidden_size}", config.distill.recipe,
                 f"{teacher.model.num_hidden_layers}x{teacher.model.hidden_size}", teacher.objective)
    return config


def student_start(loaded: nnx.State, fresh: nnx.State, source: str) -> nnx.State:
    """`fresh` (the student's initial parameters) with every tensor `loaded` (train.init_checkpoint) has.

    The export's heads the student does not have (a pooler, an NSP head) are left out; TinyBERT's `fit_dense`
    starts fresh when the export has none; any other tensor the student has and the export lacks, or one
    of another shape, is an InputError: the student would start half random.
    """
    given = traverse_util.flatten_dict(nnx.to_pure_dict(loaded))
    wanted = traverse_util.flatten_dict(nnx.to_pure_dict(fresh))
    missing = sorted("/".join(map(str, k)) for k in wanted if k not in given and k[0] != "fit_dense")
    differ = sorted("/".join(map(str, k)) for k in wanted if k in given and given[k].shape != wanted[k].shape)
    if missing or differ:
        raise config_lib.InputError(f"config.train.init_checkpoint={source} does not fit the student: "
                                    f"{'missing ' + ', '.join(missing[:4]) if missing else ''}"
                                    f"{'; other shapes: ' + ', '.join(differ[:4]) if differ else ''}; give an "
                                    "export of a model of the student's shape, or leave init_checkpoint empty.")
    merged = {k: given.get(k, value) for k, value in wanted.items()}
    state = jax.tree.map(lambda x: x, fresh)
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(merged))
    return state


def load_teacher_params(config, directory: str) -> nnx.State:
    """The teacher's parameters from `directory`, as the tree of `pretraining_heads.build_teacher(config)`
    (a TinyBERT student used as a teacher loses its `fit_dense`)."""
    _, _, params = run_checkpoint.load_params_only(directory)
    _, abstract = nnx.split(nnx.eval_shape(lambda: pretraining_heads.build_teacher(config)), nnx.Param)
    loaded = nnx.to_pure_dict(params)
    wanted = nnx.to_pure_dict(abstract)
    nnx.replace_by_pure_dict(abstract, {key: loaded[key] for key in wanted})
    return jax.tree.map(lambda x: x, abstract)
