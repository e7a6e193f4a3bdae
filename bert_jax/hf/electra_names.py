"""ELECTRA's two models as transformers directories: the discriminator as `ElectraForPreTraining`, the
generator as `ElectraForMaskedLM`; and back (`from_hf_electra`).

Our ElectraForPreTraining holds both with shared embedding tables (`bert/embeddings/...`); each HF model gets
its own copy of them, as google-research/electra's released checkpoints do. The layer names are BERT's
under the `electra.` prefix, plus `electra.embeddings_project` where the embeddings are narrower than the
model (ELECTRA-Small's discriminator; every generator narrower than its embeddings).

Import reads the same tables the other way. The discriminator (an ElectraForPreTraining, or a bare
ElectraModel whose RTD head is then initialised fresh) becomes `bert` + `discriminator_head`; a generator
directory, when given, becomes `generator` + `generator_head`, its shape expressed as
config.electra's fractions (refused when google-research/electra's rule, 4x intermediate and one head per
64 dimensions, does not give it back). Its copies of the shared tables are not read: ours are the
discriminator's, and a generator whose copies differ is reported.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.hf import names as hf_names
from bert_jax.model import encoder, pretraining_heads

DISCRIMINATOR, GENERATOR = "ElectraForPreTraining", "ElectraForMaskedLM"
_SHARED = ("word_embeddings", "position_embeddings", "token_type_embeddings", "layer_norm")
_HEADS = {
    DISCRIMINATOR: [
        ("head", "discriminator_predictions.dense", ("discriminator_head", "dense"), "dense"),
        ("head", "discriminator_predictions.dense_prediction", ("discriminator_head", "dense_prediction"), "dense"),
    ],
    GENERATOR: [
        ("head", "generator_predictions.dense", ("generator_head", "dense"), "dense"),
        ("head", "generator_predictions.LayerNorm", ("generator_head", "layer_norm"), "norm"),
        ("head", "generator_lm_head.bias", ("generator_head", "bias"), "param"),
        ("head", "generator_lm_head.weight", ("bert", "embeddings", "word_embeddings", "embedding"), "tied"),
    ],
}


def _modules(m: encoder.BertConfig, encoder_name: str) -> list[tuple]:
    """(part, HF module name, our path, kind) of an HF ElectraModel of shape `m`, read from our `encoder_name`
    subtree ('bert' or 'generator'); the shared tables always come from 'bert'."""
    modules = []
    for part, name, path, kind in hf_names.encoder_modules("electra", m):
        shared = path[1] == "embeddings" and path[2] in _SHARED
        modules.append((part, name, path if shared else (encoder_name,) + path[1:], kind))
    if m.factorized:
        modules.append(("encoder", "electra.embeddings_project", (encoder_name, "embeddings", "projection"), "dense"))
    return modules


def _configs(config) -> dict[str, encoder.BertConfig]:
    m = encoder.BertConfig.from_config(config.model)
    return {DISCRIMINATOR: m, GENERATOR: pretraining_heads.generator_config(m, config.electra)}


def electra_state_dicts(params: dict, config, *, pad_token_id: int) -> dict[str, dict]:
    """{HF class: {HF tensor name: float32 array}} for the discriminator and the generator of `params`."""
    if config.model.hidden_act != "gelu":
        raise InputError(f"HF's ElectraForMaskedLM applies exact GELU in its generator head whatever hidden_act says, "
                         f"so config.model.hidden_act={config.model.hidden_act!r} cannot be exported; use 'gelu'.")
    shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: pretraining_heads.build_model(config, 0)), nnx.Param))
    result = {}
    for architecture, m in _configs(config).items():
        encoder_name = "bert" if architecture == DISCRIMINATOR else "generator"
        table = hf_names.tensor_rows(_modules(m, encoder_name) + _HEADS[architecture])
        result[architecture] = hf_names.params_to_tensors(table, params, shapes, m, pad_token_id=pad_token_id)
    return result


def electra_config_dicts(config, *, pad_token_id: int, bos_token_id: int | None = None,
                         eos_token_id: int | None = None) -> dict[str, dict]:
    """{HF class: config.json content} for the discriminator and the generator."""
    result = {}
    for architecture, m in _configs(config).items():
        fields = hf_names.encoder_config_dict(m, "electra", pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                                              eos_token_id=eos_token_id)
        result[architecture] = {"architectures": [architecture], **fields, "embedding_size": m.embedding_width}
    return result


class ElectraCheckpoint(NamedTuple):
    """What `from_hf_electra` read: like `names.HFCheckpoint`, plus the config.electra fields of the generator's
    shape ({} without a generator) and notes for the summary (shared tables that differed)."""
    config_overrides: dict
    params: dict
    missing_heads: list
    unexpected_keys: list
    notes: list


def _architecture(hf_config: dict) -> str:
    return (hf_config.get("architectures") or ["ElectraModel"])[0]


def _canonical(state_dict: dict) -> dict:
    """Keys under `electra.`, a bare ElectraModel's `embeddings_project` included."""
    renamed = {("electra." + k if k.startswith("embeddings_project.") else k): v for k, v in state_dict.items()}
    return hf_names.canonical_names(renamed, "electra.")


def _check_role(tensors: dict, hf_config: dict, role: str, where: str) -> None:
    """Refuses a generator given as the discriminator and the other way round."""
    architecture = _architecture(hf_config)
    generator_like = architecture == GENERATOR or any(k.startswith("generator_") for k in tensors)
    if role == "discriminator" and generator_like:
        raise InputError(f"{where} is an ELECTRA generator ({architecture}); bert_jax imports an ELECTRA model from "
                         f"its discriminator: give the {DISCRIMINATOR} (or ElectraModel) directory as --input and "
                         "this one as --generator.")
    if role == "generator" and not generator_like:
        raise InputError(f"{where} is not an ELECTRA generator ({architecture}, no generator_predictions tensors); "
                         f"--generator takes an {GENERATOR} directory.")


