"""The BERT encoder in Flax NNX: embeddings, transformer layers, pooler.

By default the 2018 block of google-research/bert `modeling.py` and HF's `BertModel` (so that parameter
counts and weights match them), with names from the paper. The block flags of `encoder_flags.py` turn the
same modules into the 2024 encoders' blocks: pre-norm, RMSNorm, gated FFNs, rotary or ALiBi positions,
no biases, alternating local/global attention, an untied decoder (ModernBERT, NeoBERT, MosaicBERT).
Pure computation: no flags, files or logging here. Parameters are float32; `dtype` is the compute dtype
of the matmuls (bfloat16 on accelerators), while norm statistics and the attention softmax always run in
float32.

Packed rows (several instances in one row, MLPerf BERT) are told apart by `attention_mask`: 0 is
padding and k >= 1 the k-th instance of the row; with `position_ids` given, a token attends only to
the tokens of its own instance. The speed switches of `config.model` (attention kernel, layer scan,
rematerialisation) change how the same function is computed, never the parameter tree.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax import config as config_lib
from bert_jax import encoder_flags, hardware
from bert_jax.model import positions as positions_lib
from bert_jax.model import splash
from bert_jax.model.attention import (  # noqa: F401 (the encoder's attention API, also read as encoder.X)
    AttentionMask,
    additive_bias,
    attention_bias_from_mask,
    fused_attention,
    make_attention_mask,
    same_instance,
    within_window,
)

CHECKPOINT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}  # config.model.remat_policy -> what the backward pass keeps of a layer ('none': no jax.checkpoint)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Encoder hyper-parameters with the names of the BERT paper and HF's BertConfig.

    The seven fields after num_hidden_groups are the speed switches documented in `bert_jax/config.py`; none
    changes the parameters, and only matmul_dtype changes the function computed (by bf16 rounding). The sbo_*
    fields size SpanBERT's span-boundary head. The fields from norm_placement on are the block flags
    (`encoder_flags.py`; documented in config.py).
    """

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
    attention_impl: str = "xla"  # 'xla' | 'dot_product' | 'cudnn'
    vocab_pad_multiple: int = 128  # the MLM output matmul's vocabulary is padded to a multiple of this
    scan_layers: bool = False  # unshared layers in one jax.lax.scan instead of a Python loop
    remat_policy: str = "none"  # 'none' or a key of CHECKPOINT_POLICIES
    gather_masked_positions: bool = True  # the MLM head runs on the masked positions only
    matmul_dtype: str = "float32"  # 'float32' | 'bfloat16' | 'auto': operands of the dense and MLM matmuls
    fused_qkv: bool = False  # query, key and value in one matmul against their kernels concatenated
    sbo_max_span_positions: int = 15  # SpanBERT's span-boundary head: rows of its span-position table
    sbo_position_embedding_size: int = 200  # and their width
    num_languages: int = 0  # XLM's language embeddings; 0 = no table (BERT)
    norm_placement: str = "post"
    norm_kind: str = "layernorm"
    final_norm: bool = False
    embedding_norm: bool = True
    ffn_activation: str = "gelu"
    position_encoding: str = "learned"
    rope_theta: float = 10000.0
    local_rope_theta: float = 0.0
    use_bias: bool = True
    local_attention_window: int = 0
    global_attention_every_n_layers: int = 1
    tie_word_embeddings: bool = True

    def __post_init__(self):
        config_lib.check_attention_switches(self.attention_impl, self.attention_probs_dropout_prob, self.dtype)
        config_lib.check_remat_policy(self.remat_policy)
        config_lib.check_matmul_dtype(self.matmul_dtype)
        encoder_flags.validate_block(self)

    @classmethod
    def from_config(cls, model_config) -> "BertConfig":
        """Builds it from `config.model` (a ConfigDict or dict), ignoring fields it does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(model_config).items() if k in names})

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def bf16_matmuls(self) -> bool:
        """True when the dense and MLM matmuls take bf16 operands ('auto' asks `hardware` what this machine has)."""
        return hardware.resolve_matmul_dtype(self.matmul_dtype) == "bfloat16"

    @property
    def embedding_width(self) -> int:
        """Width of the embedding tables: `embedding_size` when factorized, else `hidden_size`."""
        return self.embedding_size or self.hidden_size

    @property
    def factorized(self) -> bool:
        return self.embedding_width != self.hidden_size

    @property
    def gated(self) -> bool:
        """The feed-forward layer is a GLU: its `intermediate` kernel holds the input and the gate halves."""
        return self.ffn_activation != "gelu"

    @property
    def pre_norm(self) -> bool:
        return self.norm_placement == "pre"


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
        in_features, out_features, use_bias=config.use_bias, dtype=config.compute_dtype,
        kernel_init=nnx.initializers.truncated_normal(config.initializer_range),
        dot_general=bf16_dot_general if config.bf16_matmuls else jax.lax.dot_general, rngs=rngs)


def bf16_matmul(x: jax.Array, kernel: jax.Array, *, transposed: bool = False) -> jax.Array:
    """x [..., in] @ kernel [in, out] (or kernel [out, in] transposed) -> float32 [..., out], both operands
    rounded to bf16, products summed in float32: the mixed precision of config.model.matmul_dtype='bfloat16'.

    The backward pass does the same (the cotangent rounded to bf16, float32 sums), and the gradients come
    back in the operands' dtypes: JAX's own transpose would multiply a float32 cotangent by a bf16 operand,
    which XLA runs as a float32 matmul, and would round the weight gradient to bf16. Each gradient is
    computed in its operand's own layout: XLA's CPU runtime has no bf16 x bf16 = float32 dot with a
    transposed output, which `kernel.T` outside would ask for.
    """
    return _bf16_matmul(transposed, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16),
                        jnp.zeros((0,), x.dtype), jnp.zeros((0,), kernel.dtype))


def _bf16_dot(lhs: jax.Array, rhs: jax.Array, lhs_contract, rhs_contract) -> jax.Array:
    return jax.lax.dot_general(lhs, rhs, ((tuple(lhs_contract), tuple(rhs_contract)), ((), ())),
                               preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bf16_matmul(transposed, x, kernel, x_dtype, kernel_dtype):
    """x [..., in] and kernel [in, out] ([out, in] if transposed) in bf16; x_dtype / kernel_dtype: empty
    arrays of the dtypes to return the gradients in."""
    del x_dtype, kernel_dtype
    return _bf16_dot(x, kernel, (x.ndim - 1,), (1 if transposed else 0,))


def _bf16_matmul_forward(transposed, x, kernel, x_dtype, kernel_dtype):
    return _bf16_matmul(transposed, x, kernel, x_dtype, kernel_dtype), (x, kernel, x_dtype, kernel_dtype)


def _bf16_matmul_backward(transposed, residuals, cotangent):
    x, kernel, x_dtype, kernel_dtype = residuals
    cotangent = cotangent.astype(jnp.bfloat16)  # [..., out]
    x_grad = _bf16_dot(cotangent, kernel, (cotangent.ndim - 1,), (0 if transposed else 1,))  # [..., in]
    leading = tuple(range(x.ndim - 1))
    if transposed:
        kernel_grad = _bf16_dot(cotangent, x, leading, leading)  # [out, in]
    else:
        kernel_grad = _bf16_dot(x, cotangent, leading, leading)  # [in, out]
    return (x_grad.astype(x_dtype.dtype), kernel_grad.astype(kernel_dtype.dtype),
            jnp.zeros_like(x_dtype), jnp.zeros_like(kernel_dtype))


_bf16_matmul.defvjp(_bf16_matmul_forward, _bf16_matmul_backward)


def bf16_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
    """`nnx.Linear`'s dot_general with bf16 operands (`bf16_matmul`); the result in the inputs' dtype."""
    del precision, out_sharding  # bf16 operands set the precision; the layers pass no output sharding
    if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())) or rhs.ndim != 2:
        raise ValueError(f"bf16_dot_general multiplies x [..., in] by a kernel [in, out], not {dimension_numbers}")
    return bf16_matmul(lhs, rhs).astype(preferred_element_type or lhs.dtype)


def make_norm(config: BertConfig, features: int, rngs: nnx.Rngs) -> nnx.LayerNorm | nnx.RMSNorm:
    """The block's norm (`norm_kind`), statistics in float32; RMSNorm has a scale only, LayerNorm a bias too
    unless `use_bias` is off."""
    if config.norm_kind == "rmsnorm":
        return nnx.RMSNorm(features, epsilon=config.layer_norm_eps, dtype=jnp.float32, rngs=rngs)
    return nnx.LayerNorm(features, epsilon=config.layer_norm_eps, use_bias=config.use_bias, dtype=jnp.float32,
                         rngs=rngs)


class BertEmbeddings(nnx.Module):
    """Word + learned position + segment (token type) [+ language] embeddings, then LayerNorm and dropout.

    `type_vocab_size` 0 builds no segment table (DistilBERT, ModernBERT): segment ids are then ignored.
    Rotary and ALiBi positions act inside attention, so they build no position table; `embedding_norm`
    False builds no norm (NeoBERT).
    `num_languages` n > 0 adds XLM's language table (`lang_embeddings`), n x width, to the sum before the
    LayerNorm; it is built last, so the other tables initialise as without it, and with n = 0 the module,
    its parameters and its outputs are BERT's exactly.

    With ALBERT's factorization the tables are `embedding_size` (E) wide and a dense layer projects
    them to `hidden_size` (H): V*E + E*H parameters instead of V*H.
    """

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(config.initializer_range)
        width = config.embedding_width
        self.word_embeddings = nnx.Embed(config.vocab_size, width, embedding_init=init, rngs=rngs)
        self.position_embeddings = (
            nnx.Embed(config.max_position_embeddings, width, embedding_init=init, rngs=rngs)
            if config.position_encoding == "learned" else None)
        self.token_type_embeddings = (nnx.Embed(config.type_vocab_size, width, embedding_init=init, rngs=rngs)
                                      if config.type_vocab_size else None)
        self.layer_norm = make_norm(config, width, rngs) if config.embedding_norm else None
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.projection = make_dense(config, width, config.hidden_size, rngs) if config.factorized else None
        self.dtype = config.compute_dtype
        self.language_embeddings = (nnx.Embed(config.num_languages, width, embedding_init=init, rngs=rngs)
                                    if config.num_languages else None)

    def __call__(self, input_ids, segment_ids, *, position_ids=None, language_ids=None, deterministic: bool,
                 rngs: nnx.Rngs | None):
        """position_ids [batch, seq]: each token's position in its own instance (packed rows, TLM's pairs);
        None: 0..seq-1. language_ids [batch, seq]: each token's language (with a language table only);
        None: language 0 for every token, which is what fine-tuning and prediction feed such a model."""
        embeddings = self.word_embeddings(input_ids)  # [batch, seq, embedding_width]
        if self.position_embeddings is not None:
            if position_ids is None:
                positions = self.position_embeddings(jnp.arange(input_ids.shape[1]))[None]  # [1, seq, width]
            else:
                positions = self.position_embeddings(position_ids)  # [batch, seq, width]
            embeddings = embeddings + positions
        if self.token_type_embeddings is not None:
            embeddings = embeddings + self.token_type_embeddings(segment_ids)
        if self.language_embeddings is not None:
            if language_ids is None:
                embeddings = embeddings + self.language_embeddings.embedding[0]
            else:
                embeddings = embeddings + self.language_embeddings(language_ids)
        if self.layer_norm is not None:
            embeddings = self.layer_norm(embeddings)
        embeddings = self.dropout(embeddings, deterministic=deterministic, rngs=rngs).astype(self.dtype)
        if self.projection is not None:
            embeddings = self.projection(embeddings)  # [batch, seq, hidden]
        return embeddings


class BertSelfAttention(nnx.Module):
    """Multi-head self-attention over the keys an AttentionMask allows, and its output projection."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden // config.num_attention_heads
        self.query = make_dense(config, hidden, hidden, rngs)
        self.key = make_dense(config, hidden, hidden, rngs)
        self.value = make_dense(config, hidden, hidden, rngs)
        self.output = make_dense(config, hidden, hidden, rngs)
        self.dropout = nnx.Dropout(config.attention_probs_dropout_prob)
        self.attention_impl = config.attention_impl
        self.fused_qkv = config.fused_qkv

    def __call__(self, hidden_states, attention: AttentionMask | jax.Array, *, deterministic: bool,
                 rngs: nnx.Rngs | None, return_scores: bool = False):
        """`attention`: an AttentionMask from `make_attention_mask`, or a bare additive bias array.

        `return_scores` (TinyBERT's attention distillation) also returns the scaled scores before the mask
        and softmax, [batch, heads, q, k] float32; it takes the einsum path whatever the kernel.
        """
        if not isinstance(attention, AttentionMask):
            attention = AttentionMask(bias=attention)
        batch, seq_length, _ = hidden_states.shape
        split = lambda x: x.reshape(batch, seq_length, self.num_heads, self.head_dim)
        query, key, value = map(split, self._query_key_value(hidden_states))  # each [batch, seq, heads, head_dim]
        if attention.rotary is not None:
            query = positions_lib.apply_rotary(query, *attention.rotary)
            key = positions_lib.apply_rotary(key, *attention.rotary)
        scores = None
        if self.attention_impl == "xla" or return_scores:
            scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
            scores = scores / jnp.sqrt(jnp.float32(self.head_dim))  # [batch, heads, q, k]
            probs = jax.nn.softmax(scores + additive_bias(attention, seq_length), axis=-1)
            probs = self.dropout(probs, deterministic=deterministic, rngs=rngs).astype(value.dtype)
            context = jnp.einsum("bhqk,bkhd->bqhd", probs, value)  # [batch, seq, heads, head_dim]
        elif self.attention_impl == "splash":
            splash.check_usable(seq_length)
            context = splash.splash_attention(query, key, value, attention.segment_ids, local_window=attention.window)
        else:
            context = fused_attention(query, key, value, attention, self.attention_impl)
        output = self.output(context.reshape(batch, seq_length, self.num_heads * self.head_dim))
        return (output, scores) if return_scores else output

    def _query_key_value(self, hidden_states):
        """(query, key, value), each [batch, seq, hidden]; with `fused_qkv` from one matmul against the three
        kernels (and biases) concatenated here, computed as `nnx.Linear` computes each of them."""
        if not self.fused_qkv:
            return self.query(hidden_states), self.key(hidden_states), self.value(hidden_states)
        layers = (self.query, self.key, self.value)
        kernel = jnp.concatenate([layer.kernel[...] for layer in layers], axis=1)  # [hidden, 3 x hidden]
        bias = None if self.query.bias is None else jnp.concatenate([layer.bias[...] for layer in layers])
        inputs, kernel, bias = self.query.promote_dtype((hidden_states, kernel, bias), dtype=self.query.dtype)
        fused = self.query.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())),
                                       precision=self.query.precision)  # [batch, seq, 3 x hidden]
        if bias is not None:
            fused = fused + bias
        return tuple(jnp.split(fused, 3, axis=-1))


