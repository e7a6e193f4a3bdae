"""Whether a workdir's newest checkpoint may be resumed by a new run: `check_resume`.

Re-running `pretrain` in a workdir resumes its newest checkpoint, which stores the config, tokenizer and
corpus fingerprint it was written with. A run that resumes with other settings must not go on silently on
something else, so every difference from what the new run would use is sorted into one of:

- another model or tokenizer: always refused (the weights would not fit, or the embeddings would index
  other pieces);
- other data (corpus, batch size, sequence length, masking, packing, seed, held-out set): refused, unless
  `config.train.allow_changed_data`, which accepts them with a warning; the data iterator then restarts
  where the old stream had got to instead of at its saved state, which belongs to the other stream;
- another optimizer (AdamW, LAMB, StableAdamW): refused, its state would not fit the checkpoint's;
- the optimizer's settings or its schedule (learning rate, steps, schedule shape, where the decay starts,
  dropout, ...): allowed with a warning that names each change and, for the schedule, gives the learning
  rate at the resumed step before and after (so a stable-phase checkpoint can be decayed from);
- speed, logging and checkpointing switches that change neither the loss nor the checkpoint: info only.

A value the checkpoint does not hold (one written before it was stored) is unknown: an info line says
what could not be checked, and the run resumes.
"""

from __future__ import annotations

from typing import NamedTuple

from absl import logging

from bert_jax import config as config_lib
from bert_jax.data import tokenizer_factory
from bert_jax.pretraining import optim

_MODEL, _OPTIMIZER, _DATA, _WARN, _SAFE = "model", "optimizer", "data", "warn", "safe"

_SHAPE = "the parameters would not fit the checkpoint's"
_FUNCTION = "the trained weights would compute another function"
_INSTANCES = "the training instances and the held-out set would be built another way"
_MASKS = "examples would be masked another way"
_EVAL = "the held-out set would change, so eval figures before and after would not compare"
_NOT_COMPARED = None  # compared another way (tokenizer bytes, corpus fingerprint) or only in some layouts
_SCHEDULE = ("train.num_train_steps", "train.learning_rate", "train.warmup_steps", "train.schedule",
             "train.decay_steps", "train.decay_shape", "train.decay_start_step", "train.min_learning_rate_ratio")

