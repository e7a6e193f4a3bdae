"""sentence-transformers directories: write one that `SentenceTransformer(path)` loads, and read one back.

A directory is a transformers *Model (config.json, model.safetensors, tokenizer files at its root, as
`files.py` writes them) plus the modules around it: `modules.json` (Transformer -> Pooling [-> Normalize]),
`sentence_bert_config.json`, `1_Pooling/config.json` and `2_Normalize/` when the vectors are unit length.
Writing follows what sentence-transformers 6.2 `save` writes (its module type names and its pooling keys);
`sentence_bert_config.json` also names max_seq_length and do_lower_case, which 6.x reads as arguments of its
Transformer and which make the length explicit whatever the tokenizer says. Reading accepts that layout and
the one v2-v5 wrote (models.Transformer, `pooling_mode_mean_tokens`, ...), which is what the Hub mostly holds.

Only what bert_jax's sentence encoder computes is accepted: one transformer, mean / CLS / max pooling, and
an optional Normalize. Anything else (Dense, weighted-mean or last-token pooling, several transformers,
a default prompt, truncate_dim) is refused in one line rather than imported into a model that embeds
differently. Tensor names come from `names.py` / `distilbert_names.py` (encoder rows only, without the
base-model prefix: a *Model saves its keys bare). Our sentence encoder has no pooler (sentence-transformers never
uses one): the export asks transformers for none (add_pooling_layer=False), and an imported one is listed unused.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
from flax import nnx

from bert_jax.config import InputError
from bert_jax.hf import distilbert_names, task_names
from bert_jax.hf import files as hf_files
from bert_jax.hf import names as hf_names
from bert_jax.model import encoder, task_heads
from bert_jax.runtime import atomic

MODULES = "modules.json"
TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
POOLING = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"
_KIND_OF_CLASS = {"Transformer": "transformer", "Pooling": "pooling", "Normalize": "normalize"}
# Legacy pooling keys (v2-v5) and the mode each turns on, in sentence-transformers' concatenation order.
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
POOLINGS = ("mean", "cls", "max")  # bert_jax's (model/pooling.py), with sentence-transformers' names
_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "distilbert": "DistilBert"}


class Directory(NamedTuple):
    """What `read_directory` found: the transformer's directory and the settings our encoder takes."""
    transformer_dir: str
    pooling: str
    normalize: bool
    max_seq_length: int | None  # None: the tokenizer's model_max_length (capped by the positions) decides
    do_lower_case: bool
    notes: list


def is_directory(path: str) -> bool:
    """Is `path` a sentence-transformers directory (it has modules.json)?"""
    return os.path.isfile(os.path.join(path, MODULES))


# ---------------------------------------------------------------------------------------------- writing


def model_type(config) -> str:
    """bert | roberta | albert | distilbert: the transformers family of the encoder (`task_names` rules; a
    model without a segment table is a DistilBertModel, which has no head to disagree with ours)."""
    if encoder.BertConfig.from_config(config.model).type_vocab_size == 0:
        return distilbert_names.MODEL_TYPE
    return task_names.task_model_type(config)


def _encoder_rows(kind: str, m: encoder.BertConfig) -> list[hf_names.Row]:
    """The embeddings and layers of a transformers `kind` model, named with its base-model prefix."""
    if kind == distilbert_names.MODEL_TYPE:
        return [row for row in distilbert_names.name_table(m) if row.part == "encoder"]
    return hf_names.tensor_rows(hf_names.encoder_modules(kind, m))


def _shapes(m: encoder.BertConfig) -> dict:
    """Our sentence encoder's parameter shapes (no allocation)."""
    abstract = nnx.eval_shape(lambda: task_heads.BertForSentenceEmbedding(m, 0, rngs=nnx.Rngs(0)))
    return nnx.to_pure_dict(nnx.state(abstract, nnx.Param))


def model_state_and_config(params: dict, config, *, pad_token_id: int, bos_token_id: int | None,
                           eos_token_id: int | None, max_seq_length: int) -> tuple[dict, dict]:
    """(state dict, config.json) of the encoder as transformers' *Model (BertModel, RobertaModel, ...): bare
    keys as *Model.save_pretrained writes them, no pooler."""
    kind = model_type(config)
    m = encoder.BertConfig.from_config(config.model)
    if kind == "roberta":
        hf_names.check_roberta_positions(m, max_seq_length, pad_token_id)
    tensors = hf_names.params_to_tensors(_encoder_rows(kind, m), params, _shapes(m), m, pad_token_id=pad_token_id)
    prefix = kind + "."
    state_dict = {name[len(prefix):]: value for name, value in tensors.items()}
    if kind == distilbert_names.MODEL_TYPE:
        hf_config = distilbert_names.config_dict(config, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                                                 eos_token_id=eos_token_id)
    else:
        hf_config = hf_names.encoder_config_dict(m, kind, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                                                 eos_token_id=eos_token_id)
    hf_config["architectures"] = [_CLASS_PREFIX[kind] + "Model"]
    return state_dict, {"architectures": hf_config.pop("architectures"), **hf_config}