class BertLayer(nnx.Module):
    """One transformer layer.

    Post-norm (BERT): x = N(x + Attn(x)); x = N(x + FFN(x)). Pre-norm (ModernBERT, NeoBERT):
    x = x + Attn(N(x)); x = x + FFN(N(x)), with the residual stream kept in float32. `attention_norm`
    False (the first layer of a pre-norm stack whose embeddings end in a norm, ModernBERT's Identity)
    builds no attention norm: its input is already normalised. The FFN is BERT's dense -> act -> dense, or
    a GLU, act(x W_a) * (x W_g) -> dense, whose `intermediate` kernel holds [W_a | W_g].
    """

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, attention_norm: bool = True):
        self.attention = BertSelfAttention(config, rngs=rngs)
        self.attention_layer_norm = make_norm(config, config.hidden_size, rngs) if attention_norm else None
        intermediate_width = config.intermediate_size * (2 if config.gated else 1)
        self.intermediate = make_dense(config, config.hidden_size, intermediate_width, rngs)
        self.output = make_dense(config, config.intermediate_size, config.hidden_size, rngs)
        self.output_layer_norm = make_norm(config, config.hidden_size, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.activation = jax.nn.silu if config.ffn_activation == "swiglu" else get_activation(config.hidden_act)
        self.gated = config.gated
        self.pre_norm = config.pre_norm
        self.dtype = config.compute_dtype

    def __call__(self, hidden_states, attention, *, deterministic: bool, rngs: nnx.Rngs | None,
                 return_scores: bool = False):
        """The layer's output; with `return_scores`, (output, attention scores) as BertSelfAttention gives them."""
        attention_input = hidden_states
        if self.pre_norm and self.attention_layer_norm is not None:
            attention_input = self.attention_layer_norm(hidden_states).astype(self.dtype)
        attention_output = self.attention(attention_input, attention, deterministic=deterministic, rngs=rngs,
                                          return_scores=return_scores)
        scores = None
        if return_scores:
            attention_output, scores = attention_output
        attention_output = self.dropout(attention_output, deterministic=deterministic, rngs=rngs)
        if self.pre_norm:
            hidden_states = hidden_states.astype(jnp.float32) + attention_output
            ffn_input = self.output_layer_norm(hidden_states).astype(self.dtype)
            layer_output = self.dropout(self._feed_forward(ffn_input), deterministic=deterministic, rngs=rngs)
            output = hidden_states + layer_output  # float32
        else:
            hidden_states = self.attention_layer_norm(hidden_states + attention_output).astype(self.dtype)
            layer_output = self.dropout(self._feed_forward(hidden_states), deterministic=deterministic, rngs=rngs)
            output = self.output_layer_norm(hidden_states + layer_output).astype(self.dtype)
        return (output, scores) if return_scores else output

    def _feed_forward(self, hidden_states):
        intermediate = self.intermediate(hidden_states)  # [batch, seq, intermediate (x2 when gated)]
        if self.gated:
            activated, gate = jnp.split(intermediate, 2, axis=-1)
            return self.output(self.activation(activated) * gate)
        return self.output(self.activation(intermediate))


def functional_layer(graphdef, *, deterministic: bool, remat_policy: str = "none"):
    """`apply(layer_state, hidden_states, attention, dropout_key) -> hidden_states`, a pure function of a
    BertLayer's state, for `jax.lax.scan` bodies; wrapped in `jax.checkpoint` unless remat_policy is 'none'.
    """

    def apply(state, hidden_states, attention, dropout_key):
        layer = nnx.merge(graphdef, state)
        layer_rngs = None if deterministic else nnx.Rngs(dropout=dropout_key)
        return layer(hidden_states, attention, deterministic=deterministic, rngs=layer_rngs)

    if remat_policy == "none":
        return apply
    # Inside a scan XLA cannot merge the recomputation into the forward pass, so CSE prevention only costs.
    return jax.checkpoint(apply, policy=CHECKPOINT_POLICIES[remat_policy], prevent_cse=False)


def dropout_keys(rngs: nnx.Rngs | None, count: int, deterministic: bool) -> jax.Array:
    """One dropout key per scanned layer, so no two layers draw the same masks ([count] zeros when unused)."""
    if deterministic:
        return jnp.zeros((count,), jnp.uint32)
    return jax.random.split(rngs.dropout(), count)


class BertPooler(nnx.Module):
    """tanh(dense(hidden state of [CLS])): the sentence-level representation for pair/task heads."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.dense = make_dense(config, config.hidden_size, config.hidden_size, rngs)

    def __call__(self, sequence_output, cls_positions=None):
        """[batch, hidden] from position 0; with cls_positions [batch, K] (packed rows' [CLS] tokens),
        [batch, K, hidden]."""
        if cls_positions is None:
            return jnp.tanh(self.dense(sequence_output[:, 0]))
        cls_hidden = jnp.take_along_axis(sequence_output, cls_positions[:, :, None], axis=1)  # [batch, K, hidden]
        return jnp.tanh(self.dense(cls_hidden))


class SharedLayerGroup(nnx.Module):
    """ALBERT's cross-layer sharing: one layer's weights applied `num_repeats` times in a row.

    The repeats run in `jax.lax.scan`, so XLA compiles the layer once whatever the depth: compile time
    does not grow with `num_hidden_layers` when weights are shared.
    """

    def __init__(self, config: BertConfig, num_repeats: int, *, rngs: nnx.Rngs):
        self.layer = BertLayer(config, rngs=rngs)
        self.num_repeats = num_repeats
        self.remat_policy = config.remat_policy

    def __call__(self, hidden_states, attention, *, deterministic: bool, rngs: nnx.Rngs | None,
                 collect: bool = False):
        """The group's output; with `collect`, also each repeat's output [num_repeats, batch, seq, hidden]."""
        graphdef, state = nnx.split(self.layer)
        apply = functional_layer(graphdef, deterministic=deterministic, remat_policy=self.remat_policy)

        def body(carry, key):
            output = apply(state, carry, attention, key)
            return output, (output if collect else None)

        keys = dropout_keys(rngs, self.num_repeats, deterministic)
        hidden_states, per_repeat = jax.lax.scan(body, hidden_states, keys)
        return (hidden_states, per_repeat) if collect else hidden_states


class BertModel(nnx.Module):
    """The encoder: embeddings, `num_hidden_layers` transformer layers and the pooler (HF's BertModel).

    Without sharing the layers are `layers.0 .. layers.{L-1}` (also with `scan_layers`, which stacks
    their weights only inside the computation). With ALBERT sharing (`num_hidden_groups` = G > 0) they
    are `layer_groups.0 .. layer_groups.{G-1}`, each applied L/G times in a row (HF's `int(i / (L / G))`
    assignment). `add_pooling_layer=False` drops the pooler for objectives without a pair head
    (RoBERTa's MLM), so no parameter goes unused. `final_norm` adds `final_layer_norm` after the last layer.
    """

    def __init__(self, config: BertConfig, *, add_pooling_layer: bool = True, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        if config.num_hidden_groups:
            repeats = config.num_hidden_layers // config.num_hidden_groups
            self.layer_groups = nnx.List([SharedLayerGroup(config, repeats, rngs=rngs)
                                          for _ in range(config.num_hidden_groups)])
        else:
            first_normalised = config.pre_norm and config.embedding_norm
            self.layers = nnx.List([BertLayer(config, rngs=rngs, attention_norm=not (i == 0 and first_normalised))
                                    for i in range(config.num_hidden_layers)])
        self.pooler = BertPooler(config, rngs=rngs) if add_pooling_layer else None
        self.final_layer_norm = make_norm(config, config.hidden_size, rngs) if config.final_norm else None

    def __call__(self, input_ids, segment_ids, attention_mask, *, position_ids=None, language_ids=None,
                 deterministic: bool = True, rngs: nnx.Rngs | None = None):
        """input_ids, segment_ids, attention_mask: [batch, seq] ints; position_ids [batch, seq] for packed rows.

        Without position_ids, attention_mask is 1 for tokens and 0 for (suffix) padding. With them the
        rows are packed: attention_mask holds each token's instance (1, 2, ...; 0 = padding), attention
        stays within an instance, and position_ids restart at 0 in each. A TLM row is one instance (mask 1
        on all its tokens), so source and target see each other while the target's positions restart.
        language_ids [batch, seq]: see BertEmbeddings (models with `num_languages` > 0).
        Returns (sequence_output [batch, seq, hidden], pooled_output [batch, hidden] or None).
        """
        hidden_states = self._embed(input_ids, segment_ids, position_ids=position_ids, language_ids=language_ids,
                                    deterministic=deterministic, rngs=rngs)
        attention = self.layer_attention(attention_mask, position_ids)
        if self.config.num_hidden_groups:
            for group in self.layer_groups:
                hidden_states = group(hidden_states, attention[0], deterministic=deterministic, rngs=rngs)
        elif self.config.scan_layers:
            hidden_states = self._scan_layers(hidden_states, attention, deterministic=deterministic, rngs=rngs)
        else:
            hidden_states = self._loop_layers(hidden_states, attention, deterministic=deterministic, rngs=rngs)
        hidden_states = self._finish(hidden_states)
        pooled_output = self.pooler(hidden_states) if self.pooler is not None else None
        return hidden_states, pooled_output

    def _embed(self, input_ids, segment_ids, **kwargs):
        """The embeddings; a pre-norm stack carries its residual stream in float32 from here on."""
        hidden_states = self.embeddings(input_ids, segment_ids, **kwargs)
        return hidden_states.astype(jnp.float32) if self.config.pre_norm else hidden_states

    def _finish(self, hidden_states):
        """The final norm (if any) and the compute dtype: what the heads and the pooler read."""
        if self.final_layer_norm is not None:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states.astype(self.config.compute_dtype)

    def layer_attention(self, attention_mask, position_ids=None) -> list[AttentionMask]:
        """One AttentionMask per layer (per application with ALBERT sharing, which is all-global): the local
        and the global layers share one each, built once per step."""
        m = self.config
        packed = position_ids is not None
        positions = position_ids if packed else jnp.arange(attention_mask.shape[1])[None]  # [batch or 1, seq]
        alibi = (positions_lib.alibi_bias(positions, m.num_attention_heads)
                 if m.position_encoding == "alibi" else None)

        def mask(window: int, theta: float) -> AttentionMask:
            rotary = (positions_lib.rotary_cos_sin(positions, m.hidden_size // m.num_attention_heads, theta)
                      if m.position_encoding == "rotary" else None)
            return make_attention_mask(attention_mask, packed=packed, attention_impl=m.attention_impl,
                                       window=window, alibi=alibi, rotary=rotary)

        global_mask = mask(0, m.rope_theta)
        if not m.local_attention_window:
            return [global_mask] * m.num_hidden_layers
        local_mask = mask(m.local_attention_window, m.local_rope_theta or m.rope_theta)
        return [global_mask if encoder_flags.is_global_layer(m, i) else local_mask
                for i in range(m.num_hidden_layers)]

    def _loop_layers(self, hidden_states, attention, *, deterministic: bool, rngs: nnx.Rngs | None):
        """One copy of the layer per depth in the program; nnx.remat keeps the dropout stream of the plain loop."""
        def apply(layer, hidden_states, attention, rngs):
            return layer(hidden_states, attention, deterministic=deterministic, rngs=rngs)

        if self.config.remat_policy != "none":
            apply = nnx.remat(apply, policy=CHECKPOINT_POLICIES[self.config.remat_policy])
        for layer, layer_attention in zip(self.layers, attention):
            hidden_states = apply(layer, hidden_states, layer_attention, rngs)
        return hidden_states

    def _scan_layers(self, hidden_states, attention, *, deterministic: bool, rngs: nnx.Rngs | None):
        """The layers in one `jax.lax.scan` over their states stacked here, so the program holds one layer
        and the parameter tree keeps `layers.0 .. layers.{L-1}` (checkpoints, HF interop, fine-tuning).

        A first layer with no attention norm of its own (pre-norm after an embedding norm) runs before the
        scan. Every layer is global here (the config refuses scan_layers with local attention)."""
        layers = list(self.layers)
        if layers[0].attention_layer_norm is None:
            hidden_states = self._loop_layers(hidden_states, attention[:1], deterministic=deterministic, rngs=rngs)
            layers = layers[1:]
        if not layers:
            return hidden_states
        graphdef, _ = nnx.split(layers[0])
        # Every leaf [num_layers, ...]; the stack's gradient hands each layer its own slice back.
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(nnx.state(layer) for layer in layers))
        apply = functional_layer(graphdef, deterministic=deterministic, remat_policy=self.config.remat_policy)

        def body(carry, layer_inputs):
            state, key = layer_inputs
            return apply(state, carry, attention[0], key), None

        keys = dropout_keys(rngs, len(layers), deterministic)
        hidden_states, _ = jax.lax.scan(body, hidden_states, (stacked, keys))
        return hidden_states

    def layer_outputs(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                      rngs: nnx.Rngs | None = None) -> tuple[list[jax.Array], list[jax.Array]]:
        """(hidden states [embedding output, layer 1, ..., layer L], attention scores [layer 1, ..., layer L]).

        What layer-to-layer distillation (TinyBERT) compares: each hidden state [batch, seq, hidden], each
        score tensor [batch, heads, seq, seq] float32 (scaled, before the mask and softmax). Unpacked rows
        and unshared layers only; dropout applies as in `__call__`, in the plain loop's order. The last
        entry is the encoder's output (after the final norm, if any).
        """
        if self.config.num_hidden_groups:
            raise ValueError("layer_outputs needs unshared layers (num_hidden_groups 0)")
        hidden_states = self._embed(input_ids, segment_ids, deterministic=deterministic, rngs=rngs)
        outputs, all_scores = [hidden_states], []
        for layer, attention in zip(self.layers, self.layer_attention(attention_mask)):
            hidden_states, scores = layer(hidden_states, attention, deterministic=deterministic, rngs=rngs,
                                          return_scores=True)
            outputs.append(hidden_states)
            all_scores.append(scores)
        outputs[-1] = self._finish(outputs[-1])
        return outputs, all_scores

    def all_hidden_states(self, input_ids, segment_ids, attention_mask) -> list[jax.Array]:
        """[embedding output, layer 1 output, ..., layer L output], each [batch, seq, hidden] (no dropout);
        the last is the encoder's output (after the final norm, if any).

        For feature extraction (the BERT paper's feature-based NER concatenates the last four).
        """
        hidden_states = self._embed(input_ids, segment_ids, deterministic=True, rngs=None)
        attention = self.layer_attention(attention_mask)
        outputs = [hidden_states]
        if self.config.num_hidden_groups:
            for group in self.layer_groups:
                hidden_states, per_repeat = group(hidden_states, attention[0], deterministic=True, rngs=None,
                                                  collect=True)
                outputs.extend(per_repeat[i] for i in range(per_repeat.shape[0]))
        else:
            for layer, layer_attention in zip(self.layers, attention):
                hidden_states = layer(hidden_states, layer_attention, deterministic=True, rngs=None)
                outputs.append(hidden_states)
        outputs[-1] = self._finish(outputs[-1])
        return outputs
