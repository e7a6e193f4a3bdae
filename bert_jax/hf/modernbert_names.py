"""ModernBERT models as transformers' `ModernBertForMaskedLM`, and back (`from_hf_modernbert`).

A ModernBERT here is a BertForPreTraining with objective 'mlm' and the modern block flags of config.model:
pre-norm LayerNorm layers, the embedding norm standing in for layer 0's attention norm (HF's nn.Identity),
a final norm, GeGLU (or SwiGLU), rotary positions with a global and a local base, local attention in all
but every n-th layer, no segment table, biases everywhere or nowhere, and the tied MLM head. HF's names
(modeling_modernbert.py):

  model.embeddings.tok_embeddings / .norm     bert/embeddings/word_embeddings, layer_norm
  model.layers.{i}.attn_norm (i > 0)          bert/layers/{i}/attention_layer_norm
  model.layers.{i}.attn.Wqkv                  query, key and value kernels side by side: HF's [3H, H] weight
                                              is [Wq; Wk; Wv], each [H, H] in torch's [out, in] layout
  model.layers.{i}.attn.Wo, mlp_norm          attention/output, output_layer_norm
  model.layers.{i}.mlp.Wi, mlp.Wo             intermediate ([input half | gate half]: HF's Wi.chunk(2)), output
  model.final_norm                            bert/final_layer_norm
  head.dense, head.norm                       mlm_head/dense, mlm_head/layer_norm
  decoder.bias, decoder.weight                mlm_head/bias; the word embeddings (tied), or mlm_head/decoder
                                              (tie_word_embeddings False)

config.json speaks ModernBertConfig's language: layer i is 'full_attention' iff i % n == 0 (`layer_types`;
transformers < 5 reads `global_attn_every_n_layers`), `local_attention` is our local_attention_window (a
token sees local_attention // 2 on each side), the two RoPE bases are `rope_parameters` (< 5:
global_rope_theta / local_rope_theta). Both spellings are written and read. HF's bias switches
(attention_bias, mlp_bias, norm_bias, classifier_bias) are one flag here, `use_bias`; the decoder's
vocabulary bias is always ours. A model whose block differs from this (post-norm, RMSNorm, learned or ALiBi
positions, a segment table, ...) is refused by `check_representable` with the flag to change.
"""

from __future__ import annotations

import numpy as np

from bert_jax.config import InputError
from bert_jax.hf import names as hf_names
from bert_jax.model import encoder

MODERNBERT = hf_names.MODERNBERT
MODEL_TYPE = "modernbert"
_ENCODER = "encoder"  # the part that may not be missing
_QKV = ("query", "key", "value")  # the order of the three blocks of HF's fused Wqkv
_FUSED = "#"  # hf_name of one block of a fused tensor: "<Wqkv name>#query"; no HF name contains it
_FULL, _SLIDING = "full_attention", "sliding_attention"
_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
_OUR_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_BIAS_FLAGS = ("attention_bias", "mlp_bias", "norm_bias", "classifier_bias")
# ModernBertConfig's defaults (configuration_modernbert.py), for fields a config.json leaves out.
_HF_DEFAULTS = {"vocab_size": 50368, "hidden_size": 768, "intermediate_size": 1152, "num_hidden_layers": 22,
                "num_attention_heads": 12, "hidden_activation": "gelu", "max_position_embeddings": 8192,
                "initializer_range": 0.02, "norm_eps": 1e-5, "local_attention": 128, "global_rope_theta": 160000.0,
                "local_rope_theta": 10000.0, "global_attn_every_n_layers": 3, "classifier_activation": "gelu",
                "attention_dropout": 0.0, "mlp_dropout": 0.0, "decoder_bias": True, "tie_word_embeddings": True}
# What ModernBERT's block is, as config.model values: (field, required value, what to set).
_BLOCK = (("norm_placement", "pre"), ("norm_kind", "layernorm"), ("final_norm", True), ("embedding_norm", True),
          ("position_encoding", "rotary"), ("type_vocab_size", 0), ("embedding_size", 0), ("num_hidden_groups", 0),
          ("num_languages", 0))


