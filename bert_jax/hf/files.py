"""Hugging Face directories on disk: write what transformers' `from_pretrained` loads, and read one back.

The tensor names and conversions live in `names.py`; this module only does the files: `config.json`,
`model.safetensors` (or a legacy `pytorch_model.bin` when reading) and the tokenizer files. A SentencePiece
vocabulary is written as `spiece.model` for transformers' `AlbertTokenizer` (its own lower-casing and
accent options: none for one trained here, ALBERT's for an imported one); a WordPiece vocabulary as
`vocab.txt` + `tokenizer.json` for `BertTokenizer`; a byte-level BPE one as `vocab.json` + `merges.txt`
for `RobertaTokenizer`. Reading accepts the same three, and the WordPiece or BPE `tokenizer.json`
that transformers 5 saves in their place.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bert_jax.config import InputError
from bert_jax.data import hf_tokenizers, tokenizer_factory
from bert_jax.hf import distilbert_names, electra_names, modernbert_names
from bert_jax.hf import names as hf_names
from bert_jax.runtime import atomic


def _special_tokens_map(tokenizer) -> dict[str, str]:
    """transformers' names of the special tokens, spelled as this vocabulary spells them."""
    ids = tokenizer.special_ids
    tokens = {"unk_token": ids.unk, "sep_token": ids.sep, "pad_token": ids.pad, "cls_token": ids.cls,
              "mask_token": ids.mask}
    if tokenizer.kind != "wordpiece":  # AlbertTokenizer and RobertaTokenizer also name bos and eos
        tokens.update(bos_token=ids.cls, eos_token=ids.sep)
    return {name: tokenizer.id_to_piece(token_id) for name, token_id in tokens.items()}


def _write_tokenizer(output_dir: str, tokenizer, model_max_length: int | None = None, *,
                     tokenizer_json_only: bool = False) -> None:
    """`tokenizer_json_only`: the model type's AutoTokenizer reads tokenizer.json whatever tokenizer_class says
    (ModernBERT): a WordPiece or BPE vocabulary is written there, with the [CLS] A [SEP] template."""
    if tokenizer_json_only and tokenizer.kind in ("wordpiece", "bpe"):
        tokenizer.save_with_template(os.path.join(output_dir, "tokenizer.json"))
        tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast"}
        if tokenizer.kind == "wordpiece":
            tokenizer_config.update(do_lower_case=tokenizer.lowercase, strip_accents=tokenizer.strip_accents)
    elif tokenizer.kind == "wordpiece":
        atomic.write_text(os.path.join(output_dir, "vocab.txt"),
                          "".join(tokenizer.id_to_piece(i) + "\n" for i in range(tokenizer.vocab_size)))
        tokenizer.save(os.path.join(output_dir, "tokenizer.json"))
        tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.lowercase,
                            "strip_accents": tokenizer.strip_accents}
    elif tokenizer.kind == "bpe":
        # No tokenizer.json: from vocab.json + merges.txt RobertaTokenizer adds its <s> ... </s> template.
        tokenizer.save_vocab(output_dir)
        tokenizer_config = {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": False, "trim_offsets": True}
    else:
        atomic.write_bytes(os.path.join(output_dir, "spiece.model"), tokenizer.serialized_model())
        tokenizer_config = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": tokenizer.lowercase,
                            "keep_accents": not tokenizer.strip_accents, "remove_space": True}
    if model_max_length:  # a fine-tuned model's sequence length: HF's pipelines truncate to it
        tokenizer_config["model_max_length"] = model_max_length
    special_tokens = _special_tokens_map(tokenizer)
    atomic.write_json(os.path.join(output_dir, "tokenizer_config.json"), {**tokenizer_config, **special_tokens},
                      indent=2)
    atomic.write_json(os.path.join(output_dir, "special_tokens_map.json"), special_tokens, indent=2)


def write_hf_directory(output_dir: str, params: dict, config, tokenizer) -> str:
    """Writes config.json, model.safetensors and the tokenizer of a pretraining model; returns the HF
    architecture name."""
    ids = tokenizer.special_ids
    if os.path.exists(os.path.join(output_dir, "model.safetensors")):
        raise InputError(f"{output_dir} already holds a model.safetensors; choose a new --output directory.")
    state_dict, hf_config = hf_state_and_config(params, config, pad_token_id=ids.pad, bos_token_id=ids.cls,
                                                eos_token_id=ids.sep)
    return write_hf_files(output_dir, state_dict, hf_config, tokenizer)