# Every config field: (kind, what resuming with another value would do). tests/test_resume_check.py checks
# that the table covers the schema, so a new field has to be placed here.
_FIELDS = {
    **{f"model.{name}": (_MODEL, _SHAPE) for name in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "max_position_embeddings", "type_vocab_size", "embedding_size", "num_hidden_groups",
        "sbo_max_span_positions", "sbo_position_embedding_size")},
    **{f"electra.{name}": (_MODEL, _SHAPE) for name in ("generator_hidden_fraction", "generator_layers_fraction")},
    "electra.rtd_weight": (_WARN, "the loss changes"),
    "teacher_checkpoint": (_MODEL, "the student would learn from another teacher"),
    "distill.recipe": (_MODEL, "the student and its loss would be another recipe's"),
    "distill.teacher_objective": (_MODEL, "the student would learn from another teacher"),
    **{f"distill.teacher_model.{name}": (_MODEL, "the student would learn from another teacher")
       for name in config_lib.default_config().model},
    **{f"distill.{name}": (_WARN, "the loss changes") for name in (
        "temperature", "soft_target_weight", "mlm_weight", "cosine_weight", "embedding_weight", "hidden_weight",
        "attention_weight", "intermediate_fraction")},
    "distill.teacher_dtype": (_WARN, "the teacher's precision changes"),
    "distill.init_from_teacher": (_SAFE, "only used to initialise"),
    "electra.temperature": (_WARN, "the generator's replacements are drawn another way"),
    "model.hidden_act": (_MODEL, _FUNCTION),
    "model.layer_norm_eps": (_MODEL, _FUNCTION),
    "objective": (_MODEL, "the heads and the loss would be another objective's"),
    "data.tokenizer_vocab_size": (_MODEL, ("the tokenizer is not trained again on resume, so config.json would "
                                           "record a vocabulary the run does not have")),
    "data.tokenizer_model": (_SAFE, _NOT_COMPARED),
    "data.tokenizer_alpha": (_MODEL, _NOT_COMPARED),  # where the run trained its own tokenizer (`_alpha_differences`)
    "data.language_alpha": (_DATA, _NOT_COMPARED),  # where there are languages to sample (`_alpha_differences`)
    "data.language_folders": (_SAFE, _NOT_COMPARED),
    "data.languages": (_SAFE, _NOT_COMPARED),
    "model.hidden_dropout_prob": (_WARN, "the dropout changes"),
    "model.attention_probs_dropout_prob": (_WARN, "the dropout changes"),
    "model.dtype": (_WARN, "the compute precision changes"),
    "model.matmul_dtype": (_WARN, "the compute precision changes"),
    "train.dropout_prng": (_WARN, "the dropout changes"),
    **{f"train.{name}": (_WARN, "the optimizer changes") for name in (
        "weight_decay", "adam_b1", "adam_b2", "adam_eps", "max_grad_norm")},
    "train.optimizer": (_OPTIMIZER, "the checkpoint's optimizer state would not fit another optimizer's"),
    **{name: (_WARN, "") for name in _SCHEDULE},  # the warning gives the learning rate before and after
    **{f"model.{name}": (_SAFE, "a speed switch") for name in (
        "attention_impl", "vocab_pad_multiple", "scan_layers", "remat_policy", "gather_masked_positions",
        "fused_qkv")},
    "model.initializer_range": (_SAFE, "only used to initialise"),
    **{f"train.{name}": (_SAFE, "") for name in (
        "donate_state", "log_every_steps", "eval_every_steps", "eval_batch_size",
        "max_consecutive_nonfinite_steps", "debug_poison_steps", "allow_changed_data")},
    "train.init_checkpoint": (_SAFE, "only a run without a checkpoint starts from it"),
    "data.preprocess_workers": (_SAFE, ""),
    "data.docs_per_shard": (_SAFE, "the corpus is tokenized again into other shards, in the same order"),
    "data.corpus": (_SAFE, _NOT_COMPARED),
    "data.parallel_corpus": (_SAFE, _NOT_COMPARED),  # compared by the fingerprint of its pairs and files
    "data.tlm_ratio": (_DATA, _NOT_COMPARED),  # compared where it mixes anything (`_layout_differences`)
    "model.num_languages": (_MODEL, _SHAPE),
    **{f"model.{name}": (_MODEL, _SHAPE) for name in (  # the block flags that add or drop parameters
        "norm_placement", "norm_kind", "final_norm", "embedding_norm", "ffn_activation", "position_encoding",
        "use_bias", "tie_word_embeddings")},
    **{f"model.{name}": (_MODEL, _FUNCTION) for name in (
        "rope_theta", "local_rope_theta", "local_attention_window", "global_attention_every_n_layers")},
    "data.eval_corpus": (_SAFE, _NOT_COMPARED),
    "data.num_workers": (_SAFE, _NOT_COMPARED),
    "data.max_instances_per_pack": (_SAFE, _NOT_COMPARED),
    "data.pack_sequences": (_DATA, _NOT_COMPARED),
    "train.global_batch_size": (_DATA, _NOT_COMPARED),
    "train.seed": (_DATA, "the data order, instances and masks would be another stream's"),
    "data.max_seq_length": (_DATA, _INSTANCES),
    "data.instance_format": (_DATA, _INSTANCES),
    "data.short_seq_prob": (_DATA, _INSTANCES),
    "data.eval_fraction": (_DATA, "the documents held out of the corpus would change"),
    "data.eval_num_examples": (_DATA, _EVAL),
    "data.eval_seed": (_DATA, _EVAL),
    **{f"masking.{name}": (_DATA, _MASKS) for name in (
        "mask_rate", "mask_token_fraction", "random_token_fraction", "max_predictions_per_seq", "kind",
        "max_ngram", "span_p", "max_span_length", "dynamic", "dupe_factor")},
    **{key.removeprefix("config."): (_SAFE, "") for key in config_lib.config_keys(config_lib.default_config())
       if key.startswith(("config.checkpoint.", "config.mesh."))},
}
# Data differences that leave the training stream as it was: its saved position still applies.
_EVAL_ONLY = ("data.eval_num_examples", "data.eval_seed", "held-out corpus")


