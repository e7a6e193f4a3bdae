"""Hugging Face interop: our parameter tree <-> HF BERT / ALBERT / RoBERTa state dicts and config.json.

Pure array conversion (NumPy in, NumPy out): reading and writing safetensors files is the caller's job.
One name table per architecture, built by `_name_table`, serves both directions, so export and import
cannot drift apart. Which HF class a config maps to (`hf_architecture`):

  objective   no factorization/sharing      factorized and/or shared
  mlm_nsp     BertForPreTraining            (not representable: InputError)
  mlm_sop     AlbertForPreTraining          AlbertForPreTraining
  mlm         RobertaForMaskedLM            AlbertForMaskedLM
  mlm, type_vocab_size 0 (a DistilBERT student): DistilBertForMaskedLM (`distilbert_names.py`)
  mlm, a distillation student with a segment table (TinyBERT): BertForMaskedLM (its teacher's family and
    positions; TinyBERT's `fit_dense` is not part of it)
  mlm_sbo (SpanBERT)          BertForMaskedLM              AlbertForMaskedLM
    (the span-boundary head is used only in pretraining and has no HF counterpart: it is left out, as
    SpanBERT's own released checkpoints leave it out)
  any block other than BERT's (config.model's norm_placement, position_encoding, ... flags; `encoder_flags`):
    ModernBertForMaskedLM (`modernbert_names.py`), which refuses what ModernBERT cannot compute; every other
    class here has BERT's block, so `encoder_modules` refuses the rest

ALBERT always has `embedding_hidden_mapping_in` and layer groups: an unfactorized model is exported
with an identity mapping, an unshared one with one group per layer (HF applies group int(i / (L/G)),
so G = L is exactly one group per layer). Import maps both back (G == L -> num_hidden_groups 0).

RoBERTa positions: HF's RobertaEmbeddings numbers the non-pad tokens padding_idx+1, padding_idx+2, ...
(padding_idx = pad_token_id) and gives pad tokens row padding_idx; our model uses rows 0..S-1. Export
therefore shifts the table down by offset = pad_token_id + 1 (hf[offset:] = ours[:rows - offset], the
first `offset` rows zero) and import shifts it back (trailing `offset` rows zero). Outputs agree for
right-padded inputs with no pad id inside the text; positions >= rows - offset cannot be represented.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from flax import nnx

from bert_jax import encoder_flags
from bert_jax.config import InputError
from bert_jax.model import encoder, pretraining_heads

_BERT, _ALBERT, _ALBERT_MLM, _ROBERTA = ("BertForPreTraining", "AlbertForPreTraining", "AlbertForMaskedLM",
                                          "RobertaForMaskedLM")
_BERT_MLM, DISTILBERT, MODERNBERT = "BertForMaskedLM", "DistilBertForMaskedLM", "ModernBertForMaskedLM"
_MODEL_TYPE = {_BERT: "bert", _ALBERT: "albert", _ALBERT_MLM: "albert", _ROBERTA: "roberta", _BERT_MLM: "bert"}
_ARCHITECTURE_OF_TYPE = {"bert": _BERT, "albert": _ALBERT, "roberta": _ROBERTA}
OBJECTIVE_OF_TYPE = {"bert": "mlm_nsp", "albert": "mlm_sop", "roberta": "mlm"}
# The model_types an HF directory may have: ELECTRA's discriminator (+ generator) imports through
# `electra_names.from_hf_electra`, DistilBERT through `distilbert_names.from_hf_distilbert`, ModernBERT through
# `modernbert_names.from_hf_modernbert`, not through `from_hf_state_dict`.
MODEL_TYPES = ("bert", "albert", "roberta", "electra", "distilbert", "modernbert")
_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
_OUR_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_IGNORED = ("embeddings.position_ids",)  # a buffer some HF versions save; recomputed by HF, unused by us
_ENCODER = "encoder"  # part name of the embeddings and layers: the only part that may not be missing

# Per-layer tables: HF module name (relative to the layer) -> our path (relative to the layer).
_BERT_LAYER = [
    ("attention.self.query", ("attention", "query"), "dense"),
    ("attention.self.key", ("attention", "key"), "dense"),
    ("attention.self.value", ("attention", "value"), "dense"),
    ("attention.output.dense", ("attention", "output"), "dense"),
    ("attention.output.LayerNorm", ("attention_layer_norm",), "norm"),
    ("intermediate.dense", ("intermediate",), "dense"),
    ("output.dense", ("output",), "dense"),
    ("output.LayerNorm", ("output_layer_norm",), "norm"),
]
_ALBERT_LAYER = [
    ("attention.query", ("attention", "query"), "dense"),
    ("attention.key", ("attention", "key"), "dense"),
    ("attention.value", ("attention", "value"), "dense"),
    ("attention.dense", ("attention", "output"), "dense"),
    ("attention.LayerNorm", ("attention_layer_norm",), "norm"),
    ("ffn", ("intermediate",), "dense"),
    ("ffn_output", ("output",), "dense"),
    ("full_layer_layer_norm", ("output_layer_norm",), "norm"),
]
_WORD = ("bert", "embeddings", "word_embeddings", "embedding")
_MLM_BIAS = ("mlm_head", "bias")
# Heads: (part, HF module name, our path, kind). 'tied' tensors are not written (HF's save_pretrained
# leaves them out and re-ties on load) but are accepted on import if they equal what they are tied to.
_HEADS = {
    _BERT: [
        ("bert/pooler", "bert.pooler.dense", ("bert", "pooler", "dense"), "dense"),
        ("mlm_head", "cls.predictions.transform.dense", ("mlm_head", "dense"), "dense"),
        ("mlm_head", "cls.predictions.transform.LayerNorm", ("mlm_head", "layer_norm"), "norm"),
        ("mlm_head", "cls.predictions.bias", _MLM_BIAS, "param"),
        ("mlm_head", "cls.predictions.decoder.weight", _WORD, "tied"),
        ("mlm_head", "cls.predictions.decoder.bias", _MLM_BIAS, "tied"),
        ("pair_head", "cls.seq_relationship", ("pair_head", "dense"), "dense"),
    ],
    _ALBERT: [
        ("bert/pooler", "albert.pooler", ("bert", "pooler", "dense"), "dense"),
        ("mlm_head", "predictions.dense", ("mlm_head", "dense"), "dense"),
        ("mlm_head", "predictions.LayerNorm", ("mlm_head", "layer_norm"), "norm"),
        ("mlm_head", "predictions.bias", _MLM_BIAS, "param"),
        ("mlm_head", "predictions.decoder.weight", _WORD, "tied"),
        ("mlm_head", "predictions.decoder.bias", _MLM_BIAS, "tied"),
        ("pair_head", "sop_classifier.classifier", ("pair_head", "dense"), "dense"),
    ],
    _ROBERTA: [
        ("mlm_head", "lm_head.dense", ("mlm_head", "dense"), "dense"),
        ("mlm_head", "lm_head.layer_norm", ("mlm_head", "layer_norm"), "norm"),
        ("mlm_head", "lm_head.bias", _MLM_BIAS, "param"),
        ("mlm_head", "lm_head.decoder.weight", _WORD, "tied"),
        ("mlm_head", "lm_head.decoder.bias", _MLM_BIAS, "tied"),
    ],
}
_HEADS[_ALBERT_MLM] = [row for row in _HEADS[_ALBERT] if row[0] == "mlm_head"]
_HEADS[_BERT_MLM] = [row for row in _HEADS[_BERT] if row[0] == "mlm_head"]


class Row(NamedTuple):
    """One HF tensor: its name, our parameter path (None: a constant), how it converts, its part."""
    hf_name: str
    path: tuple | None
    op: str  # copy | transpose | positions | tied | identity | zeros
    part: str


class HFCheckpoint(NamedTuple):
    """What `from_hf_state_dict` read.

    config_overrides: {"model": {...}, "objective": str}, for `config.update(...)`.
    params: pure parameter dict; the subtrees named in `missing_heads` are absent.
    missing_heads: our subtrees ('bert/pooler', 'mlm_head', 'pair_head') the checkpoint lacks, to be
      initialised fresh (see `with_fresh_heads`).
    unexpected_keys: HF tensors that were not used (another task's head, cross-attention, ...).
    """
    config_overrides: dict
    params: dict
    missing_heads: list
    unexpected_keys: list


def check_no_language_table(m: encoder.BertConfig) -> None:
    """transformers' BERT-family classes have no language embeddings (XLM's, `num_languages` > 0): refused,
    rather than written without the table and so computing another function."""
    if m.num_languages:
        raise InputError(f"this model has XLM's language embeddings (config.model.num_languages={m.num_languages}), "
                         "which no transformers BERT, ALBERT or RoBERTa class has; use it within bert_jax "
                         "(finetune, predict, embed), or pretrain with num_languages=0 to export.")


def hf_architecture(config) -> str:
    """The HF class that represents `config.model` + `config.objective` exactly (see the module table)."""
    model_config = encoder.BertConfig.from_config(config.model)
    check_no_language_table(model_config)
    if not encoder_flags.is_bert_block(model_config):
        return MODERNBERT
    albert_shaped = model_config.factorized or model_config.num_hidden_groups > 0
    objective = config.objective
    if objective == "mlm_sop":
        return _ALBERT
    if objective == "mlm_nsp":
        if albert_shaped:
            raise InputError(
                f"HF's BertForPreTraining has neither factorized embeddings nor shared layers "
                f"(config.model.embedding_size={model_config.embedding_size}, config.model.num_hidden_groups="
                f"{model_config.num_hidden_groups}), and ALBERT's head is SOP, not NSP "
                f"(config.objective='mlm_nsp'); train with objective 'mlm_sop' to export as ALBERT.")
        return _BERT
    if objective == "mlm_sbo":
        if model_config.type_vocab_size == 0:
            raise InputError("config.model.type_vocab_size=0 (no segment table) cannot be exported as HF's "
                             "BertForMaskedLM, which always has one; train SpanBERT models with type_vocab_size >= 1.")
        return _ALBERT_MLM if albert_shaped else _BERT_MLM
    if objective == "mlm" and model_config.type_vocab_size == 0:
        return DISTILBERT
    if objective == "mlm":
        distilled = bool(config.get("distill", {}).get("recipe", "")) if hasattr(config, "get") else False
        if distilled and not albert_shaped:
            return _BERT_MLM
        if albert_shaped:
            return _ALBERT_MLM
        if model_config.hidden_act != "gelu":
            raise InputError(
                f"HF's RobertaForMaskedLM applies exact GELU in its LM head whatever hidden_act says, so "
                f"config.model.hidden_act={model_config.hidden_act!r} with config.objective='mlm' cannot be "
                f"exported; use hidden_act 'gelu' for RoBERTa-style models.")
        return _ROBERTA
    raise InputError(f"config.objective={objective!r} is not one of ('mlm_nsp', 'mlm_sop', 'mlm', 'mlm_sbo').")


def hf_config_dict(config, *, pad_token_id: int, bos_token_id: int | None = None,
                   eos_token_id: int | None = None) -> dict:
    """The HF config.json content for `hf_architecture(config)`.

    Special-token ids are written even when None, so that HF's class defaults (ALBERT's 2/3,
    RoBERTa's 0/2) never stand in for our tokenizer's ids.
    """
    architecture = hf_architecture(config)
    m = encoder.BertConfig.from_config(config.model)
    return {"architectures": [architecture], **encoder_config_dict(
        m, _MODEL_TYPE[architecture], pad_token_id=pad_token_id, bos_token_id=bos_token_id,
        eos_token_id=eos_token_id)}


def encoder_config_dict(m: encoder.BertConfig, model_type: str, *, pad_token_id: int, bos_token_id: int | None,
                        eos_token_id: int | None) -> dict:
    """The encoder's fields of an HF config.json of `model_type` (bert | albert | roberta)."""
    check_no_language_table(m)
    result = {
        "model_type": model_type,
        "vocab_size": m.vocab_size, "hidden_size": m.hidden_size, "num_hidden_layers": m.num_hidden_layers,
        "num_attention_heads": m.num_attention_heads, "intermediate_size": m.intermediate_size,
        "hidden_act": _HF_ACT[m.hidden_act], "max_position_embeddings": m.max_position_embeddings,
        "type_vocab_size": m.type_vocab_size, "hidden_dropout_prob": m.hidden_dropout_prob,
        "attention_probs_dropout_prob": m.attention_probs_dropout_prob,
        "initializer_range": m.initializer_range, "layer_norm_eps": m.layer_norm_eps,
        "pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
        "tie_word_embeddings": True,
    }
    if model_type == "albert":
        result.update(embedding_size=m.embedding_width,
                      num_hidden_groups=m.num_hidden_groups or m.num_hidden_layers, inner_group_num=1)
    return result