def check_representable(config) -> encoder.BertConfig:
    """The encoder config of `config` (a pretraining config) if ModernBertForMaskedLM computes it exactly;
    otherwise one InputError naming every flag that differs."""
    if config.objective != "mlm":
        raise InputError(f"HF's ModernBertForMaskedLM has an MLM head only, but config.objective="
                         f"{config.objective!r}; pretrain ModernBERT-style models with objective 'mlm' to export them.")
    m = encoder.BertConfig.from_config(config.model)
    hf_names.check_no_language_table(m)
    differ = [(field, getattr(m, field), value) for field, value in _BLOCK if getattr(m, field) != value
              and not (field == "embedding_size" and getattr(m, field) == m.hidden_size)]
    if differ:  # every one, so a MosaicBERT hears of its ALiBi too, not only of its post-norm
        raise InputError(f"{', '.join(f'config.model.{field}={got!r}' for field, got, _ in differ)}, but "
                         f"transformers' ModernBERT needs {', '.join(f'{field}={value!r}' for field, _, value in differ)}"
                         ": this model's block is not ModernBERT's, so it has no transformers class to export to.")
    if m.ffn_activation not in ("geglu", "swiglu"):
        raise InputError(f"config.model.ffn_activation={m.ffn_activation!r}: ModernBERT's MLP is gated; set "
                         "'geglu' (ModernBERT) or 'swiglu'.")
    if m.hidden_act not in _HF_ACT:
        raise InputError(f"config.model.hidden_act={m.hidden_act!r} has no transformers activation; use 'gelu'.")
    return m


def _global_every(m: encoder.BertConfig) -> int:
    """n of 'layer i is global iff i % n == 0': 1 when every layer is global."""
    return m.global_attention_every_n_layers if m.local_attention_window else 1


def layer_types(m: encoder.BertConfig) -> list[str]:
    """HF's config.layer_types of our layers."""
    return [_FULL if i % _global_every(m) == 0 else _SLIDING for i in range(m.num_hidden_layers)]


def name_table(m: encoder.BertConfig) -> list[hf_names.Row]:
    """Every tensor of a ModernBertForMaskedLM of shape `m`; each fused Wqkv tensor is three rows, one per
    block, named '<Wqkv name>#query' etc. (`_join_fused` / `_split_fused` turn them into HF's tensor)."""
    layers = ("bert", "layers")
    modules = [(_ENCODER, "model.embeddings.tok_embeddings", ("bert", "embeddings", "word_embeddings"), "embed"),
               (_ENCODER, "model.embeddings.norm", ("bert", "embeddings", "layer_norm"), "norm")]
    for i in range(m.num_hidden_layers):
        name, path = f"model.layers.{i}.", layers + (i,)
        if i > 0:
            modules.append((_ENCODER, name + "attn_norm", path + ("attention_layer_norm",), "norm"))
        modules += [(_ENCODER, f"{name}attn.Wqkv{_FUSED}{block}", path + ("attention", block), "dense")
                    for block in _QKV]
        modules += [(_ENCODER, name + "attn.Wo", path + ("attention", "output"), "dense"),
                    (_ENCODER, name + "mlp_norm", path + ("output_layer_norm",), "norm"),
                    (_ENCODER, name + "mlp.Wi", path + ("intermediate",), "dense"),
                    (_ENCODER, name + "mlp.Wo", path + ("output",), "dense")]
    modules += [(_ENCODER, "model.final_norm", ("bert", "final_layer_norm"), "norm"),
                ("mlm_head", "head.dense", ("mlm_head", "dense"), "dense"),
                ("mlm_head", "head.norm", ("mlm_head", "layer_norm"), "norm"),
                ("mlm_head", "decoder.bias", ("mlm_head", "bias"), "param")]
    if m.tie_word_embeddings:
        modules.append(("mlm_head", "decoder.weight", ("bert", "embeddings", "word_embeddings", "embedding"), "tied"))
    else:  # the head's own output table, [vocab, width] like HF's decoder.weight
        modules.append(("mlm_head", "decoder", ("mlm_head", "decoder"), "embed"))
    rows = hf_names.tensor_rows(modules)
    if not m.use_bias:  # no bias in any dense layer or norm; decoder.bias is the vocabulary bias, always there
        rows = [row for row in rows if row.hf_name == "decoder.bias" or row.path[-1] != "bias"]
    return [row._replace(hf_name=_tensor_name(row.hf_name)) for row in rows]


