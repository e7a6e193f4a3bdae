"""`finetune(config, workdir)`: load a pretrained encoder, train a task head on it, keep the best dev score.

Reads top to bottom: resolve the task, checkpoint, tokenizer and data once; then for each seed transfer
the encoder into a fresh task model, train for `num_train_epochs` with evaluations on every dev split,
keep the parameters of the best evaluation (on the task's primary metric of the first dev split), and
write that evaluation's predictions, the parameters and a metrics JSON.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from bert_jax.config import InputError
from bert_jax.data import tokenizer_factory
from bert_jax.finetuning import config as config_lib
from bert_jax.finetuning import steps, task_data, transfer
from bert_jax.finetuning import tasks as tasks_lib
from bert_jax.runtime import atomic, parallel, workdir_lock
from bert_jax.runtime import checkpoint as checkpoint_lib


def _batch_rows(indices: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(row indices, example weights) per batch; the last batch is padded with weight-0 copies of row 0."""
    batches = []
    for start in range(0, len(indices), batch_size):
        rows = indices[start:start + batch_size]
        weights = np.ones(batch_size, np.float32)
        weights[len(rows):] = 0.0
        batches.append((np.concatenate([rows, np.full(batch_size - len(rows), indices[0])]), weights))
    return batches


def _device_batch(arrays: dict[str, np.ndarray], keys, rows: np.ndarray, weights: np.ndarray, mesh):
    """This process's share of a global batch, as global arrays sharded over the mesh's data axis."""
    rows, weights = parallel.process_rows(rows), parallel.process_rows(weights)
    host = {name: arrays[name][rows] for name in keys}
    host["example_weights"] = weights
    return parallel.to_global_batch(host, parallel.batch_sharding(mesh))


def predict(predict_step, params, arrays, batch_size: int, mesh) -> np.ndarray:
    """Logits of every row of `arrays`, in order."""
    num_rows = len(arrays["input_ids"])
    outputs = []
    for rows, _ in _batch_rows(np.arange(num_rows), batch_size):
        batch = _device_batch(arrays, steps.MODEL_INPUTS, rows, np.ones(len(rows), np.float32), mesh)
        outputs.append(np.asarray(jax.device_get(predict_step(params, batch))))
    return np.concatenate(outputs)[:num_rows]


class _Data:
    """The task's examples and features: the training set and every dev split."""

    def __init__(self, task, config, tokenizer):
        def load(split, limit):
            return tasks_lib.load_examples(task, split, data_dir=config.data.data_dir,
                                           tfds_data_dir=config.data.tfds_data_dir or None, max_examples=limit)
        self.train_examples = load("train", config.data.max_train_examples)
        self.train = task_data.featurize(task, self.train_examples, tokenizer, config, training=True)
        self.eval_splits = {}
        for split in task.eval_splits:
            examples = load(split, config.data.max_eval_examples)
            self.eval_splits[split] = (examples, task_data.featurize(task, examples, tokenizer, config, training=False))


def _evaluate(task, config, data: _Data, predict_step, params, mesh) -> tuple[dict, dict]:
    """({split: metrics}, {split: predictions payload}) on every dev split."""
    metrics, payloads = {}, {}
    for split, (examples, features) in data.eval_splits.items():
        logits = predict(predict_step, params, features.arrays, config.train.eval_batch_size, mesh)
        metrics[split], payloads[split] = task_data.score(task, examples, features, logits, config)
    return metrics, payloads


