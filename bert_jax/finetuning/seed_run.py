"""One seed of a fine-tune: train, evaluate on dev, keep the best parameters, checkpoint, resume.

The order of the training rows is a function of (seed, epoch) and the dropout keys of (seed, step), so
the position in the data is just the step: a run restored from its checkpoint (train state, best
parameters so far, dev history) continues with the very batches and keys an uninterrupted run would use,
and ends bitwise equal to it. Checkpoints are written after every dev evaluation (so the best-so-far is
never lost), every `checkpoint.every_steps` steps, and on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from bert_jax.config import InputError
from bert_jax.finetuning import steps, task_data, transfer
from bert_jax.runtime import atomic, numerics, parallel, preemption
from bert_jax.runtime import checkpoint as checkpoint_lib

RESULT = "result.json"  # a finished seed's summary: a resumed fine-tune skips that seed


@dataclasses.dataclass
class Context:
    """What every seed shares: the task, config, data, encoder config, pretrained weights, mesh, tokenizer."""

    task: Any
    config: Any
    data: Any  # runner._Data
    model_config: Any
    pretrained: transfer.Pretrained
    mesh: Any


class Preempted(Exception):
    """SIGTERM or Ctrl-C: the seed's checkpoint is saved; the same command resumes."""


def batch_rows(indices: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(row indices, example weights) per batch; the last batch is padded with weight-0 copies of row 0."""
    batches = []
    for start in range(0, len(indices), batch_size):
        rows = indices[start:start + batch_size]
        weights = np.ones(batch_size, np.float32)
        weights[len(rows):] = 0.0
        batches.append((np.concatenate([rows, np.full(batch_size - len(rows), indices[0])]), weights))
    return batches


def device_batch(arrays: dict[str, np.ndarray], keys, rows: np.ndarray, weights: np.ndarray, mesh):
    """This process's share of a global batch, as global arrays sharded over the mesh's data axis."""
    rows, weights = parallel.process_rows(rows), parallel.process_rows(weights)
    host = {name: arrays[name][rows] for name in keys}
    host["example_weights"] = weights
    return parallel.to_global_batch(host, parallel.batch_sharding(mesh))


def predict_logits(predict_step, params, arrays, batch_size: int, mesh) -> np.ndarray:
    """Logits of every row of `arrays`, in order."""
    num_rows = len(arrays["input_ids"])
    outputs = []
    for rows, _ in batch_rows(np.arange(num_rows), batch_size):
        batch = device_batch(arrays, steps.MODEL_INPUTS, rows, np.ones(len(rows), np.float32), mesh)
        outputs.append(np.asarray(jax.device_get(predict_step(params, batch))))
    return np.concatenate(outputs)[:num_rows]


def evaluate(ctx: Context, predict_step, params, splits: dict) -> tuple[dict, dict]:
    """({split: metrics}, {split: predictions payload}) on the given {split: (examples, features)}."""
    metrics, payloads = {}, {}
    for split, (examples, features) in splits.items():
        logits = predict_logits(predict_step, params, features.arrays, ctx.config.train.eval_batch_size, ctx.mesh)
        metrics[split], payloads[split] = task_data.score(ctx.task, examples, features, logits, ctx.config)
    return metrics, payloads


def _epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class _Progress:
    """The dev history and the best evaluation so far; stored as JSON in every checkpoint."""

    def __init__(self, stored: dict | None = None):
        stored = stored or {}
        self.history: list[dict] = stored.get("history", [])
        self.best: dict | None = stored.get("best")

    def to_json(self) -> dict:
        return {"history": self.history, "best": self.best}


def train_seed(ctx: Context, seed: int, seed_dir: str) -> dict:
    """Trains (or resumes, or reads the result of) one seed; returns its result and writes its best params,
    dev/test predictions and `result.json` in `seed_dir`."""
    result_path = os.path.join(seed_dir, RESULT)
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)
        logging.info("seed %d finished before (%s); not trained again", seed, result_path)
        return {**result, "params": checkpoint_lib.restore_finetuned_params(seed_dir)}
    task, config, data, mesh = ctx.task, ctx.config, ctx.data, ctx.mesh
    sentence = config.sentence if task.kind == "sentence_embedding" else None
    model = steps.build_task_model(ctx.model_config, task.kind, task_data.num_labels(task), seed, sentence=sentence)
    moved = transfer.transfer_encoder(ctx.pretrained.params, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    batch_size = config.train.global_batch_size
    num_examples = len(data.train.arrays["input_ids"])
    steps_per_epoch = math.ceil(num_examples / batch_size)
    num_steps = max(1, round(config.train.num_train_epochs * steps_per_epoch))
    setup, state = steps.make_finetuning_setup(model, task.kind, steps.optimizer_config(config.train, num_steps),
                                               mesh, moved.params, seed, sentence=sentence)
    train_step, predict_step = steps.make_train_step(setup, mesh), steps.make_predict_step(setup, mesh)
    sharding = {"train": setup.state_sharding, "best": setup.state_sharding.params}
    checkpointer = checkpoint_lib.Checkpointer(seed_dir, max_to_keep=config.checkpoint.max_to_keep, async_save=False,
                                               cleanup_tmp=True)
    progress, best_params = _Progress(), None
    restored = checkpointer.restore_latest(_abstract({"train": state, "best": state.params}, sharding))
    if restored is not None:
        step0, tree, meta = restored
        state, best_params, progress = tree["train"], tree["best"], _Progress(meta["data_state"])
        logging.info("seed %d: resumed from the checkpoint of step %d (%s)", seed, step0,
                     checkpointer.step_path(step0))
    else:
        logging.info("seed %d: %d training rows, %d steps (%d per epoch); %d encoder tensors loaded, fresh: %s, "
                     "dropped: %s", seed, num_examples, num_steps, steps_per_epoch, len(moved.loaded),
                     ", ".join(moved.fresh), ", ".join(sorted({n.split("/")[0] for n in moved.dropped})) or "none")
    eval_every = max(1, steps_per_epoch // config.train.evals_per_epoch)
    keys = task_data.train_keys(task.kind)
    streak = numerics.NonFiniteStreak(config.train.max_consecutive_nonfinite_steps)
    watcher = preemption.PreemptionWatcher()
    started, step = time.time(), int(jax.device_get(state.step))
    try:
        while step < num_steps:
            epoch, index = divmod(step, steps_per_epoch)
            rows, weights = batch_rows(_epoch_order(seed, epoch, num_examples), batch_size)[index]
            state, train_metrics = train_step(state, device_batch(data.train.arrays, keys, rows, weights, mesh))
            step += 1
            if streak.record(step, bool(jax.device_get(train_metrics["nonfinite"]))):
                raise InputError(f"seed {seed}: steps {streak.first_step}-{step} all had a non-finite loss or gradient "
                                 "(their updates were skipped): the fine-tune has diverged; lower "
                                 "config.train.learning_rate or check the data.")
            if step % config.train.log_every_steps == 0:
                logging.info("step %d/%d loss %.4f lr %.3g", step, num_steps, float(train_metrics["loss"]),
                             float(train_metrics["learning_rate"]))
            evaluated = data.eval_splits and (step % eval_every == 0 or step == num_steps)
            if evaluated:
                metrics, _ = evaluate(ctx, predict_step, state.params, data.eval_splits)
                primary = task_data.selection_score(task, config, metrics[task.eval_splits[0]])
                progress.history.append({"step": step, "epoch": step / steps_per_epoch, **metrics})
                logging.info("step %d dev %s", step, json.dumps(metrics))
                if progress.best is None or primary > progress.best["primary"]:
                    progress.best = {"primary": primary, "step": step, "metrics": metrics}
                    best_params = jax.tree.map(jnp.copy, state.params)
            preempted = watcher.should_stop(step)
            due = config.checkpoint.every_steps and step % config.checkpoint.every_steps == 0
            if evaluated or due or preempted or step == num_steps:
                tree = {"train": state, "best": best_params if best_params is not None else state.params}
                checkpointer.save(step, tree, config=config, tokenizer=ctx.pretrained.tokenizer,
                                  data_state=progress.to_json())
                checkpointer.wait()
                preemption.kill_if_test_asks(step, "save")
            if preempted:
                raise Preempted(f"stopped at step {step} of seed {seed} with its checkpoint saved; run the same "
                                "command to resume")
    finally:
        watcher.close()
        checkpointer.close()
    if best_params is None or not data.eval_splits:
        best_params, progress.best = state.params, {"primary": None, "step": step, "metrics": {}}
    return _finish_seed(ctx, seed, seed_dir, predict_step, best_params, progress, num_steps, time.time() - started)


def _finish_seed(ctx: Context, seed: int, seed_dir: str, predict_step, best_params, progress: _Progress,
                 num_steps: int, seconds: float) -> dict:
    """Predictions of the best parameters on dev and test, the parameters themselves, and result.json."""
    splits = dict(ctx.data.eval_splits)
    if ctx.data.test is not None:
        splits["test"] = ctx.data.test
    metrics, payloads = evaluate(ctx, predict_step, best_params, splits)
    params = nnx.to_pure_dict(jax.device_get(best_params))
    result = {"seed": seed, "best_step": progress.best["step"], "best_primary": progress.best["primary"],
              "best": progress.best["metrics"],
              "test": metrics.get("test") or None, "history": progress.history,
              "train_seconds": round(seconds, 1), "num_train_steps": num_steps}
    if jax.process_index() == 0:
        os.makedirs(seed_dir, exist_ok=True)
        for split, (examples, _) in splits.items():
            task_data.write_predictions(os.path.join(seed_dir, f"predictions_{split}"), ctx.task, examples,
                                        payloads[split])
        checkpoint_lib.save_finetuned_params(seed_dir, params)
        atomic.write_json(os.path.join(seed_dir, RESULT), result, indent=2)
    result["params"] = params
    return result