def _name_table(architecture: str, m: encoder.BertConfig) -> list[Row]:
    """Every HF tensor of `architecture` for our model config `m`, with its our-side path and conversion."""
    return tensor_rows(encoder_modules(_MODEL_TYPE[architecture], m) + _HEADS[architecture])


def check_bert_block(m: encoder.BertConfig, model_type: str) -> None:
    """Refuses a block other than BERT's: every `model_type` here (bert, albert, roberta, electra) is post-LN
    with learned positions, so it would load such weights and compute another function."""
    differing = {name: getattr(m, name) for name, value in encoder_flags.BLOCK_DEFAULTS.items()
                 if getattr(m, name) != value}
    if differing:
        raise InputError(f"config.model has {differing}, a block transformers' {model_type} classes do not have; "
                         "only MLM pretraining models of ModernBERT's block export to transformers "
                         "(ModernBertForMaskedLM); use this model within bert_jax.")


def encoder_modules(model_type: str, m: encoder.BertConfig) -> list[tuple]:
    """(part, HF module name, our path, kind) of the embeddings and layers of an HF `model_type` model."""
    check_bert_block(m, model_type)
    prefix = model_type + "."
    modules = [
        (_ENCODER, "embeddings.word_embeddings", ("bert", "embeddings", "word_embeddings"), "embed"),
        (_ENCODER, "embeddings.position_embeddings", ("bert", "embeddings", "position_embeddings"),
         "positions" if model_type == "roberta" else "embed"),
        (_ENCODER, "embeddings.token_type_embeddings", ("bert", "embeddings", "token_type_embeddings"), "embed"),
        (_ENCODER, "embeddings.LayerNorm", ("bert", "embeddings", "layer_norm"), "norm"),
    ]
    if m.num_hidden_groups:
        ours = [("bert", "layer_groups", g, "layer") for g in range(m.num_hidden_groups)]
    else:
        ours = [("bert", "layers", i) for i in range(m.num_hidden_layers)]
    if model_type == "albert":
        modules.append((_ENCODER, "encoder.embedding_hidden_mapping_in", ("bert", "embeddings", "projection"),
                        "dense" if m.factorized else "identity"))
        layer_table, layer_name = _ALBERT_LAYER, "encoder.albert_layer_groups.{}.albert_layers.0."
    else:
        layer_table, layer_name = _BERT_LAYER, "encoder.layer.{}."
    for slot, layer_path in enumerate(ours):
        modules += [(_ENCODER, layer_name.format(slot) + name, layer_path + path, kind)
                    for name, path, kind in layer_table]
    return [(part, prefix + name, path, kind) for part, name, path, kind in modules]