class ResumePlan(NamedTuple):
    """What a resume that passed the check still has to do differently from a plain restart."""

    restart_data: str  # why the data iterator restarts at the old stream's position ('' : restore its state)


class _Difference(NamedTuple):
    kind: str
    name: str
    text: str


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _get(config, name: str):
    for part in name.split("."):
        config = config[part]
    return config


def _unread(config, name: str) -> bool:
    """A block flag the model of `config` does not read: the RoPE bases without rotary positions, the local
    base and the layer pattern without a local window."""
    m = config.model
    if name in ("model.rope_theta", "model.local_rope_theta") and m.position_encoding != "rotary":
        return True
    return name in ("model.local_rope_theta", "model.global_attention_every_n_layers") and not m.local_attention_window


def _field_differences(stored, config) -> list[_Difference]:
    """Differences of the fields whose meaning does not depend on others (the table's reasons); a block flag
    that neither model reads is a difference of nothing (a learned-position BERT and another rope_theta)."""
    found = []
    for name, (kind, effect) in _FIELDS.items():
        there, now = _get(stored, name), _get(config, name)
        if _unread(stored, name) and _unread(config, name):
            kind, effect = _SAFE, "neither model reads it"
        if effect is not _NOT_COMPARED and there != now:
            found.append(_Difference(kind, name, f"config.{name} is {_show(there)} there and {_show(now)} now"
                                                 + (f": {effect}" if effect else "")))
    return found


def _layout_differences(stored, config) -> list[_Difference]:
    """Batch size, packing and worker count: what they do depends on the layout of both runs."""
    found, sd, d = [], stored.data, config.data
    there, now = stored.train.global_batch_size, config.train.global_batch_size
    if there != now:
        effect = "skip" if now > there else "repeat"
        found.append(_Difference(_DATA, "train.global_batch_size", f"config.train.global_batch_size is {there} there "
                                 f"and {now} now: the data stream would {effect} examples"))
    if sd.pack_sequences != d.pack_sequences:
        layouts = {True: "packed rows", False: "unpacked rows"}
        found.append(_Difference(_DATA, "data.pack_sequences", f"config.data.pack_sequences is {sd.pack_sequences} "
                                 f"there and {d.pack_sequences} now: the data iterator's saved position is one of "
                                 f"{layouts[sd.pack_sequences]} and cannot be restored into "
                                 f"{layouts[d.pack_sequences]}"))
    elif d.pack_sequences and sd.max_instances_per_pack != d.max_instances_per_pack:
        found.append(_Difference(_DATA, "data.max_instances_per_pack", "config.data.max_instances_per_pack is "
                                 f"{sd.max_instances_per_pack} there and {d.max_instances_per_pack} now: the packed "
                                 "rows would change and the saved open rows would not fit"))
    if sd.num_workers != d.num_workers:
        found.append(_workers_difference(sd, d))
    there, now = (s.tlm_ratio if config_lib.mixes_monolingual(s) else 1.0 for s in (sd, d))
    if there != now:  # a TLM-only run ignores the field: only the share it takes effect with counts
        found.append(_Difference(_DATA, "data.tlm_ratio", f"the share of translation pairs among the training rows "
                                 f"(config.data.tlm_ratio with a monolingual config.data.corpus) is {there} there and "
                                 f"{now} now: rows would be mixed at another ratio, another training stream"))
    return found