def hf_state_and_config(params: dict, config, *, pad_token_id: int, bos_token_id: int | None = None,
                        eos_token_id: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(HF state dict, config.json content) of a pretraining model for `hf_names.hf_architecture(config)`.

    DistilBERT and ModernBERT have name tables of their own, which build on `names` as `electra_names` does.
    """
    table = {hf_names.DISTILBERT: distilbert_names, hf_names.MODERNBERT: modernbert_names}.get(
        hf_names.hf_architecture(config))
    if table is not None:
        return (table.to_state_dict(params, config, pad_token_id=pad_token_id),
                table.config_dict(config, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                                  eos_token_id=eos_token_id))
    return (hf_names.to_hf_state_dict(params, config, pad_token_id=pad_token_id),
            hf_names.hf_config_dict(config, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                                    eos_token_id=eos_token_id))


def write_electra_directories(output_dir: str, params: dict, config, tokenizer) -> dict[str, str]:
    """An ELECTRA run as two transformers directories, <output_dir>/discriminator (ElectraForPreTraining)
    and <output_dir>/generator (ElectraForMaskedLM), each with the tokenizer; returns {HF class: directory}."""
    ids = tokenizer.special_ids
    state_dicts = electra_names.electra_state_dicts(params, config, pad_token_id=ids.pad)
    configs = electra_names.electra_config_dicts(config, pad_token_id=ids.pad, bos_token_id=ids.cls,
                                                 eos_token_id=ids.sep)
    written = {}
    for architecture, name in ((electra_names.DISCRIMINATOR, "discriminator"), (electra_names.GENERATOR, "generator")):
        directory = os.path.join(output_dir, name)
        write_hf_files(directory, state_dicts[architecture], configs[architecture], tokenizer)
        written[architecture] = directory
    return written


def write_hf_files(output_dir: str, state_dict: dict, hf_config: dict, tokenizer, *,
                   model_max_length: int | None = None) -> str:
    """Writes `state_dict` as model.safetensors, `hf_config` as config.json, and the tokenizer; returns the
    HF architecture name.

    They are written into a hidden sibling directory renamed to `output_dir` when complete, so a killed or
    failed export never leaves a directory that transformers would try to load.
    """
    if os.path.exists(os.path.join(output_dir, "model.safetensors")):
        raise InputError(f"{output_dir} already holds a model.safetensors; choose a new --output directory.")
    with atomic.directory(output_dir) as partial:
        write_hf_contents(partial, state_dict, hf_config, tokenizer, model_max_length=model_max_length)
    return hf_config["architectures"][0]


def write_hf_contents(directory: str, state_dict: dict, hf_config: dict, tokenizer, *,
                      model_max_length: int | None = None) -> None:
    """The files of `write_hf_files`, written straight into `directory` (a caller's partial directory that
    gets more files, such as a sentence-transformers export's module configs, before it is renamed)."""
    from safetensors.numpy import save_file  # the [hf] extra
    save_file({name: np.ascontiguousarray(value, np.float32) for name, value in state_dict.items()},
              os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    atomic.write_json(os.path.join(directory, "config.json"), hf_config, indent=2)
    _write_tokenizer(directory, tokenizer, model_max_length,
                     tokenizer_json_only=hf_config.get("model_type") == modernbert_names.MODEL_TYPE)


def _read_json(path: str) -> dict:
    """A JSON object from an HF directory; a damaged or truncated file is named, not a JSONDecodeError."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); re-download or re-save the model "
                         "(save_pretrained writes it).") from None
    if not isinstance(value, dict):
        raise InputError(f"{path} holds a JSON {type(value).__name__}, not an object; re-download or re-save "
                         "the model (save_pretrained writes it).")
    return value


def _shard_files(input_dir: str, index_name: str) -> list[str]:
    """The shard files a sharded checkpoint's index (`weight_map`: tensor -> file) names, each once, in order."""
    index = _read_json(os.path.join(input_dir, index_name))
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{os.path.join(input_dir, index_name)} has no weight_map; re-download or re-save the model.")
    files = list(dict.fromkeys(weight_map.values()))
    missing = [name for name in files if not os.path.isfile(os.path.join(input_dir, name))]
    if missing:
        raise InputError(f"{input_dir} lacks {len(missing)} of the {len(files)} shards its {index_name} names, "
                         f"e.g. {missing[0]}; download every shard.")
    return [os.path.join(input_dir, name) for name in files]


def _read_tensors(input_dir: str) -> dict[str, np.ndarray]:
    """Every tensor of model.safetensors or pytorch_model.bin, or of all shards their index.json names."""
    candidates = [("model.safetensors", _load_safetensors), ("pytorch_model.bin", _load_torch_bin)]
    for name, load in candidates:
        if os.path.isfile(os.path.join(input_dir, name)):
            return load(os.path.join(input_dir, name))
        if os.path.isfile(os.path.join(input_dir, name + ".index.json")):
            tensors = {}
            for shard in _shard_files(input_dir, name + ".index.json"):
                tensors.update(load(shard))
            return tensors
    raise InputError(f"{input_dir} has neither model.safetensors nor pytorch_model.bin; point --input at a "
                     "Hugging Face model directory that holds its weights (save_pretrained writes one).")


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return dict(load_file(path))
    except SafetensorError as error:  # a truncated download or a file of another format
        raise InputError(f"{path} is not a readable safetensors file ({error}); re-download or re-save the "
                         "model (save_pretrained writes it).") from None


def _load_torch_bin(path: str) -> dict[str, np.ndarray]:
    import torch  # only legacy checkpoints need it
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: value.float().numpy() for name, value in state.items()}


def read_tokenizer_config(input_dir: str) -> dict:
    """tokenizer_config.json of an HF directory ({} when it has none)."""
    config_path = os.path.join(input_dir, "tokenizer_config.json")
    return _read_json(config_path) if os.path.isfile(config_path) else {}


def _read_tokenizer(input_dir: str):
    tokenizer_config = read_tokenizer_config(input_dir)
    vocab = os.path.join(input_dir, "vocab.txt")
    if os.path.isfile(vocab):
        return hf_tokenizers.WordPieceTokenizer.from_vocab(
            vocab, lowercase=tokenizer_config.get("do_lower_case", True),
            strip_accents=tokenizer_config.get("strip_accents"))
    bpe_vocab, merges = os.path.join(input_dir, "vocab.json"), os.path.join(input_dir, "merges.txt")
    if os.path.isfile(bpe_vocab) and os.path.isfile(merges):
        return hf_tokenizers.ByteLevelBPETokenizer.from_files(
            bpe_vocab, merges, add_prefix_space=tokenizer_config.get("add_prefix_space", False))
    spiece = os.path.join(input_dir, "spiece.model")
    if os.path.isfile(spiece):  # AlbertTokenizer's defaults: lower-case, strip accents
        return tokenizer_factory.load_tokenizer(spiece, lowercase=tokenizer_config.get("do_lower_case", True),
                                            strip_accents=not tokenizer_config.get("keep_accents", False))
    tokenizer_json = os.path.join(input_dir, "tokenizer.json")
    if os.path.isfile(tokenizer_json):  # transformers 5 saves only this
        return hf_tokenizers.from_tokenizer_json(tokenizer_json, tokenizer_config)
    raise InputError(f"{input_dir} has no tokenizer bert_jax can read: give BERT's vocab.txt, RoBERTa's "
                     "vocab.json + merges.txt, ALBERT's spiece.model, or a WordPiece/BPE tokenizer.json.")


def read_hf_config(input_dir: str) -> dict:
    """config.json of an HF model directory, refused unless it is a BERT-family encoder's (ELECTRA's included)."""
    config_path = os.path.join(input_dir, "config.json")
    for marker, what in (("checkpoints", "a bert_jax pretraining run"), ("export_info.json", "a bert_jax export")):
        if os.path.exists(os.path.join(input_dir, marker)):  # its config.json is ours, not HF's
            raise InputError(f"{input_dir} is {what} (it has {marker}), not a Hugging Face directory: fine-tuning "
                             "and embed take it as it is; `python -m bert_jax.export --format=hf` turns a run into "
                             "a Hugging Face directory.")
    if not os.path.isfile(config_path):
        raise InputError(f"{input_dir} has no config.json: point --input at a Hugging Face model directory.")
    hf_config = _read_json(config_path)
    hf_names.check_model_type(hf_config, config_path)  # before the weights: a GPT-2 directory is not "missing tensors"
    return hf_config


def read_hf_directory(input_dir: str) -> tuple[dict[str, np.ndarray], dict, object]:
    """(tensors by HF name, config.json as a dict, tokenizer) of an HF BERT/RoBERTa/ALBERT/ELECTRA directory."""
    hf_config = read_hf_config(input_dir)
    return _read_tensors(input_dir), hf_config, _read_tokenizer(input_dir)
