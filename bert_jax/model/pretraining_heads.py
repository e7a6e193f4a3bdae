"""Pretraining heads on top of the encoder: masked LM (tied, gathered), next-sentence prediction, SpanBERT's
span-boundary objective, and ELECTRA's replaced-token detection with its generator (`ElectraForPreTraining`).

As in google-research/bert, the MLM head gathers the masked positions *before* the vocabulary projection,
so the [*, vocab] matmul runs on ~20 positions per sequence instead of all of them: on BERT-mini that
projection is most of the step's FLOPs (`gather_masked_positions=False` projects every position, to
measure that). Packed rows get one pair prediction per instance, from the pooler at each [CLS].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.model import encoder


def gather_positions(sequence_output: jax.Array, positions: jax.Array) -> jax.Array:
    """sequence_output [batch, seq, hidden], positions [batch, num_masked] -> [batch, num_masked, hidden]."""
    return jnp.take_along_axis(sequence_output, positions[:, :, None], axis=1)


class MaskedLMHead(nnx.Module):
    """dense + activation + LayerNorm, then logits against the word embeddings (tied) plus a bias.

    The dense layer maps hidden_size to the embedding width, so with ALBERT's factorized embeddings it
    is the H -> E projection back into the embedding space. The output matmul runs against the
    embeddings zero-padded to a multiple of `vocab_pad_multiple` rows (30522 -> 30592 for BERT), which
    keeps the accelerator's matmul tiles full; the padded logits are dropped, so the parameters and the
    loss are those of the unpadded vocabulary. `tie_word_embeddings` False gives the head its own output
    matrix, `decoder` (NeoBERT), padded the same way.
    """

    def __init__(self, config: encoder.BertConfig, *, rngs: nnx.Rngs):
        self.dense = encoder.make_dense(config, config.hidden_size, config.embedding_width, rngs)
        self.layer_norm = encoder.make_norm(config, config.embedding_width, rngs)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.float32))
        self.decoder = (None if config.tie_word_embeddings else nnx.Embed(
            config.vocab_size, config.embedding_width, rngs=rngs,
            embedding_init=nnx.initializers.truncated_normal(config.initializer_range)))
        self.activation = encoder.get_activation(config.hidden_act)
        self.dtype = config.compute_dtype
        self.vocab_pad_multiple = config.vocab_pad_multiple
        self.gather_masked_positions = config.gather_masked_positions
        self.bf16_matmul = config.bf16_matmuls

    def __call__(self, sequence_output, masked_positions, word_embeddings: nnx.Embed):
        """Returns MLM logits [batch, num_masked, vocab] in float32."""
        hidden = sequence_output  # [batch, seq, hidden]
        if self.gather_masked_positions:
            hidden = gather_positions(sequence_output, masked_positions)  # [batch, num_masked, hidden]
        hidden = self.layer_norm(self.activation(self.dense(hidden))).astype(self.dtype)  # [.., embedding]
        output_embeddings = word_embeddings if self.decoder is None else self.decoder
        logits = tied_logits(hidden, output_embeddings, self.vocab_pad_multiple,  # [batch, masked or seq, vocab]
                             bf16_matmul=self.bf16_matmul)
        if not self.gather_masked_positions:
            logits = gather_positions(logits, masked_positions)  # [batch, num_masked, vocab]
        return logits + self.bias[...]


def padded_vocab_size(vocab_size: int, vocab_pad_multiple: int) -> int:
    """The rows the MLM projection multiplies against: the vocabulary rounded up to `vocab_pad_multiple`."""
    multiple = max(vocab_pad_multiple, 1)
    return -(-vocab_size // multiple) * multiple


def tied_logits(hidden: jax.Array, word_embeddings: nnx.Embed, vocab_pad_multiple: int, *,
                bf16_matmul: bool = False) -> jax.Array:
    """hidden [batch, n, embedding] (compute dtype) -> float32 logits [batch, n, vocab] against the word
    embeddings, zero-padded to a multiple of `vocab_pad_multiple` rows for the matmul and cut back after;
    `bf16_matmul`: with bf16 operands and float32 sums (config.model.matmul_dtype)."""
    embedding = word_embeddings.embedding[...].astype(hidden.dtype)  # [vocab, embedding]
    vocab_size = embedding.shape[0]
    padded_size = padded_vocab_size(vocab_size, vocab_pad_multiple)
    embedding = jnp.pad(embedding, ((0, padded_size - vocab_size), (0, 0)))  # [padded_vocab, embedding]
    if bf16_matmul:
        logits = encoder.bf16_matmul(hidden, embedding, transposed=True)
    else:
        logits = jnp.einsum("bph,vh->bpv", hidden, embedding, preferred_element_type=jnp.float32)
    return logits[..., :vocab_size]


class SpanBoundaryHead(nnx.Module):
    """SpanBERT's span-boundary objective (SBO): predicts each token x_i of a masked span (s, e) from the
    encoder outputs of the tokens just outside it, x_{s-1} and x_{e+1}, and an embedding of its place in the
    span, p_{i-s+1}, with no look at x_i itself, so the span's representation has to be carried by its
    boundaries (Joshi et al. 2020, section 3.2):

      h = LayerNorm(GELU(W1 [x_{s-1}; x_{e+1}; p_{i-s+1}]))    # [.., hidden]
      y = LayerNorm(GELU(W2 h))                                # [.., embedding]

    then logits against the tied word embeddings plus this head's own bias, as facebookresearch/SpanBERT's
    BertPairTargetPredictionHead (its MLPWithLayerNorm and decoder). W2 maps to the embedding width, which
    is the hidden size unless ALBERT-factorized. The activation is config.hidden_act (exact GELU for BERT).
    """

    def __init__(self, config: encoder.BertConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(config.initializer_range)
        self.position_embeddings = nnx.Embed(config.sbo_max_span_positions, config.sbo_position_embedding_size,
                                             embedding_init=init, rngs=rngs)
        inputs = 2 * config.hidden_size + config.sbo_position_embedding_size
        self.dense = encoder.make_dense(config, inputs, config.hidden_size, rngs)
        self.layer_norm = encoder.make_norm(config, config.hidden_size, rngs)
        self.output_dense = encoder.make_dense(config, config.hidden_size, config.embedding_width, rngs)
        self.output_layer_norm = encoder.make_norm(config, config.embedding_width, rngs)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.float32))
        self.activation = encoder.get_activation(config.hidden_act)
        self.dtype = config.compute_dtype
        self.vocab_pad_multiple = config.vocab_pad_multiple
        self.bf16_matmul = config.bf16_matmuls

    def __call__(self, sequence_output, span_boundaries, word_embeddings: nnx.Embed):
        """sequence_output [batch, seq, hidden]; span_boundaries (left_positions, right_positions,
        span_offsets), each [batch, P] int32: per prediction slot, the positions of x_{s-1} and x_{e+1} and
        i - s (a row of the position table). Returns SBO logits [batch, P, vocab] in float32."""
        left_positions, right_positions, span_offsets = span_boundaries
        left = gather_positions(sequence_output, left_positions)  # [batch, P, hidden]
        right = gather_positions(sequence_output, right_positions)  # [batch, P, hidden]
        offsets = self.position_embeddings(span_offsets).astype(left.dtype)  # [batch, P, position width]
        hidden = jnp.concatenate([left, right, offsets], axis=-1)  # [batch, P, 2 hidden + position width]
        hidden = self.layer_norm(self.activation(self.dense(hidden)))  # [batch, P, hidden]
        hidden = self.output_layer_norm(self.activation(self.output_dense(hidden))).astype(self.dtype)
        return tied_logits(hidden, word_embeddings, self.vocab_pad_multiple,
                           bf16_matmul=self.bf16_matmul) + self.bias[...]


class PairClassificationHead(nnx.Module):
    """Two-way classifier on the pooled [CLS] output: NSP (0 = IsNext, 1 = NotNext) or SOP (1 = swapped)."""

    def __init__(self, config: encoder.BertConfig, *, rngs: nnx.Rngs):
        self.dense = encoder.make_dense(config, config.hidden_size, 2, rngs)

    def __call__(self, pooled_output):
        return self.dense(pooled_output).astype(jnp.float32)  # [batch, 2], or [batch, K, 2] for packed rows


OBJECTIVES_WITH_PAIR_HEAD = ("mlm_nsp", "mlm_sop")
OBJECTIVES_WITH_SPAN_BOUNDARY_HEAD = ("mlm_sbo",)


class BertForPreTraining(nnx.Module):
    """Encoder + MLM head, plus the pooler and a pair head for NSP/SOP (HF's *ForPreTraining layout), or
    SpanBERT's span-boundary head (`sbo_head`) for objective 'mlm_sbo'.

    objectives 'mlm' (RoBERTa) and 'mlm_sbo' build neither pooler nor pair head: every parameter gets a gradient.
    """

    def __init__(self, config: encoder.BertConfig, *, objective: str = "mlm_nsp", rngs: nnx.Rngs):
        has_pair_head = objective in OBJECTIVES_WITH_PAIR_HEAD
        self.bert = encoder.BertModel(config, add_pooling_layer=has_pair_head, rngs=rngs)
        self.mlm_head = MaskedLMHead(config, rngs=rngs)
        self.pair_head = PairClassificationHead(config, rngs=rngs) if has_pair_head else None
        self.sbo_head = (SpanBoundaryHead(config, rngs=rngs) if objective in OBJECTIVES_WITH_SPAN_BOUNDARY_HEAD
                         else None)

    def __call__(self, input_ids, segment_ids, attention_mask, masked_positions, *, position_ids=None,
                 pair_positions=None, span_boundaries=None, language_ids=None, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """Returns (mlm_logits [batch, num_masked, vocab], pair_logits or SBO logits or None), float32.

        Unpacked rows: pair_logits [batch, 2] from the [CLS] at position 0. Packed rows (position_ids and
        pair_positions [batch, K] given, see BertModel): pair_logits [batch, K, 2], one per instance's
        [CLS]; the logits of empty slots are meaningless and weighted 0 by the loss.
        Objective 'mlm_sbo' with `span_boundaries` (see SpanBoundaryHead): the second value is the SBO
        logits [batch, num_masked, vocab], one per MLM prediction slot; without them, None (MLM only).
        language_ids [batch, seq]: XLM's per-token languages (translation language modelling), for models
        with a language table.
        """
        sequence_output, pooled_output = self.bert(
            input_ids, segment_ids, attention_mask, position_ids=position_ids, language_ids=language_ids,
            deterministic=deterministic, rngs=rngs)
        mlm_logits = self.mlm_head(sequence_output, masked_positions, self.bert.embeddings.word_embeddings)
        if self.sbo_head is not None and span_boundaries is not None:
            return mlm_logits, self.sbo_head(sequence_output, span_boundaries, self.bert.embeddings.word_embeddings)
        if self.pair_head is None:
            return mlm_logits, None
        if pair_positions is not None:
            pooled_output = self.bert.pooler(sequence_output, pair_positions)  # [batch, K, hidden]
        return mlm_logits, self.pair_head(pooled_output)


class ReplacedTokenDetectionHead(nnx.Module):
    """ELECTRA's discriminator head: dense + activation + dense to one logit per token (replaced vs original),
    HF's ElectraDiscriminatorPredictions (`dense`, `dense_prediction`)."""

    def __init__(self, config: encoder.BertConfig, *, rngs: nnx.Rngs):
        self.dense = encoder.make_dense(config, config.hidden_size, config.hidden_size, rngs)
        self.dense_prediction = encoder.make_dense(config, config.hidden_size, 1, rngs)
        self.activation = encoder.get_activation(config.hidden_act)

    def __call__(self, sequence_output):
        """sequence_output [batch, seq, hidden] -> logits [batch, seq] float32 (> 0: replaced)."""
        return self.dense_prediction(self.activation(self.dense(sequence_output)))[..., 0].astype(jnp.float32)


def generator_config(config: encoder.BertConfig, electra) -> encoder.BertConfig:
    """The generator's encoder config: the discriminator's, narrowed and shortened as `electra` (config.electra)
    says, reading the shared embedding tables (`embedding_size` = the discriminator's embedding width, so it
    has its own projection whenever that differs from its hidden size, as in google-research/electra)."""
    size = config_lib.electra_generator_size(config.hidden_size, config.num_hidden_layers, electra)
    return dataclasses.replace(config, embedding_size=config.embedding_width, num_hidden_groups=0, **size)


class ElectraForPreTraining(nnx.Module):
    """ELECTRA's generator and discriminator in one module, so one parameter tree, one optimizer and one
    checkpoint hold both.

    `bert` is the discriminator's encoder (no pooler), named like BertForPreTraining's so that fine-tuning,
    exports and model statistics read it unchanged; `discriminator_head` is its replaced-token detection
    head. `generator` is a narrower BertModel whose word, position and segment tables and embedding
    LayerNorm *are* the discriminator's (the same nnx objects: NNX stores a shared variable once, under
    `bert/embeddings`, and sums its gradients from both uses); `generator_head` is its MLM head, tied to
    the shared word embeddings. The generator keeps its own embedding projection when its hidden size
    differs from the embedding width.
    """

    def __init__(self, config: encoder.BertConfig, generator: encoder.BertConfig, *, rngs: nnx.Rngs):
        self.bert = encoder.BertModel(config, add_pooling_layer=False, rngs=rngs)
        self.discriminator_head = ReplacedTokenDetectionHead(config, rngs=rngs)
        self.generator = encoder.BertModel(generator, add_pooling_layer=False, rngs=rngs)
        self.generator_head = MaskedLMHead(generator, rngs=rngs)
        shared, own = self.bert.embeddings, self.generator.embeddings
        own.word_embeddings, own.position_embeddings = shared.word_embeddings, shared.position_embeddings
        own.token_type_embeddings, own.layer_norm = shared.token_type_embeddings, shared.layer_norm

    def generator_logits(self, input_ids, segment_ids, attention_mask, masked_positions, *,
                         deterministic: bool = True, rngs: nnx.Rngs | None = None):
        """The generator's MLM logits [batch, num_masked, vocab] (float32) on the masked input_ids [batch, seq]."""
        sequence_output, _ = self.generator(input_ids, segment_ids, attention_mask, deterministic=deterministic,
                                            rngs=rngs)
        return self.generator_head(sequence_output, masked_positions, self.bert.embeddings.word_embeddings)

    def discriminator_logits(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                             rngs: nnx.Rngs | None = None):
        """The discriminator's replaced-token logits [batch, seq] (float32) on the corrupted input_ids."""
        sequence_output, _ = self.bert(input_ids, segment_ids, attention_mask, deterministic=deterministic,
                                       rngs=rngs)
        return self.discriminator_head(sequence_output)


class TinyBertStudent(BertForPreTraining):
    """TinyBERT's student: a BertForPreTraining (objective 'mlm') plus `fit_dense`, the learned map of its
    hidden states into the teacher's width. One map serves the embedding output and every layer, as in
    TinyBERT's code; it is trained with the student and dropped by the exports to other libraries."""

    def __init__(self, config: encoder.BertConfig, teacher_hidden_size: int, *, rngs: nnx.Rngs):
        super().__init__(config, objective="mlm", rngs=rngs)
        self.fit_dense = encoder.make_dense(config, config.hidden_size, teacher_hidden_size, rngs)


def build_model(config, seed: int) -> BertForPreTraining | ElectraForPreTraining:
    """A freshly initialised pretraining model for `config.model` and `config.objective`: BertForPreTraining,
    ElectraForPreTraining (with `config.electra`'s generator) for objective 'electra', or TinyBertStudent for
    the 'tinybert' distillation recipe."""
    rngs = nnx.Rngs(params=jax.random.key(seed))
    model_config = encoder.BertConfig.from_config(config.model)
    if config.objective == "electra":
        return ElectraForPreTraining(model_config, generator_config(model_config, config.electra), rngs=rngs)
    if config.distill.recipe == "tinybert":
        return TinyBertStudent(model_config, config.distill.teacher_model.hidden_size, rngs=rngs)
    return BertForPreTraining(model_config, objective=config.objective, rngs=rngs)


def teacher_config(config) -> encoder.BertConfig:
    """The teacher's encoder config of a distillation run, in `config.distill.teacher_dtype`, without dropout."""
    fields = dict(config.distill.teacher_model)
    fields.update(dtype=config.distill.teacher_dtype, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  attention_impl=config.model.attention_impl, scan_layers=False, remat_policy="none",
                  gather_masked_positions=True)
    return encoder.BertConfig.from_config(fields)


def build_teacher(config) -> BertForPreTraining:
    """The teacher's model (random weights: its parameters come from <workdir>/teacher or the checkpoint)."""
    return BertForPreTraining(teacher_config(config), objective=config.distill.teacher_objective,
                              rngs=nnx.Rngs(params=jax.random.key(0)))