def _generator_fractions(m: encoder.BertConfig, g: encoder.BertConfig, where: str) -> dict:
    """config.electra's generator_hidden_fraction and generator_layers_fraction that give the shape `g`."""
    fields = ("vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps")
    differ = {f: (getattr(m, f), getattr(g, f)) for f in fields if getattr(m, f) != getattr(g, f)}
    if g.embedding_width != m.embedding_width:
        differ["embedding_size"] = (m.embedding_width, g.embedding_width)
    if differ:
        raise InputError(f"{where} does not fit the discriminator (discriminator, generator): {differ}; ELECTRA "
                         "shares the embedding tables, so these must agree.")
    electra = {"generator_hidden_fraction": g.hidden_size / m.hidden_size,
               "generator_layers_fraction": g.num_hidden_layers / m.num_hidden_layers}
    size = config_lib.electra_generator_size(m.hidden_size, m.num_hidden_layers, _Fractions(**electra))
    got = {"hidden_size": g.hidden_size, "num_hidden_layers": g.num_hidden_layers,
           "intermediate_size": g.intermediate_size, "num_attention_heads": g.num_attention_heads}
    if size != got or not all(0 < v <= 1 for v in electra.values()):
        raise InputError(f"{where}: a generator of {got} is not one bert_jax's config.electra can describe for a "
                         f"discriminator of hidden_size {m.hidden_size} x {m.num_hidden_layers} layers (it would be "
                         f"{size}: no wider or deeper than the discriminator, intermediate 4 x hidden, one head per "
                         "64 dimensions); import without --generator to start a fresh one.")
    return electra


class _Fractions(NamedTuple):
    generator_hidden_fraction: float
    generator_layers_fraction: float


def from_hf_electra(tensors: dict, hf_config: dict, electra, *, where: str = "--input", generator: tuple | None = None,
                    generator_where: str = "--generator") -> ElectraCheckpoint:
    """An HF ELECTRA discriminator (ElectraForPreTraining or ElectraModel) and optionally its generator
    ((tensors, config.json) of an ElectraForMaskedLM) -> our config fields and ElectraForPreTraining params.

    `electra`: config.electra, whose fractions size a fresh generator when `generator` is None. Subtrees the
    checkpoints lack ('discriminator_head', 'generator', 'generator_head') are listed in `missing_heads`.
    """
    tensors = _canonical(tensors)
    _check_role(tensors, hf_config, "discriminator", where)
    model_fields = hf_names.model_overrides(hf_config)
    m = encoder.BertConfig(**model_fields)
    hf_names.check_heads_divide(m)
    electra_fields, notes = {}, []
    if generator is not None:
        generator_tensors, generator_config = _canonical(generator[0]), generator[1]
        _check_role(generator_tensors, generator_config, "generator", generator_where)
        if generator_config.get("model_type") != "electra":
            raise InputError(f"{generator_where} has model_type={generator_config.get('model_type')!r}, not 'electra'.")
        g = encoder.BertConfig(**hf_names.model_overrides(generator_config))
        hf_names.check_heads_divide(g)
        electra_fields = _generator_fractions(m, g, generator_where)
        g = pretraining_heads.generator_config(m, _Fractions(**electra_fields))
    else:
        g = pretraining_heads.generator_config(m, electra)
    shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(
        lambda: pretraining_heads.ElectraForPreTraining(m, g, rngs=nnx.Rngs(0))), nnx.Param))
    pad_token_id = hf_config.get("pad_token_id", 0)
    table = hf_names.tensor_rows(_modules(m, "bert") + _HEADS[DISCRIMINATOR])
    params, missing = hf_names.tensors_to_params(table, tensors, shapes, m, "electra", pad_token_id=pad_token_id)
    missing_heads = ["discriminator_head"] if missing else []
    unexpected = hf_names.unused_tensors(table, tensors, "electra")
    if generator is None:
        missing_heads += ["generator", "generator_head"]
    else:
        generator_table = hf_names.tensor_rows(_modules(g, "generator") + _HEADS[GENERATOR])
        shared = [row for row in generator_table if row.path[0] == "bert"]
        own = [row for row in generator_table if row.path[0] != "bert"]
        generator_params, generator_missing = hf_names.tensors_to_params(
            own, generator_tensors, shapes, g, "electra", pad_token_id=generator_config.get("pad_token_id", 0))
        if generator_missing:
            raise InputError(f"{generator_where} lacks the generator head (generator_predictions, generator_lm_head); "
                             f"give an {GENERATOR} directory, or import without --generator to start a fresh one.")
        params.update(generator_params)
        differing = [row.hf_name for row in shared if row.op != "tied" and row.hf_name in generator_tensors
                     and not np.array_equal(np.asarray(generator_tensors[row.hf_name], np.float32),
                                            hf_names._get(params, row.path))]
        tied = [row for row in shared if row.op == "tied" and row.hf_name in generator_tensors]
        differing += [row.hf_name for row in tied if not np.array_equal(
            np.asarray(generator_tensors[row.hf_name], np.float32), hf_names._get(params, row.path))]
        if differing:
            notes.append(f"the generator's copies of the shared embedding tables differ from the discriminator's "
                         f"({', '.join(differing)}); ELECTRA shares them, so the discriminator's are used")
        unexpected += [f"{generator_where}:{name}" for name in hf_names.unused_tensors(generator_table,
                                                                                       generator_tensors, "electra")]
    overrides = {"model": model_fields, "objective": "electra", "electra": electra_fields}
    return ElectraCheckpoint(overrides, params, missing_heads, unexpected, notes)