def tensor_rows(modules: list[tuple]) -> list[Row]:
    """The tensors of (part, HF module name, our path, kind) modules: a dense layer has a weight and a bias, ..."""
    result = []
    for part, name, path, kind in modules:
        if kind == "dense":
            result += [Row(name + ".weight", path + ("kernel",), "transpose", part),
                       Row(name + ".bias", path + ("bias",), "copy", part)]
        elif kind == "norm":
            result += [Row(name + ".weight", path + ("scale",), "copy", part),
                       Row(name + ".bias", path + ("bias",), "copy", part)]
        elif kind in ("embed", "positions"):
            result.append(Row(name + ".weight", path + ("embedding",), "copy" if kind == "embed" else kind, part))
        elif kind == "identity":
            result += [Row(name + ".weight", None, "identity", part), Row(name + ".bias", None, "zeros", part)]
        else:  # param, tied: the name is already the tensor's
            result.append(Row(name, path, "copy" if kind == "param" else kind, part))
    return result


def _expected_shapes(m: encoder.BertConfig, objective: str) -> dict:
    """Our parameter shapes for (m, objective), from the model itself (no allocation)."""
    abstract = nnx.eval_shape(lambda: pretraining_heads.BertForPreTraining(m, objective=objective, rngs=nnx.Rngs(0)))
    return nnx.to_pure_dict(nnx.state(abstract, nnx.Param))


