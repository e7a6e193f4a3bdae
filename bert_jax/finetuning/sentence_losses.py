"""Sentence-embedding losses on pooled embeddings (Sentence-BERT and its successors), and gradient caching.

Every loss takes the embeddings of the whole global batch. Inside a jitted step the batch is sharded over
the mesh, so `anchors @ candidates.T` is computed over the *global* batch: the in-batch negatives of
MultipleNegativesRanking come from every device and process (XLA inserts the all-gathers), which is what
sentence-transformers needs a cached-gradient loss and many GPUs to approach. Rows with weight 0 (the
padding of a last batch) are neither queries nor candidates.

`cached_value_and_grad` is the memory-bounded form for very large batches (Gao et al. 2021, GradCache):
embeddings are computed chunk by chunk without keeping activations, the loss and its gradient with respect
to the embeddings are computed on all of them at once, and each chunk's forward pass is then re-run under
`jax.vjp` to push that gradient into the parameters: the same gradients as the plain loss, with activation
memory of one chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bert_jax.model.pooling import normalize

LOSSES = ("multiple_negatives_ranking", "cosent", "cosine_similarity", "softmax")
_NEG = -1e9


def _cross_entropy_rows(scores: jax.Array) -> jax.Array:
    """-log softmax(scores[i])[i] for each row i of a [B, C >= B] score matrix."""
    return jax.nn.logsumexp(scores, axis=-1) - jnp.diagonal(scores[:, :scores.shape[0]])


def multiple_negatives_ranking(embeddings: jax.Array, weights: jax.Array, *, scale: float = 20.0,
                               symmetric: bool = False) -> tuple[jax.Array, jax.Array]:
    """InfoNCE with in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss).

    embeddings [B, K, H]: row i's anchor, its positive and K-2 hard negatives. Anchor i must pick its own
    positive among every positive and hard negative of the batch: cross-entropy over scale * cos(anchor_i,
    candidate). `symmetric` averages it with each positive picking its anchor among the anchors
    (MultipleNegativesSymmetricRankingLoss). Returns (weighted loss sum, weight sum).
    """
    batch, num_texts, _ = embeddings.shape
    unit = normalize(embeddings.astype(jnp.float32))
    anchors = unit[:, 0]  # [B, H]
    candidates = jnp.swapaxes(unit[:, 1:], 0, 1).reshape((num_texts - 1) * batch, -1)  # positives first
    live = jnp.tile(weights > 0, num_texts - 1)  # [(K-1) B]: padded rows are no one's candidates
    scores = jnp.where(live[None, :], scale * anchors @ candidates.T, _NEG)  # [B, (K-1) B]
    loss = _cross_entropy_rows(scores)
    if symmetric:
        backward = jnp.where((weights > 0)[None, :], scale * unit[:, 1] @ anchors.T, _NEG)  # [B, B]
        loss = (loss + _cross_entropy_rows(backward)) / 2
    return jnp.sum(loss * weights), jnp.sum(weights)


def cosine_scores(embeddings: jax.Array) -> jax.Array:
    """embeddings [B, 2, H] -> cos(u_i, v_i) [B]."""
    unit = normalize(embeddings.astype(jnp.float32))
    return jnp.sum(unit[:, 0] * unit[:, 1], axis=-1)


def cosent(embeddings: jax.Array, scores: jax.Array, weights: jax.Array, *,
           scale: float = 20.0) -> tuple[jax.Array, jax.Array]:
    """CoSENT (Su 2022): log(1 + sum over pairs (i, j) with gold_i > gold_j of exp(scale (cos_j - cos_i))).

    A ranking loss over the whole batch, so it returns (loss, 1).
    """
    cos = scale * cosine_scores(embeddings)
    live = weights > 0
    ordered = (scores[:, None] > scores[None, :]) & live[:, None] & live[None, :]  # [i, j]: gold_i > gold_j
    terms = jnp.where(ordered, cos[None, :] - cos[:, None], -jnp.inf).reshape(-1)
    return jax.nn.logsumexp(jnp.concatenate([jnp.zeros((1,), jnp.float32), terms])), jnp.float32(1.0)


def cosine_similarity(embeddings: jax.Array, scores: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Squared error between cos(u, v) and the gold score (sentence-transformers' CosineSimilarityLoss)."""
    return jnp.sum(jnp.square(cosine_scores(embeddings) - scores) * weights), jnp.sum(weights)


def cached_value_and_grad(embed: Callable, loss_of_embeddings: Callable, params, inputs, num_chunks: int):
    """(loss, d loss / d params) of `loss_of_embeddings(embed(params, inputs), params)`, one chunk of rows at a
    time (the loss may use parameters of its own, such as a classifier on the embeddings).

    embed(params, chunk_inputs, chunk_index) -> embeddings of the chunk's rows; inputs: a pytree of arrays
    whose leading axis (rows) divides by `num_chunks`. Chunk k holds rows k, k + n, k + 2n, ... so that a
    batch sharded over devices keeps every device busy in every chunk. The chunk index lets `embed` draw the
    same dropout in both passes.
    """
    def chunked(x):
        return jnp.swapaxes(x.reshape(-1, num_chunks, *x.shape[1:]), 0, 1)  # [n, rows / n, ...]

    def unchunked(x):
        return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])

    chunks = jax.tree.map(chunked, inputs)
    indices = jnp.arange(num_chunks)
    frozen = jax.lax.stop_gradient(params)
    embeddings = jax.lax.map(lambda xs: embed(frozen, *xs), (chunks, indices))  # no activations kept
    loss, (embedding_grads, direct) = jax.value_and_grad(loss_of_embeddings, argnums=(0, 1))(
        unchunked(embeddings), params)
    embedding_grads = chunked(embedding_grads)

    def accumulate(total, xs):
        chunk, index, grads = xs
        _, pull_back = jax.vjp(lambda p: embed(p, chunk, index), params)
        return jax.tree.map(jnp.add, total, pull_back(grads)[0]), None

    grads, _ = jax.lax.scan(accumulate, direct, (chunks, indices, embedding_grads))
    return loss, grads