def _tensor_name(row_name: str) -> str:
    """'...attn.Wqkv#query.weight' -> '...attn.Wqkv.weight#query': the HF tensor's name, then the block."""
    if _FUSED not in row_name:
        return row_name
    module, rest = row_name.split(_FUSED)
    block, kind = rest.split(".")
    return f"{module}.{kind}{_FUSED}{block}"


def _join_fused(state_dict: dict) -> dict:
    """The '<name>#query/#key/#value' blocks concatenated (rows: torch's out dimension) into HF's `<name>`."""
    result = {name: value for name, value in state_dict.items() if _FUSED not in name}
    for name in dict.fromkeys(n.split(_FUSED)[0] for n in state_dict if _FUSED in n):
        result[name] = np.concatenate([state_dict[f"{name}{_FUSED}{block}"] for block in _QKV], axis=0)
    return result


def _split_fused(tensors: dict, table: list[hf_names.Row]) -> dict:
    """HF's fused tensors cut into the '<name>#query/#key/#value' blocks that `table` names; a fused tensor
    whose first dimension is not a multiple of 3 is left whole, for the shape check to report."""
    result = dict(tensors)
    for name in dict.fromkeys(row.hf_name.split(_FUSED)[0] for row in table if _FUSED in row.hf_name):
        if name in result and np.shape(result[name])[0] % 3 == 0:
            for block, value in zip(_QKV, np.split(np.asarray(result.pop(name)), 3, axis=0)):
                result[f"{name}{_FUSED}{block}"] = value
    return result


def to_state_dict(params: dict, config, *, pad_token_id: int) -> dict[str, np.ndarray]:
    """Our pure params -> {ModernBertForMaskedLM tensor: float32 array} (`check_representable` first)."""
    m = check_representable(config)
    blocks = hf_names.params_to_tensors(name_table(m), params, hf_names._expected_shapes(m, "mlm"), m,
                                        pad_token_id=pad_token_id)
    return _join_fused(blocks)


def config_dict(config, *, pad_token_id: int, bos_token_id: int | None = None,
                eos_token_id: int | None = None) -> dict:
    """config.json of the ModernBertForMaskedLM, readable by transformers 5 and by 4.48+ (both spellings of
    the layer pattern and the RoPE bases). bos/eos are also written as ModernBERT's cls/sep ids."""
    m = check_representable(config)
    activation = _HF_ACT[m.hidden_act]
    global_theta, local_theta = m.rope_theta, m.local_rope_theta or m.rope_theta
    return {
        "architectures": [MODERNBERT], "model_type": MODEL_TYPE, "vocab_size": m.vocab_size,
        "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
        "num_hidden_layers": m.num_hidden_layers, "num_attention_heads": m.num_attention_heads,
        "hidden_activation": "silu" if m.ffn_activation == "swiglu" else activation,
        "classifier_activation": activation, "max_position_embeddings": m.max_position_embeddings,
        "initializer_range": m.initializer_range, "norm_eps": m.layer_norm_eps,
        **{flag: m.use_bias for flag in _BIAS_FLAGS}, "decoder_bias": True,
        "embedding_dropout": m.hidden_dropout_prob, "mlp_dropout": m.hidden_dropout_prob,
        "attention_dropout": m.attention_probs_dropout_prob,
        "layer_types": layer_types(m), "global_attn_every_n_layers": _global_every(m),
        "local_attention": m.local_attention_window,
        "rope_parameters": {_FULL: {"rope_type": "default", "rope_theta": global_theta},
                            _SLIDING: {"rope_type": "default", "rope_theta": local_theta}},
        "global_rope_theta": global_theta, "local_rope_theta": local_theta,
        "pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
        "cls_token_id": bos_token_id, "sep_token_id": eos_token_id,
        "tie_word_embeddings": m.tie_word_embeddings,
    }