def module_files(*, hidden_size: int, pooling: str, normalize: bool, max_seq_length: int,
                 pooler: bool = True) -> dict[str, dict | list]:
    """{relative path: JSON content} of the module files (sentence-transformers 6.2's layout).

    `pooler`: the transformers class has a pooler (all but DistilBertModel). Ours has none, so the Transformer
    module builds it with add_pooling_layer=False (its model_kwargs), rather than transformers initialising
    one at random and reporting it MISSING ("consider training") on every load.
    """
    if pooling not in POOLINGS:
        raise InputError(f"pooling {pooling!r} is not one of {POOLINGS}.")
    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING}]
    files = {
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings", "max_seq_length": max_seq_length, "do_lower_case": False,
            **({"model_kwargs": {"add_pooling_layer": False}} if pooler else {})},
        "1_Pooling/config.json": {"embedding_dimension": hidden_size, "pooling_mode": pooling, "include_prompt": True},
        "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "prompts": {"query": "", "document": ""},
                                              "default_prompt_name": None, "similarity_fn_name": "cosine"},
    }
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE})
        files["2_Normalize/config.json"] = {"module_input_name": "sentence_embedding",
                                            "module_output_name": "sentence_embedding"}
    files[MODULES] = modules
    return files


def write_directory(output: str, params: dict, config, tokenizer, *, pooling: str, normalize: bool,
                    max_seq_length: int) -> str:
    """Writes the sentence encoder (`params`: bert/... of our task model) as a sentence-transformers directory,
    all of it or nothing (a hidden sibling renamed when complete); returns the transformers class name."""
    ids = tokenizer.special_ids
    state_dict, hf_config = model_state_and_config(params, config, pad_token_id=ids.pad, bos_token_id=ids.cls,
                                                   eos_token_id=ids.sep, max_seq_length=max_seq_length)
    files = module_files(hidden_size=config.model.hidden_size, pooling=pooling, normalize=normalize,
                         max_seq_length=max_seq_length, pooler=model_type(config) != distilbert_names.MODEL_TYPE)
    with atomic.directory(output) as partial:
        hf_files.write_hf_contents(partial, state_dict, hf_config, tokenizer, model_max_length=max_seq_length)
        for name, content in files.items():
            os.makedirs(os.path.dirname(os.path.join(partial, name)), exist_ok=True)
            atomic.write_json(os.path.join(partial, name), content, indent=2)
    return hf_config["architectures"][0]


# ---------------------------------------------------------------------------------------------- reading


def _json(path: str, default=None):
    if not os.path.isfile(path):
        if default is None:
            raise InputError(f"{path} is missing; the sentence-transformers directory is incomplete.")
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}).") from None


def _module_kind(entry, where: str) -> str:
    """transformer | pooling | normalize for sentence-transformers' own classes; anything else is refused."""
    type_name = str(entry.get("type", "")) if isinstance(entry, dict) else ""
    name = type_name.rsplit(".", 1)[-1]
    if type_name.startswith("sentence_transformers.") and name in _KIND_OF_CLASS:
        return _KIND_OF_CLASS[name]
    raise InputError(f"{where} has a {type_name or entry!r} module; bert_jax's sentence encoder is one Transformer, "
                     "a Pooling and an optional Normalize, so this model cannot be imported.")


def _pooling_mode(config: dict, where: str) -> str:
    """Our pooling of a 1_Pooling/config.json (6.x `pooling_mode`, or v2-v5's pooling_mode_* flags)."""
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in _LEGACY_POOLING.items() if config.get(key)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1:
        raise InputError(f"{where} concatenates several poolings ({', '.join(modes)}); bert_jax pools one way "
                         f"({', '.join(POOLINGS)}).")
    if modes[0] not in POOLINGS:
        raise InputError(f"{where} asks for {modes[0]!r} pooling; bert_jax pools by {', '.join(POOLINGS)} only.")
    return modes[0]