def _alpha_differences(stored, config) -> list[_Difference]:
    """The sampling exponents, only where they act: `language_alpha` when the stored run sampled languages
    (it recorded them), `tokenizer_alpha` when it also trained its own tokenizer on that sample. A
    monolingual run ignores both, so a changed default or config file never refuses its resume."""
    sd, d, found = stored.data, config.data, []
    if not sd.languages:
        return found
    if sd.language_alpha != d.language_alpha:
        found.append(_Difference(_DATA, "data.language_alpha", f"config.data.language_alpha is {sd.language_alpha} "
                                 f"there and {d.language_alpha} now: languages would be sampled at other rates, "
                                 "another training stream"))
    if not sd.tokenizer_model and sd.tokenizer_alpha != d.tokenizer_alpha:
        found.append(_Difference(_MODEL, "data.tokenizer_alpha", f"config.data.tokenizer_alpha is "
                                 f"{sd.tokenizer_alpha} there and {d.tokenizer_alpha} now: the tokenizer is not "
                                 "trained again on resume, so config.json would record a sampling of the text it "
                                 "was not trained on"))
    return found


def _workers_difference(sd, d) -> _Difference:
    """Another worker count changes only the form of the saved position for unpacked rows, and that
    position carries over into at most one worker; packed rows are packed by each worker apart."""
    text = f"config.data.num_workers is {sd.num_workers} there and {d.num_workers} now"
    if sd.pack_sequences or d.pack_sequences:
        return _Difference(_DATA, "data.num_workers", f"{text}: each worker packs its own rows, so the packed "
                                                       "batches would change")
    if d.num_workers > 1:
        return _Difference(_DATA, "data.num_workers", f"{text}: the saved position carries over into one worker "
                                                       f"process at most, not {d.num_workers}")
    return _Difference(_SAFE, "data.num_workers", f"{text} (the saved position is carried over)")


def _tokenizer_name(path: str, kind: str, pieces) -> str:
    where = repr(path) if path else "the one trained in the workdir"
    return f"{where} ({kind}, {pieces} pieces)"


def _tokenizer_differences(meta: dict, stored, config, tokenizer) -> list[_Difference]:
    """The tokenizer by its bytes: the same model under another path is fine, another model never is."""
    if meta["tokenizer_kind"] == tokenizer.kind and meta["tokenizer_model"] == tokenizer.serialized_model():
        if stored.data.tokenizer_model != config.data.tokenizer_model:
            return [_Difference(_SAFE, "data.tokenizer_model", f"config.data.tokenizer_model is "
                                f"{_show(stored.data.tokenizer_model)} there and {_show(config.data.tokenizer_model)} "
                                "now (the same tokenizer)")]
        return []
    try:
        pieces = tokenizer_factory.tokenizer_from_serialized(meta["tokenizer_kind"], meta["tokenizer_model"]).vocab_size
    except Exception:  # a stored model this code cannot load is still another tokenizer
        pieces = "?"
    there = _tokenizer_name(stored.data.tokenizer_model, meta["tokenizer_kind"], pieces)
    now = _tokenizer_name(config.data.tokenizer_model or tokenizer.model_path, tokenizer.kind, tokenizer.vocab_size)
    return [_Difference(_MODEL, "data.tokenizer_model", f"the tokenizer is {there} there and {now} now, another "
                                                         "model: the embeddings would index other pieces")]


def _describe(corpus: dict | None, held_out: bool) -> str:
    if corpus is None:
        return "a held-out fraction of the training corpus" if held_out else "no corpus"
    files = corpus.get("files")
    size = f", {files} file{'s' * (files != 1)} of {corpus['bytes']:,} bytes" if files is not None else ""
    return f"{corpus['what']}{size}"


def _corpus_differences(stored: dict | None, now: dict, stored_config, step: int) -> list[_Difference]:
    """The training and held-out text by their fingerprints; a checkpoint without them is left unchecked."""
    if stored is None:
        moved = (f" (config.data.corpus is {_show(stored_config.data.corpus)} there)"
                 if stored_config.data.corpus else "")
        logging.warning("the checkpoint of step %d holds no corpus fingerprint (it was written before bert_jax stored "
                        "one): whether the corpus changed since could not be checked%s; and since then documents are "
                        "held out by their text, not their position, so the held-out split (and with it the "
                        "training documents) is drawn anew", step, moved)
        return []
    found = []
    for split, name, held_out in (("train", "training corpus", False), ("eval", "held-out corpus", True)):
        there, here = stored.get(split), now[split]
        if (there or {}).get("fingerprint") == (here or {}).get("fingerprint"):
            continue
        same_size = (there and here and there.get("files") == here.get("files")
                     and there.get("bytes") == here.get("bytes"))
        effect = ("it would be tokenized again and the run would train on another stream" if split == "train"
                  else "the held-out set would change, so eval figures before and after would not compare")
        found.append(_Difference(_DATA, name, f"the {name} changed since the checkpoint ({_describe(there, held_out)} "
                                 f"there, {_describe(here, held_out)} now"
                                 f"{'; other paths or modification times' if same_size else ''}): {effect}"))
    return found


