"""Knowledge distillation inside the pretraining step: DistilBERT (Sanh et al. 2019) and TinyBERT's general
distillation (Jiao et al. 2020).

The teacher is a frozen BertForPreTraining whose parameters ride in `TrainState.teacher`, outside the
optimizer: the step runs it on the student's masked batch under `stop_gradient`, so it gets no gradient and
no update, and a checkpoint holds everything the run needs to continue. Every loss term is an additive
(sum, count) pair, so terms pool over steps and devices like the MLM figures; the weights the step applies
ride beside them as `distill_<term>_weight` (see `losses.pretraining_loss`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.errors import InputError
from bert_jax.pretraining import losses, masking


@dataclasses.dataclass(frozen=True)
class DistillSpec:
    """What the distillation step needs beyond the student's Setup."""

    recipe: str  # 'distilbert' | 'tinybert'
    teacher_graphdef: Any
    temperature: float
    weights: dict  # term -> weight: soft, mlm, cosine, embedding, hidden, attention
    intermediate_steps: int  # tinybert: steps of layer-to-layer distillation before the prediction layer
    layer_map: tuple[int, ...]  # tinybert: the teacher layer (1..N) each student layer (1..M) learns from

    @classmethod
    def from_config(cls, config, teacher_graphdef) -> DistillSpec:
        k = config.distill
        weights = {"soft": k.soft_target_weight, "mlm": k.mlm_weight, "cosine": k.cosine_weight,
                   "embedding": k.embedding_weight, "hidden": k.hidden_weight, "attention": k.attention_weight}
        intermediate = round(k.intermediate_fraction * config.train.num_train_steps) if k.recipe == "tinybert" else 0
        return cls(k.recipe, teacher_graphdef, float(k.temperature), {n: float(w) for n, w in weights.items()},
                   int(intermediate), uniform_layer_map(config.model.num_hidden_layers,
                                                        k.teacher_model.num_hidden_layers))


