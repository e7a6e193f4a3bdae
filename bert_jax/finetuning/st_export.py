"""Sentence encoders to and from sentence-transformers: a sentence_embedding model directory (`model_dir.py`)
<-> a directory that `SentenceTransformer(path)` loads (its files: `hf/sentence_transformers.py`).

Export writes the encoder with the pooling and normalisation the fine-tune used; the softmax recipe's
classifier on (u, v, |u - v|) is a training device, not part of the encoder, and is left out (as
sentence-transformers' SoftmaxLoss keeps its classifier outside the model). Import reads pooling, Normalize
and max_seq_length from the directory itself, never from defaults, and writes a model directory like the
ones fine-tuning writes: `predict`, `export` and a further fine-tune (init_checkpoint = it) read it alike.
"""

from __future__ import annotations

import os

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.data import tokenizer_factory
from bert_jax.finetuning import config as finetune_config_lib
from bert_jax.finetuning import hf_export, model_dir, own_tasks
from bert_jax.finetuning.task_spec import TaskSpec
from bert_jax.hf import convert as hf_convert
from bert_jax.hf import files as hf_files
from bert_jax.hf import sentence_transformers as st_files

KIND = "sentence_embedding"
_MAX_SEQ_LENGTH = 512  # as hf_export: when neither the directory nor its tokenizer names a length


def export_sentence_transformers(path: str, output: str) -> str:
    """Writes the sentence_embedding model at `path` (a model directory or a fine-tuning workdir) as a
    sentence-transformers directory; returns a summary line."""
    model = model_dir.load(path)
    if model.task.kind != KIND:
        raise InputError(f"{model.path} is a {model.task.kind} model; --format=sentence_transformers exports "
                         f"{KIND} fine-tunes (use --format=hf for transformers' task classes).")
    sentence = model_dir.sentence_settings(model.settings)
    max_seq_length = int(model.settings["max_seq_length"])
    params = {name: value for name, value in model.params.items() if name != "classifier"}
    architecture = st_files.write_directory(output, params, model.config, model.tokenizer, pooling=sentence.pooling,
                                            normalize=bool(sentence.normalize), max_seq_length=max_seq_length)
    dropped = ("; the softmax classifier on (u, v, |u-v|) is a training head, not part of the encoder, and was "
               "left out") if "classifier" in model.params else ""
    return (f"wrote the sentence encoder {model.path} as a sentence-transformers directory ({architecture}, "
            f"{sentence.pooling} pooling{', normalized' if sentence.normalize else ''}, max_seq_length "
            f"{max_seq_length}) to {output}{dropped}")


def import_sentence_transformers(input_dir: str, output: str) -> str:
    """Converts a sentence-transformers directory into a sentence_embedding model directory; returns a
    summary line."""
    if os.path.isdir(output) and os.listdir(output):  # model_dir.save replaces what is there
        raise InputError(f"{output} is not empty; choose a new --output directory.")
    found = st_files.read_directory(input_dir)
    tensors, hf_config, tokenizer = hf_files.read_hf_directory(found.transformer_dir)
    if found.do_lower_case and not getattr(tokenizer, "lowercase", False):
        raise InputError(f"{input_dir}/sentence_bert_config.json lower-cases texts (do_lower_case) before a "
                         "tokenizer that does not; bert_jax's tokenizer cannot add that step.")
    imported = st_files.encoder_from_hf(tensors, hf_config)
    config = hf_convert.config_from_hf(imported.config_overrides, tokenizer)
    st_files.check_width(found, input_dir, config.model.hidden_size)
    config.data.max_seq_length = _max_seq_length(found, config, hf_config,
                                                 hf_files.read_tokenizer_config(found.transformer_dir), input_dir)
    config.masking.max_predictions_per_seq = min(config.masking.max_predictions_per_seq, config.data.max_seq_length)
    config_lib.validate(config)
    tokenizer_factory.check_fits_model(tokenizer, config.model.vocab_size)
    hf_export.check_complete(imported.params, config.model, KIND, 0)

    finetune_config = finetune_config_lib.default_config()
    finetune_config.task = KIND
    finetune_config.data.max_seq_length = config.data.max_seq_length
    finetune_config.data.text_pair_column = "text_pair"  # how a further fine-tune's pair files are read by default
    finetune_config.sentence.pooling = found.pooling
    finetune_config.sentence.normalize = found.normalize
    finetune_config_lib.validate(finetune_config)
    task = TaskSpec(name=KIND, kind=KIND, label_names=(), eval_splits=(), local_files={}, tfds_name=None,
                    reading=own_tasks.reading_settings(finetune_config), tag_scheme="", own=True)
    info = {"source": os.path.abspath(input_dir), "format": "sentence_transformers_import",
            "hf_architecture": hf_config.get("architectures"), "unused_hf_tensors": imported.unexpected_keys}
    model_dir.save(output, imported.params, config, tokenizer, task, finetune_config, info)
    notes = list(found.notes)
    if imported.unexpected_keys:
        notes.append(f"unused HF tensors: {', '.join(imported.unexpected_keys)}")
    return (f"imported {input_dir} ({hf_config['model_type']} sentence encoder: {found.pooling} pooling"
            f"{', normalized' if found.normalize else ''}, max_seq_length {config.data.max_seq_length}) to {output}"
            + "".join(f"\n  {note}" for note in notes))


def _max_seq_length(found: st_files.Directory, config, hf_config: dict, tokenizer_config: dict, where: str) -> int:
    """As sentence-transformers decides it: the directory's max_seq_length, else the tokenizer's
    model_max_length capped by the positions (RoBERTa's from pad_token_id + 1)."""
    positions = config.model.max_position_embeddings
    if hf_config["model_type"] == "roberta":
        positions -= hf_config.get("pad_token_id", 1) + 1
    if found.max_seq_length is not None:
        if not 2 <= found.max_seq_length <= positions:
            raise InputError(f"{where} sets max_seq_length {found.max_seq_length}, but the model has {positions} "
                             "positions.")
        return found.max_seq_length
    named = tokenizer_config.get("model_max_length")
    return min(named, positions) if isinstance(named, int) and named >= 2 else min(_MAX_SEQ_LENGTH, positions)