def _layer_pattern(hf_config: dict) -> tuple[int, bool]:
    """(n, any local layer) of config.json's layer types: layer i global iff i % n == 0; refused otherwise."""
    layers = hf_config.get("num_hidden_layers", _HF_DEFAULTS["num_hidden_layers"])
    types = hf_config.get("layer_types")
    if types is None:
        every = hf_config.get("global_attn_every_n_layers", _HF_DEFAULTS["global_attn_every_n_layers"])
        types = [_SLIDING if i % every else _FULL for i in range(layers)]
    unknown = sorted({str(kind) for kind in types} - {_FULL, _SLIDING})
    if unknown:
        raise InputError(f"config.json layer_types has {unknown}: bert_jax's layers are {_FULL!r} or {_SLIDING!r}.")
    full = [i for i, kind in enumerate(types) if kind == _FULL]
    every = full[1] if len(full) > 1 else max(len(types), 1)
    if len(types) != layers or [i % every == 0 for i in range(layers)] != [kind == _FULL for kind in types]:
        raise InputError(f"config.json layer_types={types}: bert_jax's layers are global exactly when i % n == 0 "
                         "(ModernBERT's pattern: every n-th layer from the first, the others sliding_attention).")
    return every, len(full) < layers


def _rope_thetas(hf_config: dict) -> tuple[float, float]:
    """(global, local) RoPE bases from rope_parameters (transformers 5) or global/local_rope_theta (4.x)."""
    if hf_config.get("rope_scaling"):
        raise InputError(f"config.json rope_scaling={hf_config['rope_scaling']}: bert_jax's RoPE is unscaled.")
    parameters = hf_config.get("rope_parameters") or {}
    other = sorted(set(parameters) - {_FULL, _SLIDING})
    if other:  # transformers' one-base form ({"rope_theta": ...}) would otherwise be dropped for the defaults
        raise InputError(f"config.json rope_parameters has {other}: ModernBERT's RoPE bases are given per layer "
                         f"kind, as {{{_FULL!r}: {{'rope_theta': ...}}, {_SLIDING!r}: {{'rope_theta': ...}}}}.")
    thetas = []
    for kind, legacy in ((_FULL, "global_rope_theta"), (_SLIDING, "local_rope_theta")):
        entry = parameters.get(kind) or {}
        if entry.get("rope_type", "default") != "default":
            raise InputError(f"config.json rope_parameters[{kind!r}] has rope_type={entry['rope_type']!r}: "
                             "bert_jax's RoPE is the default (unscaled) one.")
        thetas.append(float(entry.get("rope_theta", hf_config.get(legacy, _HF_DEFAULTS[legacy]))))
    return thetas[0], thetas[1]


