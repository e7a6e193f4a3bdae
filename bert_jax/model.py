"""The BERT encoder in Flax NNX: embeddings, post-LN transformer layers, pooler.

Follows google-research/bert `modeling.py` and HF's `BertModel` (so that parameter counts and, later,
weights match them), with names from the paper. Pure computation: no flags, files or logging here.
Parameters are float32; `dtype` is the compute dtype of the matmuls (bfloat16 on accelerators), while
LayerNorm statistics and the attention softmax always run in float32.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

_NEG_INF = -1e9  # additive attention bias for padding; finite so fully padded rows stay NaN-free


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Encoder hyper-parameters with the names of the BERT paper and HF's BertConfig."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    dtype: str = "float32"

    @classmethod
    def from_config(cls, model_config) -> "BertConfig":
        """Builds it from `config.model` (a ConfigDict or dict), ignoring fields it does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(model_config).items() if k in names})

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


def get_activation(name: str):
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown hidden_act {name!r}")


def make_dense(config: BertConfig, in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        in_features, out_features, dtype=config.compute_dtype,
        kernel_init=nnx.initializers.truncated_normal(config.initializer_range), rngs=rngs)


def make_layer_norm(config: BertConfig, features: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(features, epsilon=config.layer_norm_eps, dtype=jnp.float32, rngs=rngs)


class BertEmbeddings(nnx.Module):
    """Word + learned position + segment (token type) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(config.initializer_range)
        self.word_embeddings = nnx.Embed(config.vocab_size, config.hidden_size, embedding_init=init, rngs=rngs)
        self.position_embeddings = nnx.Embed(
            config.max_position_embeddings, config.hidden_size, embedding_init=init, rngs=rngs)
        self.token_type_embeddings = nnx.Embed(
            config.type_vocab_size, config.hidden_size, embedding_init=init, rngs=rngs)
        self.layer_norm = make_layer_norm(config, config.hidden_size, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.dtype = config.compute_dtype

    def __call__(self, input_ids, segment_ids, *, deterministic: bool, rngs: nnx.Rngs | None):
        seq_length = input_ids.shape[1]
        # [batch, seq, hidden]
        embeddings = (self.word_embeddings(input_ids)
                      + self.position_embeddings(jnp.arange(seq_length))[None]
                      + self.token_type_embeddings(segment_ids))
        embeddings = self.layer_norm(embeddings)
        return self.dropout(embeddings, deterministic=deterministic, rngs=rngs).astype(self.dtype)


class BertSelfAttention(nnx.Module):
    """Multi-head self-attention with an additive padding mask, and its output projection."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden // config.num_attention_heads
        self.query = make_dense(config, hidden, hidden, rngs)
        self.key = make_dense(config, hidden, hidden, rngs)
        self.value = make_dense(config, hidden, hidden, rngs)
        self.output = make_dense(config, hidden, hidden, rngs)
        self.dropout = nnx.Dropout(config.attention_probs_dropout_prob)

    def __call__(self, hidden_states, attention_bias, *, deterministic: bool, rngs: nnx.Rngs | None):
        batch, seq_length, _ = hidden_states.shape
        split = lambda x: x.reshape(batch, seq_length, self.num_heads, self.head_dim)
        query = split(self.query(hidden_states))  # [batch, seq, heads, head_dim]
        key = split(self.key(hidden_states))
        value = split(self.value(hidden_states))
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        scores = scores / jnp.sqrt(jnp.float32(self.head_dim)) + attention_bias  # [batch, heads, q, k]
        probs = jax.nn.softmax(scores, axis=-1)
        probs = self.dropout(probs, deterministic=deterministic, rngs=rngs).astype(value.dtype)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, value)  # [batch, seq, heads, head_dim]
        return self.output(context.reshape(batch, seq_length, self.num_heads * self.head_dim))


class BertLayer(nnx.Module):
    """One post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.attention = BertSelfAttention(config, rngs=rngs)
        self.attention_layer_norm = make_layer_norm(config, config.hidden_size, rngs)
        self.intermediate = make_dense(config, config.hidden_size, config.intermediate_size, rngs)
        self.output = make_dense(config, config.intermediate_size, config.hidden_size, rngs)
        self.output_layer_norm = make_layer_norm(config, config.hidden_size, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.activation = get_activation(config.hidden_act)
        self.dtype = config.compute_dtype

    def __call__(self, hidden_states, attention_bias, *, deterministic: bool, rngs: nnx.Rngs | None):
        attention_output = self.attention(hidden_states, attention_bias, deterministic=deterministic, rngs=rngs)
        attention_output = self.dropout(attention_output, deterministic=deterministic, rngs=rngs)
        hidden_states = self.attention_layer_norm(hidden_states + attention_output).astype(self.dtype)
        intermediate = self.activation(self.intermediate(hidden_states))  # [batch, seq, intermediate]
        layer_output = self.dropout(self.output(intermediate), deterministic=deterministic, rngs=rngs)
        return self.output_layer_norm(hidden_states + layer_output).astype(self.dtype)


class BertPooler(nnx.Module):
    """tanh(dense(hidden state of [CLS])): the sentence-level representation for pair/task heads."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.dense = make_dense(config, config.hidden_size, config.hidden_size, rngs)

    def __call__(self, sequence_output):
        return jnp.tanh(self.dense(sequence_output[:, 0]))  # [batch, hidden]


def attention_bias_from_mask(attention_mask: jax.Array) -> jax.Array:
    """[batch, seq] 1/0 mask -> [batch, 1, 1, seq] float32 additive bias that hides padding keys."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, _NEG_INF).astype(jnp.float32)


class BertModel(nnx.Module):
    """The encoder: embeddings, `num_hidden_layers` transformer layers and the pooler (HF's BertModel)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.layers = nnx.List([BertLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)])
        self.pooler = BertPooler(config, rngs=rngs)

    def __call__(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """input_ids, segment_ids, attention_mask: [batch, seq] ints.

        Returns (sequence_output [batch, seq, hidden], pooled_output [batch, hidden]).
        """
        hidden_states = self.embeddings(input_ids, segment_ids, deterministic=deterministic, rngs=rngs)
        attention_bias = attention_bias_from_mask(attention_mask)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_bias, deterministic=deterministic, rngs=rngs)
        return hidden_states, self.pooler(hidden_states)