def uniform_layer_map(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """TinyBERT's uniform mapping g(m) = m * N / M: student layer m (1..M) learns from teacher layer g(m)."""
    return tuple(m * teacher_layers // student_layers for m in range(1, student_layers + 1))


def every_other_layer(student_layers: int) -> tuple[int, ...]:
    """DistilBERT's initialisation: student layer i starts as teacher layer 2i (0-based)."""
    return tuple(2 * i for i in range(student_layers))


def soft_target_sums(student_logits, teacher_logits, weights, temperature: float):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) summed over weighted positions, and the weight.

    logits [..., vocab], weights [...]. The T^2 keeps the gradient's scale independent of T (Hinton et al.).
    """
    log_p_teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    log_p_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return temperature**2 * jnp.sum(kl * weights), jnp.sum(weights)


def cosine_sums(student_hidden, teacher_hidden, token_weights):
    """sum of (1 - cos(student, teacher)) over weighted tokens, and the weight. hidden [batch, seq, H]."""
    s, t = student_hidden.astype(jnp.float32), teacher_hidden.astype(jnp.float32)
    norms = jnp.maximum(jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1), 1e-8)
    cosine = jnp.sum(s * t, axis=-1) / norms
    return jnp.sum((1.0 - cosine) * token_weights), jnp.sum(token_weights)


def hidden_mse_sums(student_hidden, teacher_hidden, token_weights):
    """sum over weighted tokens of the mean squared difference over the hidden units, and the weight."""
    diff = student_hidden.astype(jnp.float32) - teacher_hidden.astype(jnp.float32)
    return jnp.sum(jnp.mean(diff**2, axis=-1) * token_weights), jnp.sum(token_weights)


def attention_mse_sums(student_scores, teacher_scores, token_weights):
    """sum over (query, key) pairs of real tokens of the squared score difference averaged over heads, and the
    number of pairs. scores [batch, heads, seq, seq]; padded queries and keys are left out (TinyBERT zeroes
    them in both, which changes only the denominator)."""
    pairs = token_weights[:, :, None] * token_weights[:, None, :]  # [batch, q, k]
    diff = student_scores.astype(jnp.float32) - teacher_scores.astype(jnp.float32)
    return jnp.sum(jnp.mean(diff**2, axis=1) * pairs), jnp.sum(pairs)


def _term(sums: dict, name: str, value_and_count, weight) -> None:
    sums[f"distill_{name}_loss_sum"], sums[f"distill_{name}_count"] = value_and_count
    sums[f"distill_{name}_weight"] = jnp.asarray(weight, jnp.float32)


def distill_sums(graphdef, spec: DistillSpec, params, teacher, batch, masked: masking.MaskedBatch, example_weights,
                 step, *, deterministic: bool, dropout_key=None) -> dict[str, jax.Array]:
    """The student's MLM statistics and every distillation term of one masked batch.

    `step`: the number of updates so far, which sets TinyBERT's phase (layer-to-layer distillation before
    `spec.intermediate_steps`, the prediction layer after).
    """
    student = nnx.merge(graphdef, params)
    teacher_model = nnx.merge(spec.teacher_graphdef, jax.lax.stop_gradient(teacher))
    rngs = None if deterministic else nnx.Rngs(dropout=dropout_key)
    segment_ids, attention_mask = batch["segment_ids"], batch["attention_mask"]
    token_weights = (attention_mask > 0).astype(jnp.float32) * example_weights[:, None]
    mlm_weights = masked.masked_lm_weights * example_weights[:, None]

    inputs = (masked.input_ids, segment_ids, attention_mask)
    if spec.recipe == "tinybert":  # every layer's hidden states and attention scores are compared
        student_hidden, student_scores = student.bert.layer_outputs(*inputs, deterministic=deterministic, rngs=rngs)
        teacher_hidden, teacher_scores = teacher_model.bert.layer_outputs(*inputs)
    else:  # DistilBERT needs the last layer only: the plain forward, with the configured attention kernel
        student_hidden = [student.bert(*inputs, deterministic=deterministic, rngs=rngs)[0]]
        teacher_hidden = [teacher_model.bert(*inputs)[0]]
    words = student.bert.embeddings.word_embeddings
    student_logits = student.mlm_head(student_hidden[-1], masked.masked_positions, words)
    teacher_logits = teacher_model.mlm_head(teacher_hidden[-1], masked.masked_positions,
                                            teacher_model.bert.embeddings.word_embeddings)
    sums = losses.pretraining_sums(student_logits, masked.masked_lm_ids, masked.masked_lm_weights, None, None,
                                   example_weights, pair=None)
    sums["mlm_weight"] = jnp.asarray(spec.weights["mlm"], jnp.float32)
    soft_weight = spec.weights["soft"]
    if spec.recipe == "distilbert":
        _term(sums, "cosine", cosine_sums(student_hidden[-1], teacher_hidden[-1], token_weights),
              spec.weights["cosine"])
    else:
        intermediate = (step < spec.intermediate_steps).astype(jnp.float32)
        soft_weight = soft_weight * (1.0 - intermediate)
        fit = student.fit_dense
        _term(sums, "embedding", hidden_mse_sums(fit(student_hidden[0]), teacher_hidden[0], token_weights),
              spec.weights["embedding"] * intermediate)
        hidden = [hidden_mse_sums(fit(student_hidden[m]), teacher_hidden[g], token_weights)
                  for m, g in enumerate(spec.layer_map, start=1)]
        _term(sums, "hidden", (sum(h[0] for h in hidden), hidden[0][1]), spec.weights["hidden"] * intermediate)
        attention = [attention_mse_sums(student_scores[m], teacher_scores[g - 1], token_weights)
                     for m, g in enumerate(spec.layer_map)]
        _term(sums, "attention", (sum(a[0] for a in attention), attention[0][1]),
              spec.weights["attention"] * intermediate)
    _term(sums, "soft", soft_target_sums(student_logits, teacher_logits, mlm_weights, spec.temperature), soft_weight)
    return sums


def init_student_from_teacher(student_params: dict, teacher_params: dict, student_layers: int) -> dict:
    """DistilBERT's initialisation, on pure dicts: the teacher's word embeddings, embedding LayerNorm, final
    norm (pre-norm stacks) and MLM head, and teacher layer 2i as student layer i.

    The student has no segment table, so the teacher's segment-0 row is added to its position table: for the
    single-segment rows distillation trains on, the student's embedding output then equals the teacher's.
    """
    student = jax.tree.map(lambda x: x, student_params)
    t_embeddings, s_embeddings = teacher_params["bert"]["embeddings"], student["bert"]["embeddings"]
    s_embeddings["word_embeddings"] = t_embeddings["word_embeddings"]
    for name in ("layer_norm", "position_embeddings"):  # absent without an embedding norm / a position table
        if name in t_embeddings:
            s_embeddings[name] = t_embeddings[name]
    if "token_type_embeddings" in t_embeddings and "token_type_embeddings" in s_embeddings:
        s_embeddings["token_type_embeddings"] = t_embeddings["token_type_embeddings"]
    elif "token_type_embeddings" in t_embeddings:
        if "position_embeddings" not in t_embeddings:
            raise InputError("the teacher has a segment table and no position table (rotary or ALiBi positions), "
                             "so its segment-0 row has nowhere to go in a student without a segment table; give "
                             "the student config.model.type_vocab_size equal to the teacher's.")
        positions = t_embeddings["position_embeddings"]["embedding"] + t_embeddings["token_type_embeddings"]["embedding"][0]
        s_embeddings["position_embeddings"] = {"embedding": positions}
    if "projection" in t_embeddings:
        s_embeddings["projection"] = t_embeddings["projection"]
    for i, source in enumerate(every_other_layer(student_layers)):
        student["bert"]["layers"][i] = teacher_params["bert"]["layers"][source]
    if "final_layer_norm" in teacher_params["bert"]:  # pre-norm stacks: the norm the MLM head was trained on
        student["bert"]["final_layer_norm"] = teacher_params["bert"]["final_layer_norm"]
    student["mlm_head"] = teacher_params["mlm_head"]
    return jax.tree.map(lambda s, t: jnp.asarray(t, s.dtype), student_params, student)
