"""`finetune(config, workdir)`: load a pretrained encoder, train a task head on it, keep the best dev score.

Reads top to bottom: resolve the task (a benchmark, or the user's own files), checkpoint, tokenizer and
data once; then train each seed (`seed_run.py`: evaluations on every dev split, the best one kept,
checkpoints to resume from), score the test file with the chosen checkpoint, and write the best seed's
self-contained model directory (`model_dir.py`) and a metrics JSON.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from bert_jax.config import InputError
from bert_jax.data import tokenizer_factory
from bert_jax.finetuning import config as config_lib
from bert_jax.finetuning import (
    model_dir,
    own_tasks,
    seed_run,
    sentence_encoder,
    task_data,
    transfer,
)
from bert_jax.finetuning import tasks as tasks_lib
from bert_jax.runtime import atomic, parallel, workdir_lock

_CONFIG = model_dir.FINETUNE_RECORD


class _Data:
    """The task's examples and features: the training set, every dev split, and the test split if scored."""

    def __init__(self, task, config, tokenizer):
        def load(split, limit):
            return tasks_lib.load_examples(task, split, data_dir=config.data.data_dir,
                                           tfds_data_dir=config.data.tfds_data_dir or None, max_examples=limit)

        def featurized(split):
            examples = load(split, config.data.max_eval_examples)
            return examples, task_data.featurize(task, examples, tokenizer, config, training=False)

        self.train_examples = load("train", config.data.max_train_examples)
        self.train = task_data.featurize(task, self.train_examples, tokenizer, config, training=True)
        self.eval_splits = {split: featurized(split) for split in task.eval_splits}
        test = own_tasks.test_split(task)
        self.test = featurized(test) if test else None