def _refusal(refused: list[_Difference], directory: str, step: int) -> str:
    """The one-line InputError message: every refused difference, then the ways out."""
    model = any(d.kind == _MODEL for d in refused)
    optimizer = any(d.kind == _OPTIMIZER for d in refused)
    data = any(d.kind == _DATA for d in refused)
    what = " and ".join(w for w, present in (("for another model", model), ("for another optimizer", optimizer),
                                              ("with other data", data)) if present)
    if model or optimizer:
        way_out = "run with the config they were written with, or give a new --workdir"
        if data:
            way_out += (" (config.train.allow_changed_data=true would accept the data changes, never another "
                        "tokenizer or model)")
    else:
        way_out = ("run with the values they were written with, give a new --workdir, or set "
                   "--config.train.allow_changed_data=true to go on with the new data")
    return (f"the checkpoints in {directory} (newest: step {step}) were written {what}: "
            f"{'; '.join(d.text for d in refused)}; {way_out}.")


def _schedule_line(stored, config, step: int) -> str:
    before = float(optim.learning_rate_schedule(stored.train)(step))
    after = float(optim.learning_rate_schedule(config.train)(step))
    return f"the learning-rate schedule changes from step {step} on (learning rate at step {step}: {before:.6g} " \
           f"before, {after:.6g} now)"


def _report(accepted: list[_Difference], stored, config, step: int) -> None:
    """Logs what the resume accepts: changed data and the optimizer as warnings, the rest as info."""
    data = [d.text for d in accepted if d.kind == _DATA]
    if data:
        logging.warning("resuming step %d with changed data, as config.train.allow_changed_data asks: %s", step,
                        "; ".join(data))
    warned = [d for d in accepted if d.kind == _WARN]
    if warned:
        schedule = any(d.name in _SCHEDULE for d in warned)
        logging.warning("resuming step %d with other settings: %s%s", step, "; ".join(d.text for d in warned),
                        f"; {_schedule_line(stored, config, step)}" if schedule else "")
    safe = [d.text for d in accepted if d.kind == _SAFE]
    if safe:
        logging.info("resuming step %d with switches that change neither the loss nor the checkpoint: %s", step,
                     "; ".join(safe))


def check_resume(meta: dict, config, *, tokenizer, corpus_fingerprint: dict, directory: str,
                 step: int) -> ResumePlan:
    """Compares the checkpoint of `step` in `directory` (its `meta`: config, tokenizer, corpus) with the
    run about to resume it: `config`, the `tokenizer` it would use and its `corpus.corpus_fingerprint`.

    Raises one InputError listing every refused difference with what it would do and the ways out; logs
    the accepted ones. Call it before the new run writes anything into the workdir.
    """
    stored = config_lib.from_stored(meta["config"])
    differences = (_field_differences(stored, config) + _layout_differences(stored, config)
                   + _alpha_differences(stored, config)
                   + _tokenizer_differences(meta, stored, config, tokenizer)
                   + _corpus_differences(meta.get("corpus"), corpus_fingerprint, stored, step))
    allow_data = config.train.allow_changed_data
    refused = [d for d in differences if d.kind in (_MODEL, _OPTIMIZER) or (d.kind == _DATA and not allow_data)]
    if refused:
        raise config_lib.InputError(_refusal(refused, directory, step))
    _report(differences, stored, config, step)
    restart = [d.name for d in differences if (d.kind == _DATA and d.name not in _EVAL_ONLY)
               or d.name == "data.num_workers"]
    return ResumePlan(restart_data=", ".join(restart))
