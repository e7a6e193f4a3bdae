"""The pretraining loop: `train_and_evaluate(config, workdir)` reads top to bottom.

Prepare data and tokenizer (cached in the workdir) -> check that the workdir's newest checkpoint fits this
run (`resume_check`) -> build or restore the state -> step, log, evaluate and checkpoint. Restarting the
same command resumes from the newest checkpoint that restores, including the position of the data
iterator, so the resumed run sees the batches the interrupted one would have seen and ends bitwise where
an uninterrupted run ends. Each checkpoint step also closes a logging interval, so a resumed run pools
the same steps into each metrics line.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from bert_jax import config as config_lib
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import languages, pipeline, tlm_mixture, tokenizer_factory
from bert_jax.pretraining import evaluation, losses, resume_check, run_checkpoint, teacher
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import atomic, multihost, numerics, parallel, preemption, reporting, workdir_lock
from bert_jax.runtime import checkpoint as checkpoint_lib

_TRAIN_KEYS = ("input_ids", "segment_ids", "attention_mask", "next_sentence_labels", "mask_seeds",
               "position_ids", "pair_positions", "pair_weights",  # these three only in packed batches
               "language_ids")  # with position_ids, in translation-pair batches
_SUMMED_SUFFIXES = ("_loss_sum", "_correct", "_count")


def _summarize_train(step_metrics: list[dict], seconds: float, timed_steps: int, global_batch_size: int) -> dict:
    """Pools the per-step sums of a logging interval into the reported train metrics.

    Skipped (non-finite) steps are counted in `skipped_steps` and left out of the pooled figures, unless
    the whole interval was skipped.
    """
    skipped = sum(int(m["nonfinite"]) for m in step_metrics)
    pooled = [m for m in step_metrics if not m["nonfinite"]] or step_metrics
    summed = [name for name in pooled[0] if name.endswith(_SUMMED_SUFFIXES)]
    totals = {name: sum(float(m[name]) for m in pooled) for name in summed}
    metrics = losses.summarize(totals)
    metrics["loss"] = float(np.mean([m["loss"] for m in pooled]))
    metrics["grad_norm"] = float(np.mean([m["grad_norm"] for m in pooled]))
    metrics["learning_rate"] = float(step_metrics[-1]["learning_rate"])
    metrics["skipped_steps"] = skipped
    metrics["sequences_per_second"] = timed_steps * global_batch_size / max(seconds, 1e-9)
    return metrics


def _initial_state(config, setup, create_state, checkpointer, check_meta) -> tuple[steps_lib.TrainState, dict | None]:
    """(state, checkpoint meta): the newest good checkpoint's, else fresh (or from `train.init_checkpoint`) and None.

    `check_meta` positions the data iterator from a checkpoint's meta; a position that does not restore
    makes that checkpoint count as damaged, so the run falls back to the one before it.
    """
    restored = checkpointer.restore_latest(setup.abstract_state, check_meta=check_meta)
    if restored is not None:
        step, state, meta = restored
        logging.info("resumed from step %d of %s", step, checkpointer.directory)
        return state, meta
    state = create_state()
    if config.train.init_checkpoint:
        _, _, params = run_checkpoint.load_params_only(config.train.init_checkpoint)
        if config.distill.recipe:  # the export may hold heads the student lacks, or lack TinyBERT's map
            params = teacher.student_start(params, jax.device_get(state.params), config.train.init_checkpoint)
        state = state.replace(params=jax.device_put(params, setup.state_sharding.params))
    logging.info("initialised %s parameters (no checkpoint in %s)", f"{steps_lib.parameter_count(state.params):,}",
                 checkpointer.directory)
    return state, None


def _position_check(train_iter, config, local_batch_size: int, plan: resume_check.ResumePlan):
    """`check_meta` for `restore_latest`: positions `train_iter` where a checkpoint's run stopped, and turns a
    saved position that does not restore (a damaged data_state) into the InputError of a damaged checkpoint."""
    def check(step: int, meta: dict) -> None:
        try:
            _position_iterator(train_iter, config, local_batch_size, meta, plan)
        except config_lib.InputError:
            raise
        except Exception as e:  # noqa: BLE001 - grain raises KeyError, TypeError, ValueError on a bad state
            raise config_lib.InputError(f"the data-iterator position saved with the checkpoint of step {step} does "
                                        f"not restore ({type(e).__name__}: {e}); it is damaged.") from e
    return check


def _position_iterator(train_iter, config, local_batch_size: int, meta: dict, plan: resume_check.ResumePlan) -> None:
    """Positions this process's training batches where the restored run stopped.

    The saved iterator state is restored as it is, unless the resume check found that the stream or its
    layout changed (`plan.restart_data`): that state would not restore, or would skip or repeat examples,
    so the number of examples the old stream had given is carried over instead.
    """
    data_state = meta.get("data_state")
    if data_state is None:
        return
    if not plan.restart_data:
        train_iter.set_state(data_state)
        return
    stored = config_lib.from_stored(meta["config"])
    taken = pipeline.examples_taken(data_state, stored.train.global_batch_size // jax.process_count())
    position = None if taken is None else pipeline.restart_at(
        train_iter, taken, pack_sequences=config.data.pack_sequences, batch_size=local_batch_size)
    logging.warning("the data iterator restarts at %s: its saved position (%s examples into the old stream) belongs "
                    "to another stream or layout (%s)",
                    "the start of its stream" if position is None else f"example {position:,} of this process's stream",
                    "?" if taken is None else f"{taken:,}", plan.restart_data)


def _newest_meta(workdir: str) -> tuple[int, dict] | None:
    """(step, meta) of the newest checkpoint whose metadata reads, or None for a new run; a damaged one is
    left to `restore_latest`, which sets it aside and falls back to the same older step."""
    if not os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
        return None
    checkpointer = checkpoint_lib.Checkpointer(workdir, create=False)
    try:
        for step in sorted(checkpointer.all_steps(), reverse=True):
            try:
                return checkpointer.restore_meta(step)
            except config_lib.InputError:
                continue
        return None
    finally:
        checkpointer.close()


def _check_resume(config, workdir: str, tokenizer, corpus_fingerprint: dict) -> resume_check.ResumePlan:
    newest = _newest_meta(workdir)
    if newest is None:
        return resume_check.ResumePlan(restart_data="")
    step, meta = newest
    return resume_check.check_resume(meta, config, tokenizer=tokenizer, corpus_fingerprint=corpus_fingerprint,
                                     directory=checkpoint_lib.checkpoint_dir(workdir), step=step)


def _write_config(config, workdir: str) -> None:
    """config.json, for people (the checkpoints carry their own copy); process 0 writes it."""
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        atomic.write_text(os.path.join(workdir, "config.json"), config.to_json(indent=2))


def _process_zero_first(work, what: str):
    """`work()` on process 0, then on the others (which then only read what process 0 wrote).

    If process 0 fails (an empty corpus, a bad file), every other process raises InputError with its
    message instead of waiting at a barrier process 0 never reaches.
    """
    result, done_here = multihost.process_zero_first(work, what)
    return result if done_here else work()


def _prepare_data(config, workdir: str):
    """(tokenizer, tokenized splits, corpus fingerprint, resume plan).

    The workdir's newest checkpoint is compared with this run once its corpus and tokenizer are known and
    before anything of the old run changes: config.json is written, and the corpus tokenized, only after
    the check (every process checks, as every process restores).
    """
    if config.data.instance_format == "translation_pairs":  # XLM's TLM: parallel text, maybe mixed with MLM
        data = tlm_mixture.data_module(config.data)
        _, tokenizer = _process_zero_first(lambda: data.default_or_given_inputs(config.data, workdir),
                                           "prepare the data")
        fingerprint = data.corpus_fingerprint(config.data)
        plan = _check_resume(config, workdir, tokenizer, fingerprint)
        _write_config(config, workdir)
        sources = _process_zero_first(lambda: data.tokenize_splits(config.data, workdir, tokenizer),
                                      "prepare the data")
        return tokenizer, sources, fingerprint, plan
    corpus, tokenizer = _process_zero_first(lambda: corpus_lib.default_or_given_inputs(config.data, workdir),
                                            "prepare the data")
    fingerprint = corpus_lib.corpus_fingerprint(corpus, config.data.eval_corpus,
                                                language_folders=config.data.language_folders)
    plan = _check_resume(config, workdir, tokenizer, fingerprint)
    _write_config(config, workdir)
    sources = _process_zero_first(lambda: corpus_lib.tokenize_splits(config.data, workdir, corpus, tokenizer),
                                  "prepare the data")
    return tokenizer, sources, fingerprint, plan


def _restore_before_streak(checkpointer, setup, state, streak: numerics.NonFiniteStreak):
    """The newest checkpoint from before a streak of non-finite steps, carried on at the current step.

    The step count and the data iterator are not rewound: the batches of the streak (and those between
    the checkpoint and the streak) are skipped, and the step numbers in the metrics stay unique.
    """
    checkpointer.wait()
    restored = checkpointer.restore_latest(setup.abstract_state, before=streak.first_step - 1)
    if restored is None:
        raise config_lib.InputError(
            f"steps {streak.first_step}-{streak.first_step + streak.length - 1} had non-finite losses or gradients "
            f"and no checkpoint from before them exists in {checkpointer.directory}: the run cannot recover; lower "
            "config.train.learning_rate or check the data.")
    checkpoint_step, good_state, _ = restored
    current = int(jax.device_get(state.step))
    logging.warning("steps %d-%d: %d non-finite steps in a row (updates skipped); restored the parameters and "
                    "optimizer state of step %d from %s and continue at step %d, skipping the batches of steps %d-%d",
                    streak.first_step, current, streak.length, checkpoint_step, checkpointer.step_path(checkpoint_step),
                    current + 1, checkpoint_step + 1, current)
    streak.restored(checkpoint_step)
    return good_state.replace(step=state.step)


def _adopt_init_checkpoint(config):
    """With `train.init_checkpoint`, the run takes that export's model, objective and tokenizer."""
    export_config, _, _ = checkpoint_lib.read_export_info(config.train.init_checkpoint)
    config = config_lib.from_stored(config.to_dict())
    config.model = export_config.model
    config.objective = export_config.objective
    if not config.data.tokenizer_model:
        config.data.tokenizer_model = checkpoint_lib.exported_tokenizer_path(config.train.init_checkpoint)
    config.data.tokenizer_vocab_size = min(config.data.tokenizer_vocab_size, config.model.vocab_size)
    config.data.max_seq_length = min(config.data.max_seq_length, config.model.max_position_embeddings)
    logging.info("starting from %s: %s model, objective %s, tokenizer %s", config.train.init_checkpoint,
                 f"{config.model.num_hidden_layers}x{config.model.hidden_size}", config.objective,
                 config.data.tokenizer_model)
    return config


