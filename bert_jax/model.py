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
    embedding_size: int = 0  # ALBERT's factorized embeddings; 0 = hidden_size (no factorization)
    num_hidden_groups: int = 0  # ALBERT's cross-layer sharing; 0 = every layer has its own weights

    @classmethod
    def from_config(cls, model_config) -> "BertConfig":
        """Builds it from `config.model` (a ConfigDict or dict), ignoring fields it does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(model_config).items() if k in names})

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def embedding_width(self) -> int:
        """Width of the embedding tables: `embedding_size` when factorized, else `hidden_size`."""
        return self.embedding_size or self.hidden_size

    @property
    def factorized(self) -> bool:
        return self.embedding_width != self.hidden_size


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
    """Word + learned position + segment (token type) embeddings, then LayerNorm and dropout.

    With ALBERT's factorization the tables are `embedding_size` (E) wide and a dense layer projects
    them to `hidden_size` (H): V*E + E*H parameters instead of V*H.
    """

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(config.initializer_range)
        width = config.embedding_width
        self.word_embeddings = nnx.Embed(config.vocab_size, width, embedding_init=init, rngs=rngs)
        self.position_embeddings = nnx.Embed(config.max_position_embeddings, width, embedding_init=init, rngs=rngs)
        self.token_type_embeddings = nnx.Embed(config.type_vocab_size, width, embedding_init=init, rngs=rngs)
        self.layer_norm = make_layer_norm(config, width, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.projection = make_dense(config, width, config.hidden_size, rngs) if config.factorized else None
        self.dtype = config.compute_dtype

    def __call__(self, input_ids, segment_ids, *, deterministic: bool, rngs: nnx.Rngs | None):
        seq_length = input_ids.shape[1]
        # [batch, seq, embedding_width]
        embeddings = (self.word_embeddings(input_ids)
                      + self.position_embeddings(jnp.arange(seq_length))[None]
                      + self.token_type_embeddings(segment_ids))
        embeddings = self.layer_norm(embeddings)
        embeddings = self.dropout(embeddings, deterministic=deterministic, rngs=rngs).astype(self.dtype)
        if self.projection is not None:
            embeddings = self.projection(embeddings)  # [batch, seq, hidden]
        return embeddings


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


class SharedLayerGroup(nnx.Module):
    """ALBERT's cross-layer sharing: one layer's weights applied `num_repeats` times in a row.

    The repeats run in `jax.lax.scan`, so XLA compiles the layer once whatever the depth: compile time
    does not grow with `num_hidden_layers` when weights are shared.
    """

    def __init__(self, config: BertConfig, num_repeats: int, *, rngs: nnx.Rngs):
        self.layer = BertLayer(config, rngs=rngs)
        self.num_repeats = num_repeats

    def __call__(self, hidden_states, attention_bias, *, deterministic: bool, rngs: nnx.Rngs | None,
                 collect: bool = False):
        """The group's output; with `collect`, also each repeat's output [num_repeats, batch, seq, hidden]."""
        graphdef, state = nnx.split(self.layer)
        # One dropout key per repeat, so repeated applications do not reuse the same dropout masks.
        keys = (jnp.zeros((self.num_repeats,), jnp.uint32) if deterministic
                else jax.random.split(rngs.dropout(), self.num_repeats))

        def body(carry, key):
            layer = nnx.merge(graphdef, state)
            layer_rngs = None if deterministic else nnx.Rngs(dropout=key)
            output = layer(carry, attention_bias, deterministic=deterministic, rngs=layer_rngs)
            return output, (output if collect else None)

        hidden_states, per_repeat = jax.lax.scan(body, hidden_states, keys)
        return (hidden_states, per_repeat) if collect else hidden_states


class BertModel(nnx.Module):
    """The encoder: embeddings, `num_hidden_layers` transformer layers and the pooler (HF's BertModel).

    Without sharing the layers are `layers.0 .. layers.{L-1}`. With ALBERT sharing
    (`num_hidden_groups` = G > 0) they are `layer_groups.0 .. layer_groups.{G-1}`, each applied L/G
    times in a row (HF's `int(i / (L / G))` assignment). `add_pooling_layer=False` drops the pooler for
    objectives without a pair head (RoBERTa's MLM), so no parameter goes unused.
    """

    def __init__(self, config: BertConfig, *, add_pooling_layer: bool = True, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        if config.num_hidden_groups:
            repeats = config.num_hidden_layers // config.num_hidden_groups
            self.layer_groups = nnx.List([SharedLayerGroup(config, repeats, rngs=rngs)
                                          for _ in range(config.num_hidden_groups)])
        else:
            self.layers = nnx.List([BertLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)])
        self.pooler = BertPooler(config, rngs=rngs) if add_pooling_layer else None

    def __call__(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """input_ids, segment_ids, attention_mask: [batch, seq] ints.

        Returns (sequence_output [batch, seq, hidden], pooled_output [batch, hidden] or None).
        """
        hidden_states = self.embeddings(input_ids, segment_ids, deterministic=deterministic, rngs=rngs)
        attention_bias = attention_bias_from_mask(attention_mask)
        blocks = self.layer_groups if self.config.num_hidden_groups else self.layers
        for block in blocks:
            hidden_states = block(hidden_states, attention_bias, deterministic=deterministic, rngs=rngs)
        pooled_output = self.pooler(hidden_states) if self.pooler is not None else None
        return hidden_states, pooled_output

    def all_hidden_states(self, input_ids, segment_ids, attention_mask) -> list[jax.Array]:
        """[embedding output, layer 1 output, ..., layer L output], each [batch, seq, hidden] (no dropout).

        For feature extraction (the BERT paper's feature-based NER concatenates the last four).
        """
        hidden_states = self.embeddings(input_ids, segment_ids, deterministic=True, rngs=None)
        attention_bias = attention_bias_from_mask(attention_mask)
        outputs = [hidden_states]
        if self.config.num_hidden_groups:
            for group in self.layer_groups:
                hidden_states, per_repeat = group(hidden_states, attention_bias, deterministic=True, rngs=None,
                                                  collect=True)
                outputs.extend(per_repeat[i] for i in range(per_repeat.shape[0]))
        else:
            for layer in self.layers:
                hidden_states = layer(hidden_states, attention_bias, deterministic=True, rngs=None)
                outputs.append(hidden_states)
        return outputs
