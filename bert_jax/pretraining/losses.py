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


def pair_task(objective: str) -> str | None:
    """'nsp' for mlm_nsp, 'sop' for mlm_sop, None for mlm: the prefix of the pair metrics."""
    return {"mlm_nsp": "nsp", "mlm_sop": "sop"}.get(objective)


def pretraining_sums(mlm_logits, masked_lm_ids, masked_lm_weights, pair_logits, next_sentence_labels,
                     example_weights, pair: str | None = "nsp", pair_weights=None, languages=None,
                     num_languages: int = 0) -> dict[str, jax.Array]:
    """The additive statistics behind every pretraining metric of a batch.

    mlm_logits [batch, P, vocab], masked_lm_ids / masked_lm_weights [batch, P], example_weights [batch]
    (0 for padding rows of an evaluation batch). `pair` names the pair task ('nsp' / 'sop') in the keys;
    None: no pair task, pair_logits is None. Unpacked rows: pair_logits [batch, 2], next_sentence_labels
    [batch]. Packed rows: pair_logits [batch, K, 2], next_sentence_labels and pair_weights [batch, K]
    (1 for a real instance, 0 for an empty slot), so each instance counts once, as it would unpacked.
    `languages` int [batch] (ids below `num_languages`): the MLM sums are also split by language, as
    float32 [num_languages] arrays `mlm_{loss_sum,correct,count}_by_language`, from the same logits.
    """
    mlm_weights = masked_lm_weights * example_weights[:, None]
    mlm_loss_sum, mlm_count = weighted_cross_entropy(mlm_logits, masked_lm_ids, mlm_weights)
    mlm_correct, _ = weighted_correct(mlm_logits, masked_lm_ids, mlm_weights)
    sums = {"mlm_loss_sum": mlm_loss_sum, "mlm_correct": mlm_correct, "mlm_count": mlm_count}
    if languages is not None and num_languages:
        sums.update(mlm_sums_by_language(mlm_logits, masked_lm_ids, mlm_weights, languages, num_languages))
    if pair is not None:
        if pair_logits.shape[:-1] != next_sentence_labels.shape:
            raise ValueError(f"pair logits {pair_logits.shape} do not match next_sentence_labels "
                             f"{next_sentence_labels.shape}: packed batches ([batch, K] labels) need the model "
                             "called with pair_positions, unpacked ones ([batch] labels) without.")
        weights = example_weights
        if next_sentence_labels.ndim == 2:
            if pair_weights is None:
                raise ValueError("packed next_sentence_labels [batch, K] need pair_weights [batch, K] (1 for a "
                                 "real instance, 0 for an empty slot).")
            weights = example_weights[:, None] * pair_weights  # [batch, K]
        pair_loss_sum, pair_count = weighted_cross_entropy(pair_logits, next_sentence_labels, weights)
        pair_correct, _ = weighted_correct(pair_logits, next_sentence_labels, weights)
        sums.update({f"{pair}_loss_sum": pair_loss_sum, f"{pair}_correct": pair_correct, f"{pair}_count": pair_count})
    return sums


def span_boundary_sums(sbo_logits: jax.Array, masked_lm_ids: jax.Array, sbo_weights: jax.Array,
                       example_weights: jax.Array) -> dict[str, jax.Array]:
    """SpanBERT's span-boundary statistics: sbo_logits [batch, P, vocab] against the MLM labels
    masked_lm_ids [batch, P], weighted by the slots' SBO weights [batch, P] (`span_boundary.SpanBoundaries`)
    and example_weights [batch]. The loss adds their mean to the MLM mean, SpanBERT's pair_loss_weight 1."""
    weights = sbo_weights * example_weights[:, None]
    loss_sum, count = weighted_cross_entropy(sbo_logits, masked_lm_ids, weights)
    correct, _ = weighted_correct(sbo_logits, masked_lm_ids, weights)
    return {"sbo_loss_sum": loss_sum, "sbo_correct": correct, "sbo_count": count}


def mlm_sums_by_language(mlm_logits, masked_lm_ids, mlm_weights, languages, num_languages: int) -> dict[str, jax.Array]:
    """MLM loss, correct and count sums per language: float32 [num_languages] each, for logits [batch, P,
    vocab], ids and weights [batch, P], languages int [batch]. Named `*_by_language`, never `*_count`, so
    no loss or pooled train metric takes them for a term of its own."""
    log_probs = jax.nn.log_softmax(mlm_logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, masked_lm_ids[..., None], axis=-1)[..., 0]  # [batch, P]
    correct = (jnp.argmax(mlm_logits, axis=-1) == masked_lm_ids).astype(jnp.float32)  # [batch, P]
    one_hot = jax.nn.one_hot(languages, num_languages, dtype=jnp.float32)  # [batch, languages]
    per_language = lambda values: jnp.einsum("bp,bl->l", values * mlm_weights, one_hot)
    return {"mlm_loss_sum_by_language": per_language(nll), "mlm_correct_by_language": per_language(correct),
            "mlm_count_by_language": per_language(jnp.ones_like(nll))}


