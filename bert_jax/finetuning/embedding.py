"""Contextual embeddings of text from a pretrained encoder: chosen layers, combined, then pooled.

The BERT paper's feature-based approach (section 5.3) concatenates the last four layers' token vectors;
sentence-embedding users mostly want the [CLS] vector or the mean over real tokens (optionally
L2-normalised, as sentence-transformers' Normalize module does). Layer 0 is the embedding output and layer
L the last encoder layer; negative indices count from the end (-1 = L).

Inputs are sorted by token length and each batch is padded only to its bucket (`buckets.py`: powers of
two from 16 to max_seq_length, one compile per bucket); outputs come back in input order. `embed_file`
streams a text file of any size to a .npy memmap, chunk by chunk, so memory does not grow with the
number of lines.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from bert_jax.config import InputError
from bert_jax.finetuning import buckets, features, transfer
from bert_jax.model import encoder
from bert_jax.runtime import atomic

POOLINGS = ("cls", "mean", "tokens")
COMBINATIONS = ("concat", "mean")
DTYPES = ("float32", "bfloat16")


def _check_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    resolved = [layer if layer >= 0 else num_layers + 1 + layer for layer in layers]
    bad = [given for given, layer in zip(layers, resolved) if not 0 <= layer <= num_layers]
    if bad or not layers:
        raise InputError(f"layers {list(layers)} are not valid for a {num_layers}-layer encoder; use 0..{num_layers} "
                         f"(0: embeddings) or -1..-{num_layers + 1} (-1: last layer).")
    return resolved


class Embedder:
    """A pretrained encoder, jitted once per bucket length, mapping texts to pooled, combined layer outputs.

    `dtype='bfloat16'` is the encoder's own compute dtype switch (`BertConfig.dtype`): parameters stay
    float32 and are cast to bfloat16 at each matmul, whose inputs and outputs are bfloat16; layer norms,
    the attention softmax, pooling and normalisation run in float32, and the output is float32.
    """

    def __init__(self, pretrained: transfer.Pretrained, *, layers: Sequence[int] = (-1,), pooling: str = "cls",
                 combination: str = "concat", dtype: str = "float32", normalize: bool = False):
        if pooling not in POOLINGS or combination not in COMBINATIONS or dtype not in DTYPES:
            raise InputError(f"pooling must be one of {POOLINGS}, combination one of {COMBINATIONS} and dtype one of "
                             f"{DTYPES}; got {pooling!r}, {combination!r}, {dtype!r}.")
        if normalize and pooling == "tokens":
            raise InputError("normalize L2-normalises one vector per line; it needs pooling 'cls' or 'mean', not "
                             "'tokens'.")
        config = encoder.BertConfig.from_config(pretrained.config.model)
        attention_impl = config.attention_impl
        if attention_impl == "cudnn" and (jax.default_backend() != "gpu" or dtype != "bfloat16"):
            attention_impl = "dot_product"  # the same computation, on any backend and dtype
        config = dataclasses.replace(config, dtype=dtype, attention_impl=attention_impl)
        self.layers = _check_layers(list(layers), config.num_hidden_layers)
        self.pooling = pooling
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
            mask = attention_mask[..., None].astype(jnp.float32)
            if pooling == "tokens":
                return hidden * mask  # [batch, seq, width], zeros at padding
            if pooling == "cls":
                pooled = hidden[:, 0]  # [batch, width]
            else:
                pooled = (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)  # [batch, width]
            if normalize:  # as torch.nn.functional.normalize (eps 1e-12), which sentence-transformers uses
                pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
            return pooled

        self._state = jax.device_put(state)  # on the device once, not copied from the host at every batch
        self._embed = jax.jit(embed)
        probe = [jax.ShapeDtypeStruct((1, buckets.MIN_BUCKET), jnp.int32)] * 3
        self.width = int(jax.eval_shape(embed, state, *probe).shape[-1])
        self.stats = buckets.BucketStats()  # over every call: rows, padding, buckets, compiles, seconds

    def check(self, *, max_seq_length: int, batch_size: int) -> None:
        """Refuses sizes the encoder cannot take, in one line naming the flag."""
        if max_seq_length > self.max_positions:
            raise InputError(f"max_seq_length={max_seq_length} exceeds the encoder's {self.max_positions} positions; "
                             f"give --max_seq_length={self.max_positions} or less.")
        if max_seq_length < 3:
            raise InputError(f"max_seq_length={max_seq_length} leaves no room for text between [CLS] and [SEP]; "
                             "give --max_seq_length=3 or more.")
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size} embeds nothing; give --batch_size=1 or more.")

    def output_shape(self, num_texts: int, max_seq_length: int) -> tuple[int, ...]:
        return (num_texts, max_seq_length, self.width) if self.pooling == "tokens" else (num_texts, self.width)

    def __call__(self, texts: Sequence[str], *, max_seq_length: int = 128, batch_size: int = 32,
                 bucketed: bool = True) -> np.ndarray:
        """float32 [len(texts), width] ([len(texts), max_seq_length, width] for 'tokens'), in input order.
        `bucketed=False` pads every batch to max_seq_length (the slower path, same numbers)."""
        self.check(max_seq_length=max_seq_length, batch_size=batch_size)
        if not texts:
            raise InputError("no text to embed: the input has no non-empty lines.")
        out = np.zeros(self.output_shape(len(texts), max_seq_length), np.float32)
        self.embed_into(out, texts, max_seq_length=max_seq_length, batch_size=batch_size, bucketed=bucketed)
        return out

    def embed_into(self, out: np.ndarray, texts: Sequence[str], *, max_seq_length: int, batch_size: int,
                   bucketed: bool = True, progress: Callable[[int], None] | None = None) -> None:
        """Writes the embedding of texts[i] to out[i] (an array or a memmap slice; for 'tokens' it must hold
        zeros beyond each row's bucket, as a new one does), batch by batch in length order; `progress` is
        called with the number of rows written by each batch."""
        special = self.tokenizer.special_ids
        encode_batch = getattr(self.tokenizer, "encode_batch", None)
        ids = encode_batch(list(texts)) if encode_batch else [self.tokenizer.encode(t) for t in texts]
        ids = [row[:max_seq_length - 2] for row in ids]
        lengths = np.asarray([len(row) + 2 for row in ids])  # [CLS] text [SEP]
        self.stats.rows += len(ids)
        self.stats.real_tokens += int(lengths.sum())
        with self.stats.timing(self._embed):
            for rows, real, bucket in buckets.sorted_batches(lengths, batch_size, max_seq_length, bucketed=bucketed):
                packed = [features.pack_pair(ids[row], None, special, bucket) for row in rows]
                arrays = [np.stack(column) for column in zip(*packed)]
                vectors = np.asarray(self._embed(self._state, *arrays))[:real]
                if self.pooling == "tokens":
                    out[rows[:real], :bucket] = vectors
                else:
                    out[rows[:real]] = vectors
                self.stats.add_batch(bucket, batch_size, max_seq_length)
                if progress:
                    progress(real)


# ------------------------------------------------------------------ files


def _check_input(path: str) -> None:
    if os.path.isdir(path):
        raise InputError(f"--input {path} is a directory; give one UTF-8 text file, one line per text to embed.")
    if not os.path.isfile(path):
        raise InputError(f"--input file not found: {path}.")


def line_chunks(path: str, chunk_lines: int) -> Iterator[list[str]]:
    """The file's non-empty lines, stripped, in lists of at most `chunk_lines`."""
    _check_input(path)
    chunk: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    chunk.append(line)
                    if len(chunk) == chunk_lines:
                        yield chunk
                        chunk = []
    except UnicodeDecodeError as e:
        raise InputError(f"--input {path} is not UTF-8 text ({e}); convert it with iconv.") from e
    if chunk:
        yield chunk


def embed_file(embedder: Embedder, input_path: str, output_path: str, *, max_seq_length: int = 128,
               batch_size: int = 32, chunk_lines: int = 65536, log_every: int = 10000,
               bucketed: bool = True) -> dict[str, Any]:
    """Embeds every non-empty line of `input_path` into the .npy `output_path`, in input order.

    Two passes over the input: one counts its lines (and checks it is UTF-8) so the output can be
    created at its final size, one embeds `chunk_lines` lines at a time (sorted by length within the
    chunk) into a memmap of the .npy. Memory is one chunk's texts and tokens, whatever the file's size.
    The array is written under a hidden name beside `output_path` and renamed to it once complete: a
    killed or failed run leaves no file (and no truncated array) under `output_path`."""
    embedder.check(max_seq_length=max_seq_length, batch_size=batch_size)
    if chunk_lines < 1:
        raise InputError(f"chunk_lines={chunk_lines} reads nothing; give --chunk_lines=1 or more.")
    target = os.path.realpath(output_path)  # a symlink's target is replaced, as np.save would write through it
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise InputError(f"--output={output_path}: the directory {directory} does not exist; create it first.")
    total = sum(len(chunk) for chunk in line_chunks(input_path, chunk_lines))
    if not total:
        raise InputError("no text to embed: the input has no non-empty lines.")
    shape = embedder.output_shape(total, max_seq_length)
    atomic.remove_leftovers(target)
    temporary = atomic.temporary_name(target)
    started = time.perf_counter()
    done, logged = 0, 0

    def progress(rows: int) -> None:
        nonlocal done, logged
        done += rows
        if done - logged >= log_every or done == total:
            logged = done
            rate = done / max(time.perf_counter() - started, 1e-9)
            logging.info("embedded %d/%d lines (%.1f%%), %.1f lines/s, %.0f s to go", done, total,
                         100 * done / total, rate, (total - done) / rate)

    try:
        out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
        start, grew = 0, False
        for chunk in line_chunks(input_path, chunk_lines):
            grew = start + len(chunk) > total
            if grew:
                break
            embedder.embed_into(out[start:start + len(chunk)], chunk, max_seq_length=max_seq_length,
                                batch_size=batch_size, bucketed=bucketed, progress=progress)
            start += len(chunk)
            out.flush()  # written back chunk by chunk: dirty pages do not pile up in memory
        if grew or start != total:
            raise InputError(f"--input {input_path} changed while it was read ({total} non-empty lines at first); "
                             "embed a file that no one is writing.")
        del out
        atomic.commit(temporary, target)
    except BaseException:
        atomic.remove(temporary)
        raise
    seconds = time.perf_counter() - started
    return {"output": output_path, "shape": list(shape), "lines": total, "seconds": round(seconds, 3),
            "lines_per_second": round(total / max(seconds, 1e-9), 1)}
