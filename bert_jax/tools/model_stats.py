"""What a config costs: parameter counts by part, training FLOPs per token, parameter/optimizer memory.

Counts come from the real model built abstractly (`nnx.eval_shape`: no memory is allocated), so they
cannot drift from the code. FLOPs are the model FLOPs of a training step (forward + backward = 3x the
forward matmuls), the convention of MFU figures:

  per token = 6 * (L * (4 H^2 + 2 H I) + [E H if factorized])      dense layers, every layer applied
            + 12 * L * S * H                                       attention scores and context (QK^T, PV)
            + 6 * (P / S) * (H E + E V)                            MLM head on the P gathered positions
            + 6 * (H^2 + 2 H) / S                                  pooler and pair head, once per sequence
            + 6 * (P / S) * ((2 H + D) H + H E + E V)              SBO head (objective 'mlm_sbo', no pair head)

with L layers, hidden H, intermediate I, embedding width E, vocabulary V, sequence length S, P =
max_predictions_per_seq and D = sbo_position_embedding_size. The SBO head runs on the same P slots as the
MLM head, with its two-layer MLP on the concatenated boundary outputs and its own tied projection; objective
'mlm_sbo' has no pooler or pair head. Embedding lookups, LayerNorm, softmax and biases are left out, as usual.
ELECTRA (objective 'electra') adds its generator (the same formula with the generator's sizes, its MLM
head on the P positions, no pooler) and replaces the pooler and pair head by the discriminator's RTD head
on every token, 6 * (H^2 + H).

Per-device memory under FSDP applies `parallel.state_shardings` (the rule the trainer uses) to the abstract
train state on an AbstractMesh, so it can be asked for 8 devices on a machine with one.
"""

from __future__ import annotations


import jax
from flax import nnx
from jax.sharding import AbstractMesh

from bert_jax.model import encoder, pretraining_heads
from bert_jax.pretraining import optim
from bert_jax.runtime import parallel

_BYTES_PER_PARAM = 4  # float32 parameters
_ADAM_MOMENTS = 2  # AdamW, LAMB and StableAdamW each keep two float32 moments per parameter


