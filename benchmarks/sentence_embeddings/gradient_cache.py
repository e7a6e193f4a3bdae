"""Gradient caching against the plain in-batch-negatives loss: the train step's activation memory and time.

    python benchmarks/sentence_embeddings/gradient_cache.py [--config=configs/bert_tiny.py] [--batches=64,256]
        [--cached_batches=1024]

For each global batch of (anchor, positive) rows of 128 tokens, the real sentence_embedding train step is
compiled plain and with gradient_cache_chunks = batch / 16 (chunks of 16 rows). Memory is XLA's own figure for
the compiled step (`memory_analysis().temp_size_in_bytes`: the buffers the step allocates besides its inputs
and outputs, which is where activations live), so it does not depend on the machine's load; the step time is
the median of a few runs. Prints one JSON line per (batch, mode).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.finetuning import steps
from bert_jax.runtime import parallel


def measure(model_config, batch: int, chunks: int, seq: int, repeats: int) -> dict:
    sentence = ml_collections.ConfigDict({"loss": "multiple_negatives_ranking", "scale": 20.0, "symmetric": False,
                                          "pooling": "mean", "normalize": True, "gradient_cache_chunks": chunks})
    model = steps.build_task_model(model_config, "sentence_embedding", 0, seed=0, sentence=sentence)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    opt = ml_collections.ConfigDict({"learning_rate": 1e-4, "num_train_steps": 100, "warmup_steps": 0,
                                     "weight_decay": 0.01, "adam_b1": 0.9, "adam_b2": 0.999, "adam_eps": 1e-6,
                                     "max_grad_norm": 1.0})
    mesh = parallel.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}))
    setup, state = steps.make_finetuning_setup(model, "sentence_embedding", opt, mesh, params, 0, sentence=sentence)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, model_config.vocab_size, size=(batch, 2, seq)).astype(np.int32)
    host = {"input_ids": ids, "segment_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids),
            "labels": np.zeros(batch, np.int32), "example_weights": np.ones(batch, np.float32)}
    device_batch = parallel.to_global_batch(host, parallel.batch_sharding(mesh))
    compiled = steps.make_train_step(setup, mesh).lower(state, device_batch).compile()
    memory = compiled.memory_analysis()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        state, metrics = compiled(state, device_batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return {"batch": batch, "gradient_cache_chunks": chunks, "temp_mib": round(memory.temp_size_in_bytes / 2**20, 1),
            "step_s": round(float(np.median(times[1:])), 3), "loss": float(metrics["loss"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/bert_tiny.py")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--cached_batches", default="", help="batches measured with gradient caching only")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    namespace = {}
    with open(args.config, encoding="utf-8") as f:
        exec(f.read(), namespace)  # noqa: S102 - a config file of this repository
    config = config_lib.validate(namespace["get_config"]())
    runs = [(int(b), chunks) for b in args.batches.split(",") for chunks in (0, int(b) // 16)]
    runs += [(int(b), int(b) // 16) for b in args.cached_batches.split(",") if b]
    for batch, chunks in runs:
        print(json.dumps({"config": args.config, **measure(config.model, batch, chunks, args.seq, args.repeats)}),
              flush=True)


if __name__ == "__main__":
    main()
