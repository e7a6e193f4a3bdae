"""Held-out MLM/NSP evaluation over a fixed set of instances and masks.

The instances come from `make_eval_batches` with `config.data.eval_seed` and the masks from keys derived
from that seed and the batch index, so the figures of a checkpoint are identical in the run that wrote it
and in `python -m bert_jax.evaluate` later, on any device count.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, NamedTuple

import jax
import numpy as np

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import config as config_lib
from bert_jax import losses, masking, parallel, train
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import pretraining
from bert_jax.data import tokenizer as tokenizer_lib


def eval_batches(source, config, mesh, special_ids: tokenizer_lib.SpecialIds) -> list[dict[str, np.ndarray]]:
    """The fixed evaluation set as this process's rows of each global batch."""
    batch_size = config.train.eval_batch_size
    parallel.check_batch_size(batch_size, mesh, "config.train.eval_batch_size")
    batches = pretraining.make_eval_batches(
        source, max_seq_length=config.data.max_seq_length, batch_size=batch_size,
        num_examples=config.data.eval_num_examples, seed=config.data.eval_seed,
        short_seq_prob=config.data.short_seq_prob, objective=config.objective,
        instance_format=config.data.instance_format, special_ids=special_ids)
    return [parallel.process_rows(batch) for batch in batches]


def run_evaluation(eval_step, params, batches, mesh, eval_seed: int) -> dict[str, float]:
    """Sums the statistics of every batch; reports mlm_loss, mlm_accuracy, nsp_/sop_ metrics, num_examples."""
    base_key = jax.random.key(eval_seed)
    sharding = parallel.batch_sharding(mesh)
    totals = None
    for index, batch in enumerate(batches):
        sums = eval_step(params, parallel.to_global_batch(batch, sharding), jax.random.fold_in(base_key, index))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    if totals is None:
        raise config_lib.InputError("the evaluation set is empty: give more held-out text.")
    metrics = losses.summarize(jax.device_get(totals))
    metrics["num_examples"] = int(round(float(jax.device_get(totals["num_examples"]))))
    return metrics


def masking_spec(config, tokenizer: tokenizer_lib.Tokenizer) -> masking.MaskingSpec:
    """The masking parameters of a config with the special ids and vocabulary of its tokenizer."""
    if tokenizer.kind == "sentencepiece":  # specials are ids 0..4: draw random tokens from the rest
        return masking.MaskingSpec.from_config(config.masking, mask_id=tokenizer.special_ids.mask,
                                               first_random_id=len(tokenizer_lib.SPECIAL_TOKENS),
                                               vocab_size=tokenizer.vocab_size)
    candidates = tuple(int(i) for i in np.flatnonzero(~tokenizer.special_table()))
    return masking.MaskingSpec.from_config(config.masking, mask_id=tokenizer.special_ids.mask,
                                           vocab_size=tokenizer.vocab_size, random_token_ids=candidates)


def make_setup(config, mesh, tokenizer: tokenizer_lib.Tokenizer):
    """train.make_setup with what the tokenizer decides: special ids, vocabulary, word starts."""
    return train.make_setup(config, mesh, masking_spec=masking_spec(config, tokenizer),
                            special_tokens=tokenizer.special_table(),
                            word_start_table=tokenizer.word_start_table())


class RunCheckpoint(NamedTuple):
    """One checkpoint of a pretraining run, restored with everything needed to use it."""

    step: int
    config: Any
    tokenizer: Any
    mesh: Any
    setup: train.Setup
    state: train.TrainState


def restore_run_checkpoint(workdir: str, step: int | None = None) -> RunCheckpoint:
    """Checkpoint `step` (default: the latest) of the run in `workdir`, with its own config and tokenizer."""
    checkpointer = checkpoint_lib.Checkpointer(workdir, create=False, async_save=False)
    step, meta = checkpointer.restore_meta(step)
    config = config_lib.validate(config_lib.from_stored(meta["config"]))
    tokenizer = tokenizer_lib.tokenizer_from_serialized(meta["tokenizer_kind"], meta["tokenizer_model"])
    mesh = parallel.make_mesh(config.mesh)
    setup, _ = make_setup(config, mesh, tokenizer)
    state = checkpointer.restore_state(step, setup.abstract_state)
    checkpointer.close()
    return RunCheckpoint(step, config, tokenizer, mesh, setup, state)


def evaluate_checkpoint(workdir: str, *, step: int | None = None, corpus: str = "") -> dict[str, float]:
    """Evaluates a run's checkpoint on `corpus` (text files), or on the run's own held-out split if empty."""
    run = restore_run_checkpoint(workdir, step)
    config, tokenizer = run.config, run.tokenizer
    with tempfile.TemporaryDirectory() as scratch:
        if corpus:
            source = corpus_lib.build_eval_source(corpus, tokenizer, os.path.join(scratch, "tfds"))
        else:
            _, sources = corpus_lib.prepare_default_or_given(config.data, workdir, tokenizer=tokenizer)
            source = sources["eval"]
        batches = eval_batches(source, config, run.mesh, tokenizer.special_ids)
    metrics = run_evaluation(train.make_eval_step(run.setup, run.mesh), run.state.params, batches, run.mesh,
                             config.data.eval_seed)
    return {**metrics, "step": run.step}
