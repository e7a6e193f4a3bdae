"""Pretraining losses and accuracy metrics, in float32 whatever the compute dtype.

Every metric is returned as a (sum, count) pair so that values can be added over steps, devices and
evaluation batches before dividing: a mean of per-batch means would weigh a half-empty batch wrongly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array):
    """logits [..., classes], labels [...] int, weights [...] -> (sum of weighted losses, sum of weights)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * weights), jnp.sum(weights)


def weighted_correct(logits: jax.Array, labels: jax.Array, weights: jax.Array):
    """(sum of weights where argmax == label, sum of weights)."""
    return jnp.sum((jnp.argmax(logits, axis=-1) == labels) * weights), jnp.sum(weights)


def pretraining_sums(mlm_logits, masked_lm_ids, masked_lm_weights, nsp_logits, next_sentence_labels,
                     example_weights) -> dict[str, jax.Array]:
    """The additive statistics behind every pretraining metric of a batch.

    mlm_logits [batch, P, vocab], masked_lm_ids / masked_lm_weights [batch, P], nsp_logits [batch, 2],
    next_sentence_labels [batch], example_weights [batch] (0 for padding rows of an evaluation batch).
    """
    mlm_weights = masked_lm_weights * example_weights[:, None]
    mlm_loss_sum, mlm_count = weighted_cross_entropy(mlm_logits, masked_lm_ids, mlm_weights)
    mlm_correct, _ = weighted_correct(mlm_logits, masked_lm_ids, mlm_weights)
    nsp_loss_sum, nsp_count = weighted_cross_entropy(nsp_logits, next_sentence_labels, example_weights)
    nsp_correct, _ = weighted_correct(nsp_logits, next_sentence_labels, example_weights)
    return {"mlm_loss_sum": mlm_loss_sum, "mlm_correct": mlm_correct, "mlm_count": mlm_count,
            "nsp_loss_sum": nsp_loss_sum, "nsp_correct": nsp_correct, "nsp_count": nsp_count}


def pretraining_loss(sums: dict[str, jax.Array]) -> jax.Array:
    """BERT's loss: mean MLM cross-entropy over predicted positions + mean NSP cross-entropy."""
    mlm_loss = sums["mlm_loss_sum"] / jnp.maximum(sums["mlm_count"], 1.0)
    nsp_loss = sums["nsp_loss_sum"] / jnp.maximum(sums["nsp_count"], 1.0)
    return mlm_loss + nsp_loss


def summarize(sums: dict) -> dict[str, float]:
    """Turns accumulated sums (host floats) into the reported metrics."""
    mlm_count = max(float(sums["mlm_count"]), 1.0)
    nsp_count = max(float(sums["nsp_count"]), 1.0)
    mlm_loss = float(sums["mlm_loss_sum"]) / mlm_count
    nsp_loss = float(sums["nsp_loss_sum"]) / nsp_count
    return {"loss": mlm_loss + nsp_loss, "mlm_loss": mlm_loss, "mlm_accuracy": float(sums["mlm_correct"]) / mlm_count,
            "nsp_loss": nsp_loss, "nsp_accuracy": float(sums["nsp_correct"]) / nsp_count}