def read_directory(path: str) -> Directory:
    """The transformer directory and pooling / normalisation / length settings of a sentence-transformers
    directory, or an InputError in one line naming what bert_jax cannot represent."""
    where = os.path.join(path, MODULES)
    modules = _json(where)
    if not isinstance(modules, list) or not modules:
        raise InputError(f"{where} holds no list of modules.")
    kinds = [_module_kind(entry, where) for entry in modules]
    if kinds.count("transformer") != 1 or kinds[0] != "transformer":
        raise InputError(f"{where} has {kinds.count('transformer')} Transformer modules, not one at the start; "
                         "bert_jax's sentence encoder is a single transformer.")
    if kinds not in (["transformer", "pooling"], ["transformer", "pooling", "normalize"]):
        raise InputError(f"{where} chains {' -> '.join(kinds)}; bert_jax reads Transformer -> Pooling [-> Normalize].")
    transformer_dir = os.path.join(path, modules[0].get("path", ""))
    pooling_where = os.path.join(path, modules[1].get("path", ""), "config.json")
    pooling = _pooling_mode(_json(pooling_where), pooling_where)
    notes = []
    st_config = _json(os.path.join(path, "config_sentence_transformers.json"), {})
    if st_config.get("default_prompt_name"):
        raise InputError(f"{path} prepends the prompt {st_config['default_prompt_name']!r} to every text by default; "
                         "bert_jax's encoder embeds texts as given.")
    if st_config.get("truncate_dim"):
        raise InputError(f"{path} truncates embeddings to {st_config['truncate_dim']} dimensions (truncate_dim); "
                         "bert_jax's encoder outputs the full width.")
    prompts = {name: text for name, text in (st_config.get("prompts") or {}).items() if text}
    if prompts:
        notes.append(f"prompts {sorted(prompts)} are not applied: prepend them to the texts yourself")
    bert_config = _json(os.path.join(transformer_dir, "sentence_bert_config.json"), {})
    task = bert_config.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise InputError(f"{transformer_dir}/sentence_bert_config.json has transformer_task={task!r}; bert_jax "
                         "imports feature-extraction encoders.")
    processor = bert_config.get("processor_kwargs") or bert_config.get("tokenizer_args") or {}
    max_seq_length = processor.get("model_max_length") or bert_config.get("max_seq_length")
    return Directory(transformer_dir, pooling, len(kinds) == 3, int(max_seq_length) if max_seq_length else None,
                     bool(bert_config.get("do_lower_case", False)), notes)


def check_width(directory: Directory, path: str, hidden_size: int) -> None:
    """The pooling module's input width is the transformer's hidden size."""
    config = _json(os.path.join(path, "1_Pooling", "config.json"), {})
    width = config.get("embedding_dimension", config.get("word_embedding_dimension", hidden_size))
    if width != hidden_size:
        raise InputError(f"{path}/1_Pooling/config.json pools {width}-dimensional token vectors, but the transformer's "
                         f"hidden_size is {hidden_size}.")


def encoder_from_hf(tensors: dict[str, np.ndarray], hf_config: dict) -> hf_names.HFCheckpoint:
    """A transformers *Model (or *For... checkpoint) -> our config fields and the sentence encoder's params
    (bert/... only). Every encoder tensor must be there with its shape; others (the pooler) are listed as
    unused."""
    kind = hf_config["model_type"]
    if kind not in _CLASS_PREFIX:
        raise InputError(f"{kind} sentence encoders cannot be imported (bert, roberta, albert or distilbert only).")
    if kind == distilbert_names.MODEL_TYPE:
        overrides, objective = distilbert_names.model_overrides(hf_config), "mlm"
        canonical = {(kind + "." + k if k.startswith(("embeddings.", "transformer.")) else k): v
                     for k, v in tensors.items()}
    else:
        overrides = hf_names.model_overrides(hf_config, lm_head=False)
        objective = hf_names.OBJECTIVE_OF_TYPE[kind]
        canonical = hf_names.canonical_names(tensors, kind + ".")
    m = encoder.BertConfig(**overrides)
    hf_names.check_heads_divide(m)
    rows = _encoder_rows(kind, m)
    params, _ = hf_names.tensors_to_params(rows, canonical, _shapes(m), m, kind,
                                           pad_token_id=hf_config.get("pad_token_id", 1))
    return hf_names.HFCheckpoint({"model": overrides, "objective": objective}, params, [],
                                 hf_names.unused_tensors(rows, canonical, kind))