def _summary(task, results: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every best dev metric."""
    return {split: _split_summary([r["best"][split] for r in results]) for split in task.eval_splits}


def _split_summary(per_seed: list[dict]) -> dict:
    values = {name: [m[name] for m in per_seed] for name in per_seed[0]}
    return {name: {"mean": float(np.mean(v)), "std": float(np.std(v))} for name, v in values.items()
            if all(isinstance(x, (int, float)) for x in v)}


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
    task = tasks_lib.resolve_task(config)
    with workdir_lock.workdir_lock(workdir, "fine-tuning"):
        return _finetune(config, task, workdir)


def _finetune(config, task, workdir: str) -> dict:
    """The fine-tuning itself, which `finetune` calls with the workdir locked."""
    _check_resume_config(config, task, workdir)
    pretrained = transfer.load_pretrained(config.init_checkpoint)
    model_config = transfer.resolve_model_config(pretrained.config.model, config.model)
    tokenizer = pretrained.tokenizer
    tokenizer_factory.check_fits_model(tokenizer, model_config.vocab_size)
    if config.data.max_seq_length > model_config.max_position_embeddings:
        raise InputError(f"config.data.max_seq_length={config.data.max_seq_length} exceeds the checkpoint's "
                         f"max_position_embeddings={model_config.max_position_embeddings}; lower it to "
                         f"{model_config.max_position_embeddings} or less.")
    mesh = parallel.make_mesh(config.mesh)
    parallel.check_batch_size(config.train.global_batch_size, mesh)
    parallel.check_batch_size(config.train.eval_batch_size, mesh, "config.train.eval_batch_size")
    data = _Data(task, config, tokenizer)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0 and not os.path.isfile(os.path.join(workdir, _CONFIG)):
        atomic.write_json(os.path.join(workdir, _CONFIG), _resume_record(config, task), indent=2)
    ctx = seed_run.Context(task, config, data, model_config, pretrained, mesh)
    seeds = [config.train.seed + i for i in range(config.train.num_seeds)]
    try:
        results = [seed_run.train_seed(ctx, seed, os.path.join(workdir, f"seed_{seed}")) for seed in seeds]
    except seed_run.Preempted as stopped:
        logging.warning("preempted: %s", stopped)
        return {"task": task.name, "preempted": True, "message": str(stopped)}
    chosen = _chosen_seed(results)
    params = {r["seed"]: r.pop("params") for r in results}
    report = {"task": task.name, "kind": task.kind, "init_checkpoint": pretrained.source,
              "primary_metric": task_data.primary_metric(task, config), "label_names": list(task.label_names),
              "summary": _summary(task, results), "seeds": results, "config": config.to_dict()}
    if results[chosen]["test"]:
        report["test"] = results[chosen]["test"]
        report["test_summary"] = _split_summary([r["test"] for r in results])
    report["model_dir"] = os.path.join(os.path.abspath(workdir), model_dir.MODEL_DIR)
    report["model_seed"] = results[chosen]["seed"]
    if task.kind == "sentence_embedding" and (config.sentence.eval_sts_file or config.sentence.eval_beir_dir):
        encode = sentence_encoder.SentenceEncoder(model_config, params[results[chosen]["seed"]], tokenizer,
                                                  config.sentence, mesh, max_seq_length=config.data.max_seq_length,
                                                  batch_size=config.train.eval_batch_size)
        report["sentence_evaluation"] = sentence_encoder.evaluations(encode, config.sentence, task)
        logging.info("sentence evaluation: %s", json.dumps(report["sentence_evaluation"]))
    if jax.process_index() == 0:
        stored = ml_collections.ConfigDict(pretrained.config.to_dict())
        stored.model = model_config
        model_dir.save(report["model_dir"], params[results[chosen]["seed"]], stored, tokenizer, task, config,
                       {"source": pretrained.source, "seed": results[chosen]["seed"],
                        "best_step": results[chosen]["best_step"], "dev": results[chosen]["best"]})
        atomic.write_json(os.path.join(workdir, "metrics.json"), report, indent=2, default=str)
    return report


def _chosen_seed(results: list[dict]) -> int:
    """The seed whose best dev score is highest (the first when there is no dev set): its model is kept."""
    scores = [r.get("best_primary") for r in results]
    if any(s is None for s in scores):
        return 0
    return int(np.argmax(scores))


def _resume_record(config, task) -> dict:
    """The settings and the content digests of the user's files: what a resumed fine-tune must match."""
    digests = {}
    for split, path in (task.local_files.items() if task.own else ()):
        with open(path, "rb") as f:
            digests[split] = hashlib.file_digest(f, "sha256").hexdigest()
    return {"config": json.loads(config.to_json()), "files": digests}


def _check_resume_config(config, task, workdir: str) -> None:
    """A fine-tune resumed in its workdir must be the same fine-tune: a changed setting or data file is refused."""
    path = os.path.join(workdir, _CONFIG)
    if not os.path.isfile(path):
        return
    stored = _read_json_object(path)
    if not isinstance(stored.get("config"), dict) or not isinstance(stored.get("files"), dict):
        logging.warning("%s is unreadable; resuming without comparing the settings", path)
        return
    now = _resume_record(config, task)
    changed = [f"{name}: {before!r} -> {after!r}" for name, before, after in _differences(stored["config"], now["config"])]
    changed += [f"the {split} file {task.local_files.get(split, '')} has changed" for split in
                sorted(set(stored["files"]) | set(now["files"])) if stored["files"].get(split) != now["files"].get(split)]
    if changed:
        raise InputError(f"{workdir} holds an unfinished fine-tune started with other settings or data "
                         f"({'; '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}); run the same command on "
                         "the same files to resume it, or give a new --workdir.")


def _read_json_object(path: str) -> dict:
    """The JSON object in `path`, or {} when it cannot be read (damaged, or of another shape)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _differences(before, after, prefix: str = "config"):
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            yield from _differences(before.get(key), after.get(key), f"{prefix}.{key}")
    elif before != after and not (isinstance(before, list) and isinstance(after, list) and tuple(before) == tuple(after)):
        yield prefix, before, after
