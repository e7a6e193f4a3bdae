"""Contextual embeddings of text from a pretrained encoder: chosen layers, combined, then pooled.

The BERT paper's feature-based approach (section 5.3) concatenates the last four layers' token vectors;
sentence-embedding users mostly want the [CLS] vector or the mean over real tokens. Layer 0 is the
embedding output and layer L the last encoder layer; negative indices count from the end (-1 = L).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.config import InputError
from bert_jax.finetuning import features, transfer
from bert_jax.model import encoder

POOLINGS = ("cls", "mean", "tokens")
COMBINATIONS = ("concat", "mean")


def _check_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    resolved = [layer if layer >= 0 else num_layers + 1 + layer for layer in layers]
    bad = [given for given, layer in zip(layers, resolved) if not 0 <= layer <= num_layers]
    if bad or not layers:
        raise InputError(f"layers {list(layers)} are not valid for a {num_layers}-layer encoder; use 0..{num_layers} "
                         f"(0: embeddings) or -1..-{num_layers + 1} (-1: last layer).")
    return resolved


class Embedder:
    """A pretrained encoder compiled once to map [batch, seq] inputs to pooled, combined layer outputs."""

    def __init__(self, pretrained: transfer.Pretrained, *, layers: Sequence[int] = (-1,), pooling: str = "cls",
                 combination: str = "concat"):
        if pooling not in POOLINGS or combination not in COMBINATIONS:
            raise InputError(f"pooling must be one of {POOLINGS} and combination one of {COMBINATIONS}; "
                             f"got {pooling!r}, {combination!r}.")
        config = encoder.BertConfig.from_config(pretrained.config.model)
        self.layers = _check_layers(list(layers), config.num_hidden_layers)
        self.tokenizer = pretrained.tokenizer
        self.max_positions = config.max_position_embeddings
        # Shapes only: every weight comes from the checkpoint, so a random initialisation would be wasted work.
        bert = nnx.eval_shape(lambda: encoder.BertModel(config, add_pooling_layer=False, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(bert, nnx.Param)
        encoder_params = {k: v for k, v in pretrained.params[transfer.ENCODER].items() if k != "pooler"}
        nnx.replace_by_pure_dict(state, encoder_params)

        def embed(state, input_ids, segment_ids, attention_mask):
            outputs = nnx.merge(graphdef, state).all_hidden_states(input_ids, segment_ids, attention_mask)
            chosen = [outputs[i].astype(jnp.float32) for i in self.layers]
            hidden = jnp.concatenate(chosen, -1) if combination == "concat" else jnp.mean(jnp.stack(chosen), 0)
            if pooling == "cls":
                return hidden[:, 0]  # [batch, width]
            mask = attention_mask[..., None].astype(jnp.float32)
            if pooling == "mean":
                return (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)  # [batch, width]
            return hidden * mask  # [batch, seq, width], zeros at padding

        self._state = state
        self._embed = jax.jit(embed)

    def __call__(self, texts: Sequence[str], *, max_seq_length: int = 128, batch_size: int = 32) -> np.ndarray:
        """float32 [len(texts), width] ([len(texts), max_seq_length, width] for 'tokens')."""
        if max_seq_length > self.max_positions:
            raise InputError(f"max_seq_length={max_seq_length} exceeds the encoder's {self.max_positions} positions; "
                             f"give --max_seq_length={self.max_positions} or less.")
        if max_seq_length < 3:
            raise InputError(f"max_seq_length={max_seq_length} leaves no room for text between [CLS] and [SEP]; "
                             "give --max_seq_length=3 or more.")
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size} embeds nothing; give --batch_size=1 or more.")
        if not texts:
            raise InputError("no text to embed: the input has no non-empty lines.")
        rows = [features.pack_pair(self.tokenizer.encode(t)[:max_seq_length - 2], None, self.tokenizer.special_ids,
                                   max_seq_length) for t in texts]
        input_ids, segment_ids, attention_mask = (np.stack(column) for column in zip(*rows))
        outputs = []
        for start in range(0, len(texts), batch_size):
            chunk = slice(start, start + batch_size)
            padded = [np.resize(a[chunk], (batch_size, max_seq_length)) for a in (input_ids, segment_ids, attention_mask)]
            outputs.append(np.asarray(self._embed(self._state, *padded))[:len(input_ids[chunk])])
        return np.concatenate(outputs)