def _absolute_paths(config):
    """The config with its file paths made absolute, as it is stored: `evaluate`, `export` and a resume run
    from another directory read the corpus, the tokenizer and the initial checkpoint from it."""
    config = config_lib.from_stored(config.to_dict())

    def absolute(spec: str) -> str:
        parts = [p.strip() for p in spec.split(",")]
        return ",".join(p if not p or p.startswith("tfds:") else os.path.abspath(os.path.expanduser(p)) for p in parts)

    def absolute_corpus(spec: str) -> str:  # a language tag stays in front of its path
        tagged = [languages.split_tag(p) for p in spec.split(",") if p.strip()]
        return ",".join(f"{tag}:{absolute(path)}" if tag else absolute(path) for tag, path in tagged)

    config.data.corpus, config.data.eval_corpus = absolute_corpus(config.data.corpus), absolute_corpus(
        config.data.eval_corpus)
    config.data.tokenizer_model = absolute(config.data.tokenizer_model)
    config.data.parallel_corpus = ",".join(f"{pair}:{absolute(prefix)}" if prefix else pair for pair, _, prefix in (
        p.strip().partition(":") for p in config.data.parallel_corpus.split(",") if p.strip()))
    config.train.init_checkpoint = absolute(config.train.init_checkpoint)
    config.teacher_checkpoint = absolute(config.teacher_checkpoint)
    return config