def _count(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def _abstract_params(config) -> nnx.State:
    """The pretraining model's nnx.Param state for `config`, as ShapeDtypeStructs."""
    model = nnx.eval_shape(lambda: pretraining_heads.build_model(config, seed=0))
    return nnx.state(model, nnx.Param)


def parameter_breakdown(config) -> dict[str, int]:
    """Parameters of the pretraining model for `config`, by part (shared layers counted once).

    ELECTRA: the encoder is the discriminator's (what fine-tuning keeps), with the embedding tables it shares
    with the generator; `mlm_head` is the generator's, `generator` its encoder without those tables, and
    `rtd_head` the discriminator's head. A distillation student's teacher is not counted (it is not trained)."""
    params = _abstract_params(config)
    encoder = params["bert"]
    layers = encoder["layer_groups"] if "layer_groups" in encoder else encoder["layers"]
    parts = {
        "embeddings": _count(encoder["embeddings"]),
        "layers": _count(layers) + (_count(encoder["final_layer_norm"]) if "final_layer_norm" in encoder else 0),
        "pooler": _count(encoder["pooler"]) if "pooler" in encoder else 0,
        "mlm_head": _count(params["mlm_head"] if "mlm_head" in params else params["generator_head"]),
        "pair_head": _count(params["pair_head"]) if "pair_head" in params else 0,
        "rtd_head": _count(params["discriminator_head"]) if "discriminator_head" in params else 0,
        "generator": _count(params["generator"]) if "generator" in params else 0,
        "fit_dense": _count(params["fit_dense"]) if "fit_dense" in params else 0,  # TinyBERT's map to the teacher
        "sbo_head": _count(params["sbo_head"]) if "sbo_head" in params else 0,  # SpanBERT's span-boundary head
    }
    parts["encoder_params"] = parts["embeddings"] + parts["layers"] + parts["pooler"]
    parts["head_params"] = (parts["mlm_head"] + parts["pair_head"] + parts["rtd_head"] + parts["generator"]
                            + parts["fit_dense"] + parts["sbo_head"])
    parts["total_params"] = parts["encoder_params"] + parts["head_params"]
    return parts


def training_flops_per_token(config, seq_length: int | None = None) -> float:
    """Model FLOPs of one training step per token (the formula of this module's docstring)."""
    m = encoder.BertConfig.from_config(config.model)
    seq = seq_length or config.data.max_seq_length
    predictions = min(config.masking.max_predictions_per_seq, seq)
    hidden = m.hidden_size
    if config.distill.recipe:
        return _distillation_flops(config, m, seq, predictions)
    if config.objective == "electra":
        generator = pretraining_heads.generator_config(m, config.electra)
        return (_encoder_flops(m, seq) + 6 * (hidden**2 + hidden)
                + _encoder_flops(generator, seq) + _mlm_head_flops(generator, predictions, seq))
    if config.objective == "mlm_sbo":
        return _encoder_flops(m, seq) + _mlm_head_flops(m, predictions, seq) + _sbo_head_flops(m, predictions, seq)
    pair = 6 * (hidden**2 + 2 * hidden) / seq if config.objective != "mlm" else 0.0
    return _encoder_flops(m, seq) + _mlm_head_flops(m, predictions, seq) + pair


def _distillation_flops(config, m: encoder.BertConfig, seq: int, predictions: int) -> float:
    """The student's training FLOPs, the frozen teacher's forward (a third of what training it would cost:
    no backward pass) on the same tokens and masked positions, and TinyBERT's map of every student hidden
    state into the teacher's width."""
    teacher = pretraining_heads.teacher_config(config)
    student = _encoder_flops(m, seq) + _mlm_head_flops(m, predictions, seq)
    teacher_forward = (_encoder_flops(teacher, seq) + _mlm_head_flops(teacher, predictions, seq)) / 3
    fit = 6 * (m.num_hidden_layers + 1) * m.hidden_size * teacher.hidden_size if config.distill.recipe == "tinybert" else 0
    return student + teacher_forward + fit


def attention_flops_per_token(m: encoder.BertConfig, seq: int) -> float:
    """Training FLOPs per token of attention's scores and context (QK^T and PV, 3x forward): 12 L S H."""
    return 12 * m.num_hidden_layers * seq * m.hidden_size


def _encoder_flops(m: encoder.BertConfig, seq: int) -> float:
    """Training FLOPs per token of the encoder's dense layers (with the embedding projection) and attention."""
    hidden, layers, width = m.hidden_size, m.num_hidden_layers, m.embedding_width
    ffn_matrices = 3 if m.gated else 2  # a GLU's input, gate and output matrices
    dense = layers * (4 * hidden**2 + ffn_matrices * hidden * m.intermediate_size)
    if m.factorized:
        dense += width * hidden
    return 6 * dense + attention_flops_per_token(m, seq)


def _mlm_head_flops(m: encoder.BertConfig, predictions: int, seq: int) -> float:
    """Training FLOPs per token of the MLM head on `predictions` gathered positions per sequence."""
    return 6 * predictions / seq * (m.hidden_size * m.embedding_width + m.embedding_width * m.vocab_size)


def _sbo_head_flops(m: encoder.BertConfig, predictions: int, seq: int) -> float:
    """Training FLOPs per token of SpanBERT's span-boundary head on `predictions` slots per sequence."""
    hidden, width = m.hidden_size, m.embedding_width
    mlp = (2 * hidden + m.sbo_position_embedding_size) * hidden + hidden * width
    return 6 * predictions / seq * (mlp + width * m.vocab_size)


def memory_bytes(num_params: int) -> dict[str, int]:
    """float32 parameters and Adam moments (gradients and activations come on top, during the step)."""
    params = num_params * _BYTES_PER_PARAM
    optimizer = num_params * _BYTES_PER_PARAM * _ADAM_MOMENTS
    return {"param_bytes": params, "optimizer_bytes": optimizer, "param_and_optimizer_bytes": params + optimizer}


def per_device_memory_bytes(config, fsdp: int | None = None) -> dict[str, int]:
    """Bytes of parameters and optimizer state that one device holds with the fsdp size `fsdp` (default
    `config.mesh.fsdp`): the real train state of `config` (its optimizer, its dtypes), sharded by the
    trainer's rule. Gradients and activations come on top during the step; the 'data' size does not matter.
    """
    fsdp = int(config.mesh.fsdp if fsdp is None else fsdp)
    params = _abstract_params(config)
    opt_state = jax.eval_shape(optim.make_optimizer(config.train).init, params)
    mesh = AbstractMesh((1, fsdp), (parallel.DATA_AXIS, parallel.FSDP_AXIS))

    param_bytes, optimizer_bytes = (parallel.bytes_per_device(tree, parallel.state_shardings(tree, mesh))
                                    for tree in (params, opt_state))
    return {"fsdp": fsdp, "param_bytes_per_device": param_bytes, "optimizer_bytes_per_device": optimizer_bytes,
            "param_and_optimizer_bytes_per_device": param_bytes + optimizer_bytes}
