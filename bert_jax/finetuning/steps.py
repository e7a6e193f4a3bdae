"""The fine-tuning model, its losses, and the jitted train / predict steps (pure, compiled once).

One code path for every task kind: the task model (heads.TASK_MODELS) maps the batch's
input_ids / segment_ids / attention_mask to logits, and `task_loss` turns logits and labels into a
weighted sum. Rows with `example_weights` 0 pad the last batch to full size, so no example is dropped
and the shapes (hence the compiled program) never change.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from bert_jax.finetuning import sentence_losses
from bert_jax.model import encoder, task_heads
from bert_jax.pretraining import optim
from bert_jax.pretraining.steps import TrainState, keep_if_finite
from bert_jax.runtime import parallel

MODEL_INPUTS = ("input_ids", "segment_ids", "attention_mask")


def build_task_model(model_config, kind: str, num_labels: int, seed: int, sentence=None) -> nnx.Module:
    """The task model of `kind` (heads.TASK_MODELS) with freshly initialised weights; `sentence` (the fine-tune
    config's `sentence` fields) sets a sentence encoder's pooling and normalisation."""
    config = encoder.BertConfig.from_config(model_config)
    options = {}
    if kind == "sentence_embedding" and sentence is not None:
        options = {"pooling_mode": sentence.pooling, "normalize": bool(sentence.normalize)}
    return task_heads.TASK_MODELS[kind](config, num_labels, rngs=nnx.Rngs(params=seed), **options)


def _cross_entropy_sums(logits, labels, weights):
    """(sum of weighted cross-entropy, sum of weights); labels < 0 carry no weight."""
    weights = weights * (labels >= 0)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    return (loss * weights).sum(), weights.sum()


def task_loss(kind: str, logits: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(weighted loss sum, weight sum) of one batch; the mean is their ratio.

    classification / multiple_choice: softmax cross-entropy; regression: squared error on logit 0;
    multi_label_classification: sigmoid binary cross-entropy, averaged over the labels;
    token_classification: cross-entropy on scored positions; qa: mean of start and end cross-entropy.
    """
    weights = batch["example_weights"]  # [batch]
    if kind in ("classification", "multiple_choice"):
        return _cross_entropy_sums(logits, batch["labels"], weights)
    if kind == "regression":
        return (jnp.square(logits[:, 0] - batch["labels"]) * weights).sum(), weights.sum()
    if kind == "multi_label_classification":
        per_example = optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean(-1)
        return (per_example * weights).sum(), weights.sum()
    if kind == "token_classification":
        return _cross_entropy_sums(logits, batch["labels"], jnp.broadcast_to(weights[:, None], batch["labels"].shape))
    if kind == "qa":
        start_sum, count = _cross_entropy_sums(logits[..., 0], batch["start_positions"], weights)
        end_sum, _ = _cross_entropy_sums(logits[..., 1], batch["end_positions"], weights)
        return (start_sum + end_sum) / 2, count
    raise ValueError(f"unknown task kind {kind!r}")


def optimizer_config(train_config, num_train_steps: int) -> ml_collections.ConfigDict:
    """The pretraining optimizer's fields for a fine-tuning run of `num_train_steps` steps."""
    return ml_collections.ConfigDict({
        "learning_rate": train_config.learning_rate, "num_train_steps": num_train_steps,
        "warmup_steps": int(train_config.warmup_proportion * num_train_steps),
        "weight_decay": train_config.weight_decay, "adam_b1": train_config.adam_b1,
        "adam_b2": train_config.adam_b2, "adam_eps": train_config.adam_eps,
        "max_grad_norm": train_config.max_grad_norm})


@dataclasses.dataclass(frozen=True)
class TaskSetup:
    """What the steps need: the model's graph, the optimizer, the task kind and the shardings."""

    graphdef: Any
    optimizer: optax.GradientTransformation
    kind: str
    schedule: optax.Schedule
    state_sharding: Any
    sentence: Any = None  # sentence_embedding: the config's `sentence` fields (loss, scale, chunks, ...)


def make_finetuning_setup(model: nnx.Module, kind: str, opt_config, mesh, params, seed: int, sentence=None):
    """(TaskSetup, initial TrainState on the mesh) of the task `model` with its weights set to `params`
    (a pure dict: the transferred encoder and the model's own fresh head)."""
    graphdef, state = nnx.split(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    optimizer = optim.make_optimizer(opt_config)
    replicated = parallel.replicated(mesh)

    def init(params_state):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params_state, opt_state=optimizer.init(params_state),
                          rng=jax.random.key_data(jax.random.key(seed)))

    state_sharding = jax.tree.map(lambda _: replicated, jax.eval_shape(init, state))
    train_state = jax.jit(init, out_shardings=state_sharding)(jax.device_put(state, replicated))
    setup = TaskSetup(graphdef=graphdef, optimizer=optimizer, kind=kind,
                      schedule=optim.learning_rate_schedule(opt_config), state_sharding=state_sharding,
                      sentence=sentence)
    return setup, train_state


def make_prediction_setup(model: nnx.Module, kind: str, mesh, params, sentence=None):
    """(TaskSetup, params on the mesh) for prediction only: the task `model` with its weights set to `params`
    (a pure dict, e.g. a fine-tuned model directory's), replicated, and no optimizer state to build or hold."""
    graphdef, state = nnx.split(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    replicated = parallel.replicated(mesh)
    params_sharding = jax.tree.map(lambda _: replicated, state)
    sharding = TrainState(step=replicated, params=params_sharding, opt_state=(), rng=replicated)
    setup = TaskSetup(graphdef=graphdef, optimizer=optax.identity(), kind=kind,
                      schedule=optax.constant_schedule(0.0), state_sharding=sharding, sentence=sentence)
    return setup, jax.device_put(state, params_sharding)


def _logits(setup: TaskSetup, params, batch, *, deterministic: bool, dropout_key=None):
    """The task model's outputs: logits, or a sentence encoder's embeddings (its softmax recipe's class logits)."""
    model = nnx.merge(setup.graphdef, params)
    rngs = None if deterministic else nnx.Rngs(dropout=dropout_key)
    outputs = model(*(batch[name] for name in MODEL_INPUTS), deterministic=deterministic, rngs=rngs)
    if setup.sentence is not None and setup.sentence.loss == "softmax":
        return model.classify(outputs)
    return outputs


def _sentence_loss(setup: TaskSetup, params, embeddings, batch):
    """(loss sum, count) of a sentence encoder's embeddings [batch, texts, hidden] under `setup.sentence`."""
    s, weights = setup.sentence, batch["example_weights"]
    if s.loss == "multiple_negatives_ranking":
        return sentence_losses.multiple_negatives_ranking(embeddings, batch["example_weights"], scale=s.scale,
                                                          symmetric=bool(s.symmetric))
    if s.loss == "cosent":
        return sentence_losses.cosent(embeddings, batch["labels"], weights, scale=s.scale)
    if s.loss == "cosine_similarity":
        return sentence_losses.cosine_similarity(embeddings, batch["labels"], weights)
    return _cross_entropy_sums(nnx.merge(setup.graphdef, params).classify(embeddings), batch["labels"], weights)


def _sentence_value_and_grad(setup: TaskSetup, params, batch, dropout_key):
    """Loss and gradients of a sentence encoder: plain, or by gradient caching in `gradient_cache_chunks`."""
    inputs = {name: batch[name] for name in MODEL_INPUTS}

    def embed(p, rows, chunk_index):
        key = jax.random.fold_in(dropout_key, chunk_index)
        return nnx.merge(setup.graphdef, p)(*(rows[name] for name in MODEL_INPUTS), deterministic=False,
                                            rngs=nnx.Rngs(dropout=key))

    def loss_of_embeddings(embeddings, p):
        loss_sum, count = _sentence_loss(setup, p, embeddings, batch)
        return loss_sum / jnp.maximum(count, 1.0)

    chunks = int(setup.sentence.gradient_cache_chunks)
    if chunks > 1:
        return sentence_losses.cached_value_and_grad(embed, loss_of_embeddings, params, inputs, chunks)
    return jax.value_and_grad(lambda p: loss_of_embeddings(embed(p, inputs, 0), p))(params)


def make_train_step(setup: TaskSetup, mesh):
    """The jitted `train_step(state, batch) -> (state, metrics)`; dropout keys from (seed, step).

    As in pretraining, a step whose loss or gradient is not finite changes nothing but the step count
    and says so in `metrics["nonfinite"]`.
    """

    def train_step(state: TrainState, batch):
        dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def loss_fn(params):
            logits = _logits(setup, params, batch, deterministic=False, dropout_key=dropout_key)
            loss_sum, count = task_loss(setup.kind, logits, batch)
            return loss_sum / jnp.maximum(count, 1.0)

        if setup.sentence is not None:
            loss, grads = _sentence_value_and_grad(setup, state.params, batch, dropout_key)
        else:
            loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = setup.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        params, opt_state = keep_if_finite(finite, (params, opt_state), (state.params, state.opt_state))
        metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": setup.schedule(state.step),
                   "nonfinite": (~finite).astype(jnp.int32)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(train_step, in_shardings=(setup.state_sharding, parallel.batch_sharding(mesh)),
                   out_shardings=(setup.state_sharding, parallel.replicated(mesh)), donate_argnums=(0,))


def make_predict_step(setup: TaskSetup, mesh):
    """The jitted `predict_step(params, batch) -> logits` (no dropout), gathered on every process."""

    def predict_step(params, batch):
        return _logits(setup, params, batch, deterministic=True)

    return jax.jit(predict_step, in_shardings=(setup.state_sharding.params, parallel.batch_sharding(mesh)),
                   out_shardings=parallel.replicated(mesh))