def model_overrides(hf_config: dict) -> dict:
    """config.model fields of an HF ModernBertConfig (absent fields take its defaults)."""
    nulls = sorted(name for name, value in hf_config.items() if value is None and name in _HF_DEFAULTS)
    if nulls:  # a null would otherwise surface as a TypeError far from the file
        raise InputError(f"config.json has null for {nulls}: give each a value, or remove the key for "
                         f"ModernBertConfig's default ({', '.join(f'{n}={_HF_DEFAULTS[n]}' for n in nulls)}).")
    get = lambda name: hf_config.get(name, _HF_DEFAULTS.get(name))
    biases = {flag: bool(hf_config.get(flag, False)) for flag in _BIAS_FLAGS}
    if len(set(biases.values())) > 1:
        raise InputError(f"config.json has {biases}: bert_jax has one switch for every bias (use_bias), so these "
                         "must agree.")
    head_act, ffn_act = get("classifier_activation"), get("hidden_activation")
    if head_act not in _OUR_ACT:
        raise InputError(f"config.json classifier_activation={head_act!r} is not one of {tuple(_OUR_ACT)}.")
    if ffn_act != "silu" and ffn_act != head_act:
        raise InputError(f"config.json hidden_activation={ffn_act!r} differs from classifier_activation="
                         f"{head_act!r}: bert_jax's MLM head uses the layers' activation (hidden_act).")
    every, has_local = _layer_pattern(hf_config)
    global_theta, local_theta = _rope_thetas(hf_config)
    window = 2 * (get("local_attention") // 2)  # HF and bert_jax both see local_attention // 2 on each side
    if has_local and not window:
        raise InputError(f"config.json local_attention={get('local_attention')}: its sliding layers see only the "
                         "query token itself, which bert_jax's local_attention_window (>= 2) cannot express.")
    return {
        "vocab_size": get("vocab_size"), "hidden_size": get("hidden_size"),
        "num_hidden_layers": get("num_hidden_layers"), "num_attention_heads": get("num_attention_heads"),
        "intermediate_size": get("intermediate_size"), "hidden_act": _OUR_ACT[head_act],
        "ffn_activation": "swiglu" if ffn_act == "silu" else "geglu",
        "max_position_embeddings": get("max_position_embeddings"), "type_vocab_size": 0,
        "hidden_dropout_prob": get("mlp_dropout"), "attention_probs_dropout_prob": get("attention_dropout"),
        "initializer_range": get("initializer_range"), "layer_norm_eps": get("norm_eps"),
        "embedding_size": 0, "num_hidden_groups": 0, "num_languages": 0,
        "norm_placement": "pre", "norm_kind": "layernorm", "final_norm": True, "embedding_norm": True,
        "position_encoding": "rotary", "rope_theta": global_theta,
        "local_rope_theta": local_theta if has_local else 0.0, "use_bias": biases["attention_bias"],
        "local_attention_window": window if has_local else 0,
        "global_attention_every_n_layers": every if has_local else 1,
        "tie_word_embeddings": bool(get("tie_word_embeddings")),
    }


def _canonical(state_dict: dict) -> dict:
    """Keys as ModernBertForMaskedLM saves them: a bare ModernBertModel's gain the `model.` prefix."""
    return {("model." + k if k.startswith(("embeddings.", "layers.", "final_norm.")) else k): v
            for k, v in state_dict.items()}


def from_hf_modernbert(state_dict: dict[str, np.ndarray], hf_config: dict) -> hf_names.HFCheckpoint:
    """An HF ModernBertForMaskedLM (or bare ModernBertModel: a fresh MLM head) -> our config fields
    (objective 'mlm', the ModernBERT block) and params. A checkpoint without a decoder bias
    (decoder_bias false) gets a zero one, which computes the same logits."""
    overrides = model_overrides(hf_config)
    m = encoder.BertConfig(**overrides)
    hf_names.check_heads_divide(m)
    table = name_table(m)
    tensors = _canonical(state_dict)
    if not hf_config.get("decoder_bias", True) and "head.dense.weight" in tensors:
        tensors["decoder.bias"] = np.zeros(m.vocab_size, np.float32)
    tensors = _split_fused(tensors, table)
    params, missing_heads = hf_names.tensors_to_params(table, tensors, hf_names._expected_shapes(m, "mlm"), m,
                                                       MODEL_TYPE, pad_token_id=hf_config.get("pad_token_id", 0))
    hf_names.check_tied(table, tensors, params, missing_heads)
    unused = hf_names.unused_tensors(table, tensors, MODEL_TYPE)
    return hf_names.HFCheckpoint({"model": overrides, "objective": "mlm"}, params, missing_heads, unused)