def _get(tree: dict, path: tuple):
    """tree[path], accepting str keys for list indices too (restored checkpoints may stringify them)."""
    for key in path:
        tree = tree[key] if key in tree else tree[str(key)]
    return tree


def _set(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _hf_shape(row: Row, shapes: dict, hidden_size: int) -> tuple:
    """The shape HF stores for `row`: torch Linear weights are [out, in], our kernels [in, out]."""
    if row.op == "identity":
        return (hidden_size, hidden_size)
    if row.op == "zeros":
        return (hidden_size,)
    shape = tuple(_get(shapes, row.path).shape)
    return shape[::-1] if row.op == "transpose" else shape


def to_hf_state_dict(params: dict, config, *, pad_token_id: int) -> dict[str, np.ndarray]:
    """Our pure params -> {HF tensor name: float32 array} for `hf_architecture(config)`.

    `pad_token_id` must be the one written to config.json: RoBERTa's position table is shifted by it.
    """
    architecture = hf_architecture(config)
    m = encoder.BertConfig.from_config(config.model)
    if architecture == _ROBERTA:
        data = config.get("data") if hasattr(config, "get") else None
        if data is not None:
            check_roberta_positions(m, data.max_seq_length, pad_token_id)
    return params_to_tensors(_name_table(architecture, m), params, _expected_shapes(m, config.objective), m,
                             pad_token_id=pad_token_id)


def check_roberta_positions(m: encoder.BertConfig, max_seq_length: int, pad_token_id: int) -> None:
    """HF RoBERTa's positions start at pad_token_id + 1: refuses a model whose sequences would not fit."""
    offset = pad_token_id + 1
    if max_seq_length > m.max_position_embeddings - offset:
        raise InputError(
            f"HF RoBERTa numbers positions from pad_token_id + 1 = {offset}, so only "
            f"{m.max_position_embeddings - offset} of config.model.max_position_embeddings="
            f"{m.max_position_embeddings} positions fit, but the model's max_seq_length is "
            f"{max_seq_length}; train with max_position_embeddings >= max_seq_length + {offset}.")


def params_to_tensors(table: list[Row], params: dict, shapes: dict, m: encoder.BertConfig, *,
                      pad_token_id: int) -> dict[str, np.ndarray]:
    """{HF name: float32 array} of every row of `table` but the tied ones; each of our arrays is checked
    against `shapes` (the model's own parameter shapes for `m`)."""
    offset = pad_token_id + 1
    state_dict = {}
    for row in table:
        if row.op == "tied":
            continue
        if row.op in ("identity", "zeros"):
            value = np.eye(m.hidden_size) if row.op == "identity" else np.zeros(m.hidden_size)
        else:
            value = np.asarray(_get(params, row.path), np.float32)
            expected = tuple(_get(shapes, row.path).shape)
            if value.shape != expected:
                raise InputError(f"params {'/'.join(map(str, row.path))} has shape {value.shape}, but "
                                 f"config.model implies {expected}; export with the config it was trained with.")
        if row.op == "transpose":
            value = value.T
        elif row.op == "positions":
            shifted = np.zeros_like(value)
            shifted[offset:] = value[:value.shape[0] - offset]
            value = shifted
        state_dict[row.hf_name] = np.ascontiguousarray(value, np.float32)
    return state_dict


def check_model_type(hf_config: dict, where: str = "config.json") -> str:
    """The model_type of an HF config.json (read from `where`), refused unless it is a BERT-family encoder."""
    model_type = hf_config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise InputError(f"{where} has model_type={model_type!r}, not one of {MODEL_TYPES}: only BERT-family "
                         "encoders can be imported; give a bert, roberta, albert, "
                         "electra, distilbert or modernbert model directory.")
    return model_type


def model_overrides(hf_config: dict, *, lm_head: bool = True) -> dict:
    """config.model fields from an HF config.json; absent optional fields take HF's class defaults.

    `lm_head`: the checkpoint's RoBERTa LM head will be used (it needs hidden_act 'gelu'); task models
    have none.
    """
    model_type = check_model_type(hf_config)
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in hf_config]
    if missing:
        raise InputError(f"config.json lacks {missing}; it does not describe a {model_type} model.")
    albert, electra = model_type == "albert", model_type == "electra"
    get = lambda name, default: hf_config.get(name, default)
    if get("position_embedding_type", "absolute") != "absolute":
        raise InputError(f"config.json position_embedding_type={hf_config['position_embedding_type']!r}: "
                         "bert_jax has only absolute (learned) position embeddings.")
    act = get("hidden_act", "gelu_new" if albert else "gelu")
    if act not in _OUR_ACT:
        raise InputError(f"config.json hidden_act={act!r} is not one of {tuple(_OUR_ACT)}.")
    if model_type == "roberta" and act != "gelu" and lm_head:
        raise InputError(f"config.json hidden_act={act!r}: RoBERTa's LM head uses exact GELU regardless, "
                         "which bert_jax's head (it follows hidden_act) cannot reproduce.")
    overrides = {name: hf_config[name] for name in
                 ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}
    overrides.update(
        hidden_act=_OUR_ACT[act], max_position_embeddings=get("max_position_embeddings", 512),
        type_vocab_size=get("type_vocab_size", 2),
        hidden_dropout_prob=get("hidden_dropout_prob", 0.0 if albert else 0.1),
        attention_probs_dropout_prob=get("attention_probs_dropout_prob", 0.0 if albert else 0.1),
        initializer_range=get("initializer_range", 0.02), layer_norm_eps=get("layer_norm_eps", 1e-12),
        embedding_size=0, num_hidden_groups=0)
    if albert:
        layers, groups = overrides["num_hidden_layers"], get("num_hidden_groups", 1)
        if get("inner_group_num", 1) != 1 or layers % groups:
            raise InputError(
                f"config.json inner_group_num={get('inner_group_num', 1)}, num_hidden_groups={groups}, "
                f"num_hidden_layers={layers}: bert_jax needs inner_group_num 1 and groups dividing layers.")
        embedding_size = get("embedding_size", 128)
        overrides["embedding_size"] = 0 if embedding_size == overrides["hidden_size"] else embedding_size
        overrides["num_hidden_groups"] = 0 if groups == layers else groups
    if electra:  # ElectraConfig's default embedding_size is 128; a learned embeddings_project when it differs
        embedding_size = get("embedding_size", 128)
        overrides["embedding_size"] = 0 if embedding_size == overrides["hidden_size"] else embedding_size
    return overrides


