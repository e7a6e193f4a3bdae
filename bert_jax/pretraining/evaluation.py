"""Held-out MLM/NSP evaluation over a fixed set of instances and masks.

The instances come from `make_eval_batches` with `config.data.eval_seed` and the masks from keys derived
from that seed and the batch index, so the figures of a checkpoint are identical in the run that wrote it
and in `python -m bert_jax.evaluate` later, on any device count.
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np

from bert_jax import config as config_lib
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import pipeline, tlm_mixture, vocab
from bert_jax.pretraining import losses, run_checkpoint
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import parallel


def eval_batches(source, config, mesh, special_ids: vocab.SpecialIds) -> list[dict[str, np.ndarray]]:
    """The fixed evaluation set as this process's rows of each global batch."""
    batch_size = config.train.eval_batch_size
    parallel.check_batch_size(batch_size, mesh, "config.train.eval_batch_size")
    batches = pipeline.make_eval_batches(
        source, max_seq_length=config.data.max_seq_length, batch_size=batch_size,
        num_examples=config.data.eval_num_examples, seed=config.data.eval_seed,
        short_seq_prob=config.data.short_seq_prob, objective=config.objective,
        instance_format=config.data.instance_format, special_ids=special_ids,
        language_ids=tuple(config.data.languages) or None)
    return [parallel.process_rows(batch) for batch in batches]


def run_evaluation(eval_step, params, batches, mesh, eval_seed: int, teacher=None, languages=()) -> dict[str, float]:
    """Sums the statistics of every batch; reports mlm_loss, mlm_accuracy, nsp_/sop_ metrics (distillation:
    the distill_* terms against `teacher`), num_examples; with a multilingual run's `languages` (the names
    of its language ids, then 'tlm' for a mixed run's translation pairs: `config.eval_groups`), also
    mlm_accuracy/<language> and mlm_loss/<language>, from the same pass."""
    base_key = jax.random.key(eval_seed)
    sharding = parallel.batch_sharding(mesh)
    totals = None
    for index, batch in enumerate(batches):
        sums = eval_step(params, parallel.to_global_batch(batch, sharding), jax.random.fold_in(base_key, index),
                         teacher)
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    if totals is None:
        raise config_lib.InputError("the evaluation set is empty: give more held-out text.")
    totals = jax.device_get(totals)
    metrics = losses.summarize(totals) | losses.summarize_languages(totals, languages)
    metrics["num_examples"] = int(round(float(jax.device_get(totals["num_examples"]))))
    return metrics


def evaluate_checkpoint(workdir: str, *, step: int | None = None, corpus: str = "") -> dict[str, float]:
    """Evaluates a run's checkpoint on `corpus` (text files), or on the run's own held-out split if empty."""
    run = run_checkpoint.restore_run_checkpoint(workdir, step)
    config, tokenizer = run.config, run.tokenizer
    if corpus and config.data.instance_format == "translation_pairs":
        raise config_lib.InputError(
            "--corpus evaluates monolingual text rows, but this run trained on translation pairs (XLM's TLM rows "
            "with language ids), which --corpus cannot build; evaluate without --corpus to score the run's own "
            "held-out pairs (and languages, when it mixed in monolingual text).")
    with tempfile.TemporaryDirectory() as scratch:
        if corpus:
            source = corpus_lib.build_eval_source(corpus, tokenizer, os.path.join(scratch, "tfds"),
                                                   source="--corpus")
        else:
            prepare = (tlm_mixture.data_module(config.data).prepare_default_or_given
                       if config.data.instance_format == "translation_pairs" else corpus_lib.prepare_default_or_given)
            _, sources = prepare(config.data, workdir, tokenizer=tokenizer)
            source = sources["eval"]
        batches = eval_batches(source, config, run.mesh, tokenizer.special_ids)
    metrics = run_evaluation(steps_lib.make_eval_step(run.setup, run.mesh), run.state.params, batches, run.mesh,
                             config.data.eval_seed, teacher=steps_lib.teacher_of(run.state),
                             languages=config_lib.eval_groups(config.data))
    return {**metrics, "step": run.step}
