"""Fine-tuning task models on the encoder, in Hugging Face's layouts (names and heads as HF's
BertFor* classes, so that checkpoints and exports map one to one); `TASK_MODELS` maps a task kind to one.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from bert_jax.model import encoder, pooling


class BertForSequenceClassification(nnx.Module):
    """[CLS] pooled output -> dropout -> dense(num_labels): GLUE classification, or regression with 1 label.

    Always has a pooler: from a checkpoint that has none (RoBERTa's MLM objective) it starts fresh.
    """

    def __init__(self, config: encoder.BertConfig, num_labels: int, *, rngs: nnx.Rngs):
        self.bert = encoder.BertModel(config, add_pooling_layer=True, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.classifier = encoder.make_dense(config, config.hidden_size, num_labels, rngs)

    def __call__(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """Returns logits [batch, num_labels] in float32."""
        _, pooled_output = self.bert(input_ids, segment_ids, attention_mask, deterministic=deterministic,
                                     rngs=rngs)
        pooled_output = self.dropout(pooled_output, deterministic=deterministic, rngs=rngs)
        return self.classifier(pooled_output).astype(jnp.float32)


class BertForTokenClassification(nnx.Module):
    """Every token's hidden state -> dropout -> dense(num_labels): NER tagging (no pooler, as in HF)."""

    def __init__(self, config: encoder.BertConfig, num_labels: int, *, rngs: nnx.Rngs):
        self.bert = encoder.BertModel(config, add_pooling_layer=False, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.classifier = encoder.make_dense(config, config.hidden_size, num_labels, rngs)

    def __call__(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """Returns logits [batch, seq, num_labels] in float32."""
        sequence_output, _ = self.bert(input_ids, segment_ids, attention_mask, deterministic=deterministic,
                                       rngs=rngs)
        sequence_output = self.dropout(sequence_output, deterministic=deterministic, rngs=rngs)
        return self.classifier(sequence_output).astype(jnp.float32)


class BertForQuestionAnswering(nnx.Module):
    """Every token's hidden state -> dense(2): start and end logits of the answer span (SQuAD)."""

    def __init__(self, config: encoder.BertConfig, num_labels: int = 2, *, rngs: nnx.Rngs):
        del num_labels  # always start + end; the argument keeps the task models' signatures uniform
        self.bert = encoder.BertModel(config, add_pooling_layer=False, rngs=rngs)
        self.qa_outputs = encoder.make_dense(config, config.hidden_size, 2, rngs)

    def __call__(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """Returns logits [batch, seq, 2] (start, end) in float32."""
        sequence_output, _ = self.bert(input_ids, segment_ids, attention_mask, deterministic=deterministic,
                                       rngs=rngs)
        return self.qa_outputs(sequence_output).astype(jnp.float32)


class BertForMultipleChoice(nnx.Module):
    """Each (context, choice) pair's pooled output -> dense(1): one score per choice (SWAG)."""

    def __init__(self, config: encoder.BertConfig, num_labels: int = 1, *, rngs: nnx.Rngs):
        del num_labels  # one score per choice; the number of choices comes from the input's shape
        self.bert = encoder.BertModel(config, add_pooling_layer=True, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)
        self.classifier = encoder.make_dense(config, config.hidden_size, 1, rngs)

    def __call__(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """Inputs [batch, num_choices, seq]; returns logits [batch, num_choices] in float32."""
        batch, num_choices, seq = input_ids.shape
        flat = [x.reshape(batch * num_choices, seq) for x in (input_ids, segment_ids, attention_mask)]
        _, pooled_output = self.bert(*flat, deterministic=deterministic, rngs=rngs)
        pooled_output = self.dropout(pooled_output, deterministic=deterministic, rngs=rngs)
        return self.classifier(pooled_output).astype(jnp.float32).reshape(batch, num_choices)


class BertForSentenceEmbedding(nnx.Module):
    """A bi-encoder (Sentence-BERT): each text of a row is encoded alone and pooled into one vector.

    `pooling_mode` 'mean' / 'max' over real tokens or 'cls'; `normalize` makes the vectors unit length (the loss
    normalises anyway; this is what an exported model outputs). With `num_labels` > 0 a classifier on
    (u, v, |u - v|) is added for SBERT's softmax (NLI) recipe; it is dropped when the encoder is used.
    """

    def __init__(self, config: encoder.BertConfig, num_labels: int = 0, *, pooling_mode: str = "mean",
                 normalize: bool = False, rngs: nnx.Rngs):
        self.bert = encoder.BertModel(config, add_pooling_layer=False, rngs=rngs)
        self.classifier = encoder.make_dense(config, 3 * config.hidden_size, num_labels, rngs) if num_labels else None
        self.pooling_mode, self.normalize = pooling_mode, normalize

    def __call__(self, input_ids, segment_ids, attention_mask, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """Inputs [batch, texts, seq] (or [batch, seq]); returns embeddings [batch, texts, hidden] (or
        [batch, hidden]) in float32."""
        shape = input_ids.shape
        flat = [x.reshape(-1, shape[-1]) for x in (input_ids, segment_ids, attention_mask)]
        sequence_output, _ = self.bert(*flat, deterministic=deterministic, rngs=rngs)
        embeddings = pooling.pool(sequence_output, flat[2], self.pooling_mode)
        if self.normalize:
            embeddings = pooling.normalize(embeddings)
        return embeddings.reshape(*shape[:-1], -1)

    def classify(self, embeddings):
        """Softmax-recipe logits [batch, num_labels] of pair embeddings [batch, 2, hidden]."""
        return self.classifier(pooling.pair_features(embeddings)).astype(jnp.float32)


TASK_MODELS = {
    "classification": BertForSequenceClassification,
    "multi_label_classification": BertForSequenceClassification,
    "regression": BertForSequenceClassification,
    "token_classification": BertForTokenClassification,
    "qa": BertForQuestionAnswering,
    "multiple_choice": BertForMultipleChoice,
    "sentence_embedding": BertForSentenceEmbedding,
}