def canonical_names(state_dict: dict, prefix: str) -> dict:
    """Keys as HF's *ForPreTraining/*ForMaskedLM save them: old LayerNorm gamma/beta renamed, and the
    base-model prefix added to a bare encoder's keys (BertModel checkpoints such as sentence-transformers')."""
    result = {}
    for key, value in state_dict.items():
        name = key[:-len(".gamma")] + ".weight" if key.endswith(".gamma") else key
        name = name[:-len(".beta")] + ".bias" if name.endswith(".beta") else name
        if name.startswith(("embeddings.", "encoder.", "pooler.")):
            name = prefix + name
        if name in result:
            raise InputError(f"the state dict has {key!r} twice (with and without the {prefix!r} prefix).")
        result[name] = value
    return result


def from_hf_state_dict(state_dict: dict[str, np.ndarray], hf_config: dict) -> HFCheckpoint:
    """An HF BERT/ALBERT/RoBERTa checkpoint (base model or with heads) -> our config fields and params.

    Every expected tensor's shape is checked; missing encoder tensors are an error, missing heads are
    reported (`missing_heads`), unused tensors listed (`unexpected_keys`), never silently dropped.
    """
    overrides = model_overrides(hf_config)
    model_type = hf_config["model_type"]
    if model_type not in _ARCHITECTURE_OF_TYPE:
        raise InputError(f"model_type={model_type!r} imports through its own module (electra_names.from_hf_electra).")
    objective = OBJECTIVE_OF_TYPE[model_type]
    architecture = _ARCHITECTURE_OF_TYPE[model_type]
    m = encoder.BertConfig(**overrides)
    check_heads_divide(m)
    tensors = canonical_names(state_dict, model_type + ".")
    table = _name_table(architecture, m)
    params, missing_heads = tensors_to_params(table, tensors, _expected_shapes(m, objective), m, model_type,
                                              pad_token_id=hf_config.get("pad_token_id", 1))
    check_tied(table, tensors, params, missing_heads)
    return HFCheckpoint({"model": overrides, "objective": objective}, params, missing_heads,
                        unused_tensors(table, tensors, model_type))


