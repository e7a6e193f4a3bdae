"""ELECTRA's two models as transformers directories: the discriminator as `ElectraForPreTraining`, the
generator as `ElectraForMaskedLM`.

Our ElectraForPreTraining holds both with shared embedding tables (`bert/embeddings/...`); each HF model gets
its own copy of them, as google-research/electra's released checkpoints do. The layer names are BERT's
under the `electra.` prefix, plus `electra.embeddings_project` where the embeddings are narrower than the
model (ELECTRA-Small's discriminator; every generator narrower than its embeddings).
"""

from __future__ import annotations

from flax import nnx

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