def train_and_evaluate(config, workdir: str, *, import_hf_directory=None) -> dict[str, float]:
    """Pretrains (or distils, with `config.distill.recipe`) as `config` says, in `workdir`; returns the final
    held-out metrics. `import_hf_directory`: how a transformers teacher is converted (see teacher.materialise).

    The whole run holds the workdir's lock, taken before anything there is read or written: a second
    run on the same workdir stops at once with a line naming this one, instead of both writing it.
    """
    config = _absolute_paths(config)
    corpus_lib.check_workdir_outside_corpus(config.data, workdir)
    config.data.languages = (tuple(config_lib.run_languages(config.data)) if config_lib.mixes_monolingual(config.data)
                             else corpus_lib.corpus_languages(config.data))  # the language ids the run records
    if config.train.init_checkpoint:
        config = _adopt_init_checkpoint(config)
    if config.distill.recipe:
        config_lib.validate(config)  # the recipe's own fields, before the teacher is copied in
        with workdir_lock.workdir_lock(workdir, "distillation"):
            teacher_dir = teacher.materialise(config.teacher_checkpoint, workdir, import_hf_directory)
            config = config_lib.validate(teacher.adopt_teacher(config, teacher_dir))
            abstract_setup, _ = steps_lib.make_pretraining_setup(config, parallel.make_mesh(config.mesh))
            parallel.check_state_fits(abstract_setup.abstract_state)
            return _train_and_evaluate(config, workdir)
    config = config_lib.validate(config)
    # Before the workdir is touched and hours of data preparation: the state's shapes need no tokenizer.
    abstract_setup, _ = steps_lib.make_pretraining_setup(config, parallel.make_mesh(config.mesh))
    parallel.check_state_fits(abstract_setup.abstract_state)
    with workdir_lock.workdir_lock(workdir, "pretraining"):
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict[str, float]:
    """The run itself, which `train_and_evaluate` calls with the workdir locked."""
    tokenizer, sources, corpus_fingerprint, plan = _prepare_data(config, workdir)
    tokenizer_factory.check_fits_model(tokenizer, config.model.vocab_size)

    mesh = parallel.make_mesh(config.mesh)
    logging.info("process %d of %d: %d local devices of %d in the mesh", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), mesh.devices.size)
    local_batch_size = parallel.check_batch_size(config.train.global_batch_size, mesh)
    setup, create_state = steps_lib.make_pretraining_setup(config, mesh, tokenizer)
    if config.distill.recipe:  # a fresh state holds the teacher, read from the workdir's copy only when needed
        create_fresh = create_state
        create_state = lambda: create_fresh(jax.device_put(teacher.load_teacher_params(
            config, teacher.teacher_dir(workdir)), steps_lib.teacher_of(setup.state_sharding)))
    checkpointer = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep,
                                               async_save=config.checkpoint.async_save, cleanup_tmp=True)
    train_iter = pipeline.iterator_from_config(config, sources["train"], tokenizer.special_ids, local_batch_size,
                                               process_index=jax.process_index(), process_count=jax.process_count())
    state, _ = _initial_state(config, setup, create_state, checkpointer,
                              _position_check(train_iter, config, local_batch_size, plan))
    eval_set = evaluation.eval_batches(sources["eval"], config, mesh, tokenizer.special_ids)
    train_step = steps_lib.make_train_step(setup, mesh, config.train)
    eval_step = steps_lib.make_eval_step(setup, mesh)
    batch_sharding = parallel.batch_sharding(mesh)

    start_step, num_steps = int(jax.device_get(state.step)), config.train.num_train_steps
    writer = reporting.MetricsWriter(workdir, resume_step=start_step)

    def evaluate(step: int) -> dict[str, float]:
        metrics = evaluation.run_evaluation(eval_step, state.params, eval_set, mesh, config.data.eval_seed,
                                            teacher=steps_lib.teacher_of(state), languages=config_lib.eval_groups(config.data))
        logging.info(reporting.eval_log_line(step, metrics))
        writer.write(step, "eval", metrics)
        return metrics

    eval_metrics, pending, preempted, metrics = {}, [], False, None
    watcher = preemption.PreemptionWatcher()
    streak = numerics.NonFiniteStreak(config.train.max_consecutive_nonfinite_steps)
    run_start = interval_start = time.perf_counter()
    timed_steps = 0
    try:
        for step in range(start_step, num_steps):
            host_batch = {k: v for k, v in next(train_iter).items() if k in _TRAIN_KEYS}
            # The previous step's verdict, read once this batch is ready so the device was busy meanwhile.
            if streak.limit and metrics is not None and streak.record(step, bool(metrics["nonfinite"])):
                state = _restore_before_streak(checkpointer, setup, state, streak)
            state, metrics = train_step(state, parallel.to_global_batch(host_batch, batch_sharding))
            pending.append(metrics)
            done = step + 1
            if step == start_step:  # the first step pays for compilation: keep it out of the throughput
                jax.block_until_ready(metrics)
                logging.info("compiled and ran the first train step in %.1fs", time.perf_counter() - run_start)
                interval_start = time.perf_counter()
            else:
                timed_steps += 1
            preempted = watcher.should_stop(done)
            checkpoint_due = done % config.checkpoint.every_steps == 0 or done == num_steps or preempted
            if done % config.train.log_every_steps == 0 or checkpoint_due:
                host_metrics = jax.device_get(pending)
                seconds = time.perf_counter() - interval_start
                summary = _summarize_train(host_metrics, seconds, timed_steps, config.train.global_batch_size)
                seconds_left = (num_steps - done) * seconds / max(timed_steps, 1)
                logging.info(reporting.train_log_line(done, num_steps, summary, seconds_left))
                writer.write(done, "train", summary)
                pending, timed_steps, interval_start = [], 0, time.perf_counter()
            if done % config.train.eval_every_steps == 0 or done == num_steps:
                eval_metrics = evaluate(done)
            preemption.kill_if_test_asks(done, "step")
            if checkpoint_due:
                checkpointer.save(done, state, config=config, tokenizer=tokenizer, data_state=train_iter.get_state(),
                                  corpus=corpus_fingerprint)
                preemption.kill_if_test_asks(done, "save")
            if preempted:
                break
    finally:
        watcher.close()
    if preempted:
        checkpointer.close()  # returns once the checkpoint is on disk
        writer.close()
        logging.warning("preempted: stopped at step %d with its checkpoint saved; run the same command to resume",
                        done)
        return {**eval_metrics, "step": done, "preempted": True}
    if start_step >= num_steps:
        logging.info("the run in %s is already at step %d of %d; evaluating it", workdir, start_step, num_steps)
        eval_metrics = evaluate(start_step)
    checkpointer.close()
    writer.close()
    logging.info("wall time %s; the train step was compiled %s time(s)",
                 reporting.format_duration(time.perf_counter() - run_start),
                 getattr(train_step, "_cache_size", lambda: "?")())
    return {**eval_metrics, "step": max(start_step, num_steps)}