def summarize_languages(sums: dict, languages) -> dict[str, float]:
    """`mlm_accuracy/<language>` and `mlm_loss/<language>` from summed `*_by_language` arrays, for each of
    `languages` (the names of the ids) with masked tokens in the sums."""
    if "mlm_count_by_language" not in sums:
        return {}
    metrics = {}
    for index, language in enumerate(languages):
        count = float(sums["mlm_count_by_language"][index])
        if count > 0:
            metrics[f"mlm_accuracy/{language}"] = float(sums["mlm_correct_by_language"][index]) / count
            metrics[f"mlm_loss/{language}"] = float(sums["mlm_loss_sum_by_language"][index]) / count
    return metrics


def replaced_token_sums(logits: jax.Array, is_replaced: jax.Array, weights: jax.Array,
                        rtd_weight: float) -> dict[str, jax.Array]:
    """ELECTRA's replaced-token detection statistics: sigmoid cross-entropy of the discriminator's logits.

    logits [batch, seq] (> 0: replaced), is_replaced [batch, seq] 0/1, weights [batch, seq] (1 for real tokens,
    0 for padding). `rtd_weighted_loss_sum` is rtd_weight * rtd_loss_sum, so that the total loss
    (generator MLM + lambda * RTD) stays a function of additive sums.
    """
    logits, labels = logits.astype(jnp.float32), is_replaced.astype(jnp.float32)
    # log(1 + exp(-|x|)) + max(x, 0) - x * z: the stable form of -z log sigmoid(x) - (1 - z) log sigmoid(-x)
    losses = jnp.maximum(logits, 0.0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    loss_sum = jnp.sum(losses * weights)
    return {"rtd_loss_sum": loss_sum, "rtd_weighted_loss_sum": rtd_weight * loss_sum,
            "rtd_correct": jnp.sum(((logits > 0) == (labels > 0)) * weights), "rtd_count": jnp.sum(weights),
            "rtd_replaced_count": jnp.sum(labels * weights)}


def _pair_prefixes(sums) -> list[str]:
    """The terms added to the loss with weight 1, each reported as <prefix>_loss and <prefix>_accuracy: the
    pair task's ('nsp', 'sop') and SpanBERT's span-boundary objective ('sbo')."""
    return [name[: -len("_count")] for name in sums if name.endswith("_count") and not name.startswith("distill_")
            and name not in ("mlm_count", "rtd_count", "rtd_replaced_count")]


def _distill_terms(sums) -> list[str]:
    """The distillation terms of `sums` (each distill_<term>_loss_sum / _count / _weight)."""
    return [name[len("distill_"):-len("_count")] for name in sums
            if name.startswith("distill_") and name.endswith("_count")]


def pretraining_loss(sums: dict[str, jax.Array]) -> jax.Array:
    """BERT's loss: mean MLM cross-entropy over predicted positions + mean pair (NSP/SOP) cross-entropy.
    SpanBERT's: mean MLM cross-entropy + mean span-boundary (SBO) cross-entropy over the same positions.
    ELECTRA's: the generator's mean MLM cross-entropy + lambda * the mean replaced-token detection loss.
    Distillation's: mlm_weight * the student's MLM loss + the sum of each term's weight * its mean."""
    loss = sums.get("mlm_weight", 1.0) * sums["mlm_loss_sum"] / jnp.maximum(sums["mlm_count"], 1.0)
    for term in _distill_terms(sums):
        loss = loss + sums[f"distill_{term}_weight"] * sums[f"distill_{term}_loss_sum"] / jnp.maximum(
            sums[f"distill_{term}_count"], 1.0)
    for prefix in _pair_prefixes(sums):
        loss = loss + sums[f"{prefix}_loss_sum"] / jnp.maximum(sums[f"{prefix}_count"], 1.0)
    if "rtd_count" in sums:
        loss = loss + sums["rtd_weighted_loss_sum"] / jnp.maximum(sums["rtd_count"], 1.0)
    return loss


def summarize(sums: dict) -> dict[str, float]:
    """Turns accumulated sums (host floats) into the reported metrics (loss, mlm_*, and nsp_*/sop_*/sbo_*; for
    ELECTRA mlm_* are the generator's, plus rtd_loss, rtd_accuracy and replaced_fraction: the share of
    real tokens that differ from the original)."""
    mlm_count = max(float(sums["mlm_count"]), 1.0)
    metrics = {"mlm_loss": float(sums["mlm_loss_sum"]) / mlm_count,
               "mlm_accuracy": float(sums["mlm_correct"]) / mlm_count}
    loss = metrics["mlm_loss"]
    for prefix in _pair_prefixes(sums):
        count = max(float(sums[f"{prefix}_count"]), 1.0)
        metrics[f"{prefix}_loss"] = float(sums[f"{prefix}_loss_sum"]) / count
        metrics[f"{prefix}_accuracy"] = float(sums[f"{prefix}_correct"]) / count
        loss += metrics[f"{prefix}_loss"]
    if "rtd_count" in sums:
        count = max(float(sums["rtd_count"]), 1.0)
        metrics.update({"rtd_loss": float(sums["rtd_loss_sum"]) / count,
                        "rtd_accuracy": float(sums["rtd_correct"]) / count,
                        "replaced_fraction": float(sums["rtd_replaced_count"]) / count})
        loss += float(sums["rtd_weighted_loss_sum"]) / count
    for term in _distill_terms(sums):  # each term's mean; the weighted total is the train step's `loss`
        metrics[f"distill_{term}"] = float(sums[f"distill_{term}_loss_sum"]) / max(float(sums[f"distill_{term}_count"]), 1.0)
    return {"loss": loss, **metrics}
