"""DistilBERT students as transformers' `DistilBertForMaskedLM`, and back (`from_hf_distilbert`).

A DistilBERT student here is a BertForPreTraining with objective 'mlm' and `type_vocab_size` 0: word and
position tables, post-LN layers, the tied MLM head, no segment table and no pooler. That is exactly HF's
DistilBertForMaskedLM (modeling_distilbert.py) under other names: q_lin/k_lin/v_lin/out_lin for the
attention, sa_layer_norm, ffn.lin1/lin2, output_layer_norm; vocab_transform + activation + vocab_layer_norm
for our head's dense + LayerNorm, and vocab_projector, whose weight is tied to the word embeddings and whose
bias is our head's. It has its own module (like `electra_names.py`) because its config.json speaks another
language (dim, n_layers, n_heads, hidden_dim, activation) and because HF hard-codes what we keep
configurable: every LayerNorm's epsilon is 1e-12 and the head's activation is `activation`.
"""

from __future__ import annotations

import numpy as np

from bert_jax.config import InputError
from bert_jax.hf import names as hf_names
from bert_jax.model import encoder

DISTILBERT = "DistilBertForMaskedLM"
MODEL_TYPE = "distilbert"
_EPS = 1e-12  # modeling_distilbert.py: nn.LayerNorm(..., eps=1e-12) everywhere, not read from the config
_ENCODER = "encoder"
_LAYER = [
    ("attention.q_lin", ("attention", "query"), "dense"),
    ("attention.k_lin", ("attention", "key"), "dense"),
    ("attention.v_lin", ("attention", "value"), "dense"),
    ("attention.out_lin", ("attention", "output"), "dense"),
    ("sa_layer_norm", ("attention_layer_norm",), "norm"),
    ("ffn.lin1", ("intermediate",), "dense"),
    ("ffn.lin2", ("output",), "dense"),
    ("output_layer_norm", ("output_layer_norm",), "norm"),
]
_HEAD = [
    ("mlm_head", "vocab_transform", ("mlm_head", "dense"), "dense"),
    ("mlm_head", "vocab_layer_norm", ("mlm_head", "layer_norm"), "norm"),
    ("mlm_head", "vocab_projector.bias", ("mlm_head", "bias"), "param"),
    ("mlm_head", "vocab_projector.weight", ("bert", "embeddings", "word_embeddings", "embedding"), "tied"),
]


def name_table(m: encoder.BertConfig) -> list[hf_names.Row]:
    """Every tensor of an HF DistilBertForMaskedLM of shape `m`, with our path and conversion."""
    prefix = MODEL_TYPE + "."
    modules = [
        (_ENCODER, prefix + "embeddings.word_embeddings", ("bert", "embeddings", "word_embeddings"), "embed"),
        (_ENCODER, prefix + "embeddings.position_embeddings", ("bert", "embeddings", "position_embeddings"), "embed"),
        (_ENCODER, prefix + "embeddings.LayerNorm", ("bert", "embeddings", "layer_norm"), "norm"),
    ]
    for i in range(m.num_hidden_layers):
        modules += [(_ENCODER, f"{prefix}transformer.layer.{i}.{name}", ("bert", "layers", i) + path, kind)
                    for name, path, kind in _LAYER]
    return hf_names.tensor_rows(modules + _HEAD)


def check_representable(m: encoder.BertConfig) -> None:
    """Refuses a model DistilBertForMaskedLM cannot compute exactly."""
    if m.type_vocab_size:
        raise InputError(f"DistilBERT has no segment table, but config.model.type_vocab_size={m.type_vocab_size}.")
    if m.factorized or m.num_hidden_groups:
        raise InputError(f"DistilBERT has neither factorized embeddings nor shared layers (config.model.embedding_size"
                         f"={m.embedding_size}, num_hidden_groups={m.num_hidden_groups}); a model without a segment "
                         "table cannot be exported as ALBERT either.")
    if m.layer_norm_eps != _EPS:
        raise InputError(f"HF's DistilBERT fixes every LayerNorm epsilon at 1e-12, but config.model.layer_norm_eps="
                         f"{m.layer_norm_eps} (a student of a RoBERTa teacher?); this model cannot be exported as "
                         "DistilBertForMaskedLM.")
    if m.hidden_act not in hf_names._HF_ACT:
        raise InputError(f"config.model.hidden_act={m.hidden_act!r} has no HF DistilBERT activation.")