def check_tied(table: list[Row], tensors: dict, params: dict, missing_heads: list) -> None:
    """Tied copies present in `tensors` must equal what they are tied to: our head cannot untie them."""
    for row in table:
        if (row.op == "tied" and row.hf_name in tensors and row.part not in missing_heads
                and not np.array_equal(np.asarray(tensors[row.hf_name], np.float32), _get(params, row.path))):
            raise InputError(f"{row.hf_name} differs from {'/'.join(row.path)}: the output projection "
                             "is not tied, which bert_jax's MLM head cannot represent.")


def check_heads_divide(m: encoder.BertConfig) -> None:
    if m.hidden_size % m.num_attention_heads:
        raise InputError(f"config.json hidden_size={m.hidden_size} is not divisible by "
                         f"num_attention_heads={m.num_attention_heads}.")


def unused_tensors(table: list[Row], tensors: dict, model_type: str) -> list[str]:
    """The HF tensors no row of `table` reads (buffers HF recomputes aside), sorted."""
    known = {row.hf_name for row in table} | {model_type + "." + name for name in _IGNORED}
    return sorted(name for name in tensors if name not in known)


def tensors_to_params(table: list[Row], tensors: dict, shapes: dict, m: encoder.BertConfig, model_type: str, *,
                      pad_token_id: int) -> tuple[dict, list[str]]:
    """(our pure params, parts absent from `tensors`) from HF `tensors` named as in `table`.

    Every present tensor's shape is checked against `shapes`; a missing encoder tensor, or a part present
    only in part, is an error. Tied tensors are not read (the caller checks them).
    """
    mismatched, missing = [], {}
    for row in table:
        if row.hf_name not in tensors:
            missing.setdefault(row.part, []).append(row.hf_name)
            continue
        got, want = tuple(np.shape(tensors[row.hf_name])), _hf_shape(row, shapes, m.hidden_size)
        if got != want:
            mismatched.append(f"{row.hf_name} has shape {got}, expected {want}")
    if mismatched:
        raise InputError(f"checkpoint does not match its config.json ({len(mismatched)} tensors): "
                         + "; ".join(mismatched[:8]))
    if _ENCODER in missing:
        names = missing[_ENCODER]
        known = {row.hf_name for row in table}
        unknown = [name for name in tensors if name not in known]
        found = f" (present but unknown: {unknown[:5]})" if unknown else ""
        raise InputError(f"checkpoint lacks {len(names)} encoder tensors, e.g. {names[:5]}{found}; it is "
                         f"incomplete or not a {model_type} model: re-download or re-save it with transformers' "
                         "save_pretrained, or rename the tensors to the names above.")
    missing_parts = []
    for part in dict.fromkeys(row.part for row in table if row.part != _ENCODER):
        required = [r.hf_name for r in table if r.part == part and r.op != "tied"]
        absent = [name for name in missing.get(part, []) if name in required]
        if len(absent) == len(required):
            missing_parts.append(part)
        elif absent:
            raise InputError(f"checkpoint has part of the {part} head but lacks {absent}.")

    params, offset = {}, pad_token_id + 1
    for row in table:
        if row.part in missing_parts or row.op == "tied" or row.hf_name not in tensors:
            continue
        value = np.asarray(tensors[row.hf_name], np.float32)
        if row.op in ("identity", "zeros"):
            constant = np.eye(m.hidden_size) if row.op == "identity" else np.zeros(m.hidden_size)
            if not np.array_equal(value, constant):
                raise InputError(
                    f"{row.hf_name} is a learned mapping, but embedding_size == hidden_size "
                    f"({m.hidden_size}): bert_jax projects embeddings only when they are narrower.")
            continue
        if row.op == "transpose":
            value = value.T
        elif row.op == "positions":
            shifted = np.zeros_like(value)
            shifted[:value.shape[0] - offset] = value[offset:]
            value = shifted
        _set(params, row.path, np.ascontiguousarray(value))
    return params, missing_parts


def with_fresh_heads(params: dict, fresh_params: dict) -> dict:
    """`params` with every subtree it lacks (the missing heads) taken from `fresh_params`."""
    merged = dict(fresh_params)
    for key, value in params.items():
        merged[key] = with_fresh_heads(value, fresh_params[key]) if isinstance(value, dict) else value
    return merged