def _train_one_seed(task, config, data: _Data, model_config, pretrained, mesh, seed: int, seed_dir: str) -> dict:
    num_labels = task_data.num_labels(task)
    model = steps.build_task_model(model_config, task.kind, num_labels, seed)
    moved = transfer.transfer_encoder(pretrained.params, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    batch_size = config.train.global_batch_size
    num_examples = len(data.train.arrays["input_ids"])
    steps_per_epoch = math.ceil(num_examples / batch_size)
    num_steps = max(1, round(config.train.num_train_epochs * steps_per_epoch))
    logging.info("seed %d: %d training rows, %d steps (%d per epoch); %d encoder tensors loaded, fresh: %s, "
                 "dropped: %s", seed, num_examples, num_steps, steps_per_epoch, len(moved.loaded),
                 ", ".join(moved.fresh), ", ".join(sorted({n.split("/")[0] for n in moved.dropped})) or "none")
    setup, state = steps.make_finetuning_setup(model, task.kind, steps.optimizer_config(config.train, num_steps), mesh,
                                    moved.params, seed)
    train_step, predict_step = steps.make_train_step(setup, mesh), steps.make_predict_step(setup, mesh)
    eval_every = max(1, steps_per_epoch // config.train.evals_per_epoch)
    keys = task_data.train_keys(task.kind)
    rng = np.random.default_rng(seed)
    history, best, step, started = [], None, 0, time.time()
    while step < num_steps:
        for rows, weights in _batch_rows(rng.permutation(num_examples), batch_size):
            state, train_metrics = train_step(state, _device_batch(data.train.arrays, keys, rows, weights, mesh))
            step += 1
            if step % config.train.log_every_steps == 0:
                logging.info("step %d/%d loss %.4f lr %.3g", step, num_steps, float(train_metrics["loss"]),
                             float(train_metrics["learning_rate"]))
            if step % eval_every == 0 or step == num_steps:
                metrics, payloads = _evaluate(task, config, data, predict_step, state.params, mesh)
                primary = metrics[task.eval_splits[0]][task_data.primary_metric(task)]
                primary = -math.inf if math.isnan(primary) else primary  # a constant prediction has no correlation
                history.append({"step": step, "epoch": step / steps_per_epoch, **metrics})
                logging.info("step %d dev %s", step, json.dumps(metrics))
                if best is None or primary > best["primary"]:
                    best = {"primary": primary, "step": step, "metrics": metrics, "payloads": payloads,
                            "params": nnx.to_pure_dict(jax.device_get(state.params))}
            if step == num_steps:
                break
    if jax.process_index() == 0:
        os.makedirs(seed_dir, exist_ok=True)
        for split, (examples, _) in data.eval_splits.items():
            task_data.write_predictions(os.path.join(seed_dir, f"predictions_{split}"), task, examples,
                                        best["payloads"][split])
        checkpoint_lib.save_finetuned_params(seed_dir, best["params"])
    return {"seed": seed, "best_step": best["step"], "best": best["metrics"], "history": history,
            "train_seconds": round(time.time() - started, 1), "num_train_steps": num_steps}


def _summary(task, results: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every best dev metric."""
    summary = {}
    for split in task.eval_splits:
        names = results[0]["best"][split].keys()
        values = {name: [r["best"][split][name] for r in results] for name in names}
        summary[split] = {name: {"mean": float(np.mean(v)), "std": float(np.std(v))} for name, v in values.items()
                          if all(isinstance(x, (int, float)) for x in v)}
    return summary


def _refuse_finished_workdir(workdir: str) -> None:
    """A finished fine-tune's metrics, predictions and parameters are results: a rerun never overwrites them."""
    metrics_path = os.path.join(workdir, "metrics.json")
    if os.path.exists(metrics_path):
        raise InputError(f"{workdir} already holds a finished fine-tune ({metrics_path}); give a new --workdir, "
                         "or delete that directory to run again.")


def finetune(config, workdir: str) -> dict:
    """Fine-tunes `config.init_checkpoint` on `config.task`; returns (and writes) the metrics JSON.

    Holds the workdir's lock throughout, from before the checkpoint and data are loaded, so a second
    fine-tuning in the same workdir is refused at once rather than overwriting this one's seeds.
    """
    config = config_lib.validate(config)
    _refuse_finished_workdir(workdir)
    task = tasks_lib.get_task(config.task)
    with workdir_lock.workdir_lock(workdir, "fine-tuning"):
        return _finetune(config, task, workdir)


def _finetune(config, task, workdir: str) -> dict:
    """The fine-tuning itself, which `finetune` calls with the workdir locked."""
    pretrained = transfer.load_pretrained(config.init_checkpoint)
    model_config = transfer.resolve_model_config(pretrained.config.model, config.model)
    tokenizer = pretrained.tokenizer
    tokenizer_factory.check_fits_model(tokenizer, model_config.vocab_size)
    if config.data.max_seq_length > model_config.max_position_embeddings:
        raise InputError(f"config.data.max_seq_length={config.data.max_seq_length} exceeds the checkpoint's "
                         f"max_position_embeddings={model_config.max_position_embeddings}; lower it.")
    mesh = parallel.make_mesh(config.mesh)
    parallel.check_batch_size(config.train.global_batch_size, mesh)
    parallel.check_batch_size(config.train.eval_batch_size, mesh, "config.train.eval_batch_size")
    data = _Data(task, config, tokenizer)
    os.makedirs(workdir, exist_ok=True)
    seeds = [config.train.seed + i for i in range(config.train.num_seeds)]
    results = [_train_one_seed(task, config, data, model_config, pretrained, mesh, seed,
                               os.path.join(workdir, f"seed_{seed}")) for seed in seeds]
    report = {"task": task.name, "init_checkpoint": pretrained.source, "primary_metric": task_data.primary_metric(task),
              "summary": _summary(task, results), "seeds": results, "config": config.to_dict()}
    if jax.process_index() == 0:
        atomic.write_json(os.path.join(workdir, "metrics.json"), report, indent=2, default=str)
    return report
