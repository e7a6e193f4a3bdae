"""Pretraining heads on top of the encoder: masked LM (tied, gathered) and next-sentence prediction.

As in google-research/bert, the MLM head gathers the masked positions *before* the vocabulary projection,
so the [*, vocab] matmul runs on ~20 positions per sequence instead of all of them: on BERT-mini that
projection is most of the step's FLOPs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax import model as model_lib


def gather_positions(sequence_output: jax.Array, positions: jax.Array) -> jax.Array:
    """sequence_output [batch, seq, hidden], positions [batch, num_masked] -> [batch, num_masked, hidden]."""
    return jnp.take_along_axis(sequence_output, positions[:, :, None], axis=1)


class MaskedLMHead(nnx.Module):
    """dense + activation + LayerNorm, then logits against the word embeddings (tied) plus a bias."""

    def __init__(self, config: model_lib.BertConfig, *, rngs: nnx.Rngs):
        self.dense = model_lib.make_dense(config, config.hidden_size, config.hidden_size, rngs)
        self.layer_norm = model_lib.make_layer_norm(config, config.hidden_size, rngs)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.float32))
        self.activation = model_lib.get_activation(config.hidden_act)
        self.dtype = config.compute_dtype

    def __call__(self, sequence_output, masked_positions, word_embeddings: nnx.Embed):
        """Returns MLM logits [batch, num_masked, vocab] in float32."""
        hidden = gather_positions(sequence_output, masked_positions)  # [batch, num_masked, hidden]
        hidden = self.layer_norm(self.activation(self.dense(hidden))).astype(self.dtype)
        embedding = word_embeddings.embedding[...].astype(self.dtype)  # [vocab, hidden]
        logits = jnp.einsum("bph,vh->bpv", hidden, embedding, preferred_element_type=jnp.float32)
        return logits + self.bias[...]


class PairClassificationHead(nnx.Module):
    """Two-way classifier on the pooled [CLS] output: NSP (0 = IsNext, 1 = NotNext)."""

    def __init__(self, config: model_lib.BertConfig, *, rngs: nnx.Rngs):
        self.dense = model_lib.make_dense(config, config.hidden_size, 2, rngs)

    def __call__(self, pooled_output):
        return self.dense(pooled_output).astype(jnp.float32)  # [batch, 2]


class BertForPreTraining(nnx.Module):
    """Encoder + MLM head + NSP head (HF's BertForPreTraining layout)."""

    def __init__(self, config: model_lib.BertConfig, *, rngs: nnx.Rngs):
        self.bert = model_lib.BertModel(config, rngs=rngs)
        self.mlm_head = MaskedLMHead(config, rngs=rngs)
        self.nsp_head = PairClassificationHead(config, rngs=rngs)

    def __call__(self, input_ids, segment_ids, attention_mask, masked_positions, *,
                 deterministic: bool = True, rngs: nnx.Rngs | None = None):
        """Returns (mlm_logits [batch, num_masked, vocab], nsp_logits [batch, 2]), both float32."""
        sequence_output, pooled_output = self.bert(
            input_ids, segment_ids, attention_mask, deterministic=deterministic, rngs=rngs)
        mlm_logits = self.mlm_head(sequence_output, masked_positions, self.bert.embeddings.word_embeddings)
        return mlm_logits, self.nsp_head(pooled_output)