def to_state_dict(params: dict, config, *, pad_token_id: int) -> dict[str, np.ndarray]:
    """Our pure params (objective 'mlm', type_vocab_size 0) -> {DistilBertForMaskedLM tensor: float32 array}."""
    m = encoder.BertConfig.from_config(config.model)
    check_representable(m)
    return hf_names.params_to_tensors(name_table(m), params, hf_names._expected_shapes(m, "mlm"), m,
                                      pad_token_id=pad_token_id)


def config_dict(config, *, pad_token_id: int, bos_token_id: int | None = None,
                eos_token_id: int | None = None) -> dict:
    """config.json of the DistilBertForMaskedLM (DistilBertConfig's own field names)."""
    m = encoder.BertConfig.from_config(config.model)
    check_representable(m)
    return {"architectures": [DISTILBERT], "model_type": MODEL_TYPE, "vocab_size": m.vocab_size, "dim": m.hidden_size,
            "n_layers": m.num_hidden_layers, "n_heads": m.num_attention_heads, "hidden_dim": m.intermediate_size,
            "activation": hf_names._HF_ACT[m.hidden_act], "max_position_embeddings": m.max_position_embeddings,
            "sinusoidal_pos_embds": False, "dropout": m.hidden_dropout_prob,
            "attention_dropout": m.attention_probs_dropout_prob, "initializer_range": m.initializer_range,
            "pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
            "tie_word_embeddings": True}


def model_overrides(hf_config: dict) -> dict:
    """config.model fields of an HF DistilBertConfig (absent fields take its defaults)."""
    get = hf_config.get
    activation = get("activation", "gelu")
    if activation not in hf_names._OUR_ACT:
        raise InputError(f"config.json activation={activation!r} is not one of {tuple(hf_names._OUR_ACT)}.")
    dim = get("dim", 768)
    return {"vocab_size": get("vocab_size", 30522), "hidden_size": dim, "num_hidden_layers": get("n_layers", 6),
            "num_attention_heads": get("n_heads", 12), "intermediate_size": get("hidden_dim", 4 * dim),
            "hidden_act": hf_names._OUR_ACT[activation], "max_position_embeddings": get("max_position_embeddings", 512),
            "type_vocab_size": 0, "hidden_dropout_prob": get("dropout", 0.1),
            "attention_probs_dropout_prob": get("attention_dropout", 0.1),
            "initializer_range": get("initializer_range", 0.02), "layer_norm_eps": _EPS,
            "embedding_size": 0, "num_hidden_groups": 0}


def _canonical(state_dict: dict) -> dict:
    """Keys as DistilBertForMaskedLM saves them: a bare DistilBertModel's gain the `distilbert.` prefix."""
    return {(MODEL_TYPE + "." + k if k.startswith(("embeddings.", "transformer.")) else k): v
            for k, v in state_dict.items()}


def from_hf_distilbert(state_dict: dict[str, np.ndarray], hf_config: dict) -> hf_names.HFCheckpoint:
    """An HF DistilBertForMaskedLM (or bare DistilBertModel: a fresh MLM head) -> our config fields
    (objective 'mlm', type_vocab_size 0) and params. Sinusoidal position tables import as learned ones: the
    table is in the checkpoint, and the outputs are the same."""
    overrides = model_overrides(hf_config)
    m = encoder.BertConfig(**overrides)
    hf_names.check_heads_divide(m)
    tensors = _canonical(state_dict)
    table = name_table(m)
    params, missing_heads = hf_names.tensors_to_params(table, tensors, hf_names._expected_shapes(m, "mlm"), m,
                                                       MODEL_TYPE, pad_token_id=hf_config.get("pad_token_id", 0))
    hf_names.check_tied(table, tensors, params, missing_heads)
    return hf_names.HFCheckpoint({"model": overrides, "objective": "mlm"}, params, missing_heads,
                                 hf_names.unused_tensors(table, tensors, MODEL_TYPE))
