"""TrainState, the pure train step, and state creation with explicit shardings.

`make_train_step` returns `train_step(state, batch) -> (state, metrics)`: masking, forward, loss,
gradients and the optax update, all inside one jitted program compiled once with donated buffers.
The step's randomness comes from (seed, step) only, so a restarted run reproduces the same masks and
dropout, and 1 or 8 devices give the same result for the same global batch. A step whose loss or gradient
is not finite applies no update (parameters and optimizer state stay bitwise as they were) but still
advances the step; its `nonfinite` metric tells the trainer, which counts such steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.data import vocab
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import (
    distillation,
    electra,
    losses,
    masking,
    optim,
    span_boundary,
)
from bert_jax.runtime import parallel


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint needs to continue training exactly."""

    step: jax.Array  # [] int32: number of updates applied so far
    params: nnx.State  # the model's nnx.Param variables
    opt_state: optax.OptState
    rng: jax.Array  # [2] uint32 raw key data of the run's base key (from config.train.seed)


@flax.struct.dataclass
class DistillationState(TrainState):
    """A distillation run's state: the student's TrainState and the frozen teacher's parameters, which are
    never in the optimizer. A class of its own, so that other runs' checkpoints keep TrainState's tree."""

    teacher: nnx.State = None


def teacher_of(state_or_sharding):
    """The teacher's parameters (or their shardings) of a DistillationState; None for other states."""
    return getattr(state_or_sharding, "teacher", None)


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static pieces the jitted functions close over."""

    graphdef: Any  # nnx.GraphDef of BertForPreTraining (ElectraForPreTraining for objective 'electra')
    optimizer: optax.GradientTransformation
    masking_spec: masking.MaskingSpec
    special_tokens: Any  # bool [tokenizer vocab] table of never-masked ids, or n for ids [0, n)
    pair_task: str | None  # 'nsp', 'sop' or None (objectives 'mlm', 'mlm_sbo')
    dynamic_masking: bool  # False: one key per example from its `mask_seeds` (static masks)
    word_start_table: Any  # np.ndarray bool [tokenizer vocab]: pieces that begin a word, or None
    state_sharding: Any  # pytree of NamedSharding matching TrainState
    abstract_state: Any  # pytree of ShapeDtypeStruct matching TrainState (a restore target)
    electra: electra.ElectraSpec | None = None  # objective 'electra' only
    distill: distillation.DistillSpec | None = None  # distillation runs only
    sbo_max_span_positions: int = 0  # objective 'mlm_sbo': rows of the SBO position table; 0: no SBO
    num_languages: int = 0  # a multilingual run's languages: eval batches with `languages` get sums per language


def masking_spec(config, tokenizer) -> masking.MaskingSpec:
    """The masking parameters of a config with the special ids and vocabulary of its tokenizer."""
    if tokenizer.kind == "sentencepiece":  # specials are ids 0..4: draw random tokens from the rest
        return masking.MaskingSpec.from_config(config.masking, mask_id=tokenizer.special_ids.mask,
                                               first_random_id=len(vocab.SPECIAL_TOKENS),
                                               vocab_size=tokenizer.vocab_size)
    candidates = tuple(int(i) for i in np.flatnonzero(~tokenizer.special_table()))
    return masking.MaskingSpec.from_config(config.masking, mask_id=tokenizer.special_ids.mask,
                                           vocab_size=tokenizer.vocab_size, random_token_ids=candidates)


def make_pretraining_setup(config, mesh, tokenizer=None) -> tuple[Setup, Callable]:
    """The one builder of a pretraining Setup (training, evaluation, export and the benchmark use it),
    and a function that creates the initial TrainState on the mesh.

    The tokenizer decides the special ids, the vocabulary masking draws from and the word starts. Without
    one (the benchmark's synthetic ids) the vocabulary is that of a SentencePiece model trained here:
    `config.data.tokenizer_vocab_size` pieces, the five special tokens at ids 0..4, every piece a word start.
    """
    tokenizer_vocab_size = config.data.tokenizer_vocab_size if tokenizer is None else tokenizer.vocab_size
    if tokenizer is None:
        num_special = len(vocab.SPECIAL_TOKENS)
        spec = masking.MaskingSpec.from_config(config.masking, mask_id=vocab.DEFAULT_SPECIAL_IDS.mask,
                                               first_random_id=num_special,
                                               vocab_size=config.data.tokenizer_vocab_size)
        special_tokens, word_start_table = num_special, np.ones(config.data.tokenizer_vocab_size, bool)
    else:
        spec = masking_spec(config, tokenizer)
        special_tokens, word_start_table = tokenizer.special_table(), tokenizer.word_start_table()
    optimizer = optim.make_optimizer(config.train)
    seed = config.train.seed
    distilling = bool(config.distill.recipe)

    def init_state(teacher=None) -> TrainState:
        """A fresh state; a distillation run passes the teacher's parameters (as a pretraining model's)."""
        graph, params = nnx.split(pretraining_heads.build_model(config, seed), nnx.Param)
        del graph
        if distilling:
            teacher = jax.tree.map(lambda x: x.astype(config.distill.teacher_dtype), teacher)
            if config.distill.recipe == "distilbert" and config.distill.init_from_teacher:
                nnx.replace_by_pure_dict(params, distillation.init_student_from_teacher(
                    nnx.to_pure_dict(params), nnx.to_pure_dict(teacher), config.model.num_hidden_layers))
        fields = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)))
        return DistillationState(**fields, teacher=teacher) if distilling else TrainState(**fields)

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: pretraining_heads.build_model(config, seed)), nnx.Param)
    teacher_graphdef, abstract_teacher = None, None
    if distilling:
        teacher_graphdef, abstract_teacher = nnx.split(nnx.eval_shape(lambda: pretraining_heads.build_teacher(config)),
                                                       nnx.Param)
    abstract = jax.eval_shape(init_state, abstract_teacher)
    state_sharding = parallel.state_shardings(abstract, mesh)  # FSDP: big arrays split over 'fsdp'
    abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract, state_sharding)
    setup = Setup(graphdef=graphdef, optimizer=optimizer, masking_spec=spec,
                  special_tokens=special_tokens, pair_task=losses.pair_task(config.objective),
                  dynamic_masking=config.masking.dynamic, word_start_table=word_start_table,
                  state_sharding=state_sharding, abstract_state=abstract_state,
                  num_languages=len(config_lib.eval_groups(config.data)))
    if config.objective in pretraining_heads.OBJECTIVES_WITH_SPAN_BOUNDARY_HEAD:
        setup = dataclasses.replace(setup, sbo_max_span_positions=config.model.sbo_max_span_positions)
    if config.objective == "electra":
        setup = dataclasses.replace(setup, electra=electra.ElectraSpec.from_config(
            config.electra, special_tokens, tokenizer_vocab_size, config.model.vocab_size))
    if distilling:
        setup = dataclasses.replace(setup, distill=distillation.DistillSpec.from_config(config, teacher_graphdef))
    create = jax.jit(init_state, out_shardings=state_sharding)
    return setup, create


def forward_sums(setup: Setup, params, batch, masked: masking.MaskedBatch, example_weights, *,
                 deterministic: bool, dropout_key=None, sample_key=None, teacher=None,
                 step=None) -> dict[str, jax.Array]:
    """Runs the pretraining model on a masked batch and returns the loss/accuracy sums (`sample_key`:
    ELECTRA's generator samples; `teacher` and `step`: a distillation run's teacher and update count)."""
    if setup.distill is not None:
        return distillation.distill_sums(setup.graphdef, setup.distill, params, teacher, batch, masked,
                                         example_weights, step, deterministic=deterministic, dropout_key=dropout_key)
    if setup.electra is not None:
        return electra.electra_sums(setup.graphdef, setup.electra, params, batch, masked, example_weights,
                                    deterministic=deterministic, dropout_key=dropout_key, sample_key=sample_key)
    model = nnx.merge(setup.graphdef, params)
    rngs = None if deterministic else nnx.Rngs(dropout=dropout_key)
    boundaries = None
    if setup.sbo_max_span_positions:
        boundaries = span_boundary.span_boundaries(masked.masked_positions, masked.masked_lm_weights,
                                                   batch["attention_mask"], setup.sbo_max_span_positions)
    # Packed batches add position_ids, pair_positions and pair_weights (see BertForPreTraining); unpacked
    # batches lack them, and the model takes its cheaper unpacked path. TLM batches add position_ids and
    # language_ids.
    mlm_logits, second_logits = model(masked.input_ids, batch["segment_ids"], batch["attention_mask"],
                                      masked.masked_positions, position_ids=batch.get("position_ids"),
                                      pair_positions=batch.get("pair_positions"),
                                      span_boundaries=None if boundaries is None else boundaries.head_inputs(),
                                      language_ids=batch.get("language_ids"),
                                      deterministic=deterministic, rngs=rngs)
    sums = losses.pretraining_sums(mlm_logits, masked.masked_lm_ids, masked.masked_lm_weights,
                                   None if boundaries is not None else second_logits, batch["next_sentence_labels"],
                                   example_weights, pair=setup.pair_task, pair_weights=batch.get("pair_weights"),
                                   languages=batch.get("languages"), num_languages=setup.num_languages)
    if boundaries is not None:
        sums.update(losses.span_boundary_sums(second_logits, masked.masked_lm_ids, boundaries.weights,
                                              example_weights))
    return sums


def mask_batch(setup: Setup, batch, key) -> masking.MaskedBatch:
    """Masks a batch with `key`: one key for the batch, or [batch] keys (static masking)."""
    input_ids = batch["input_ids"]
    maskable = masking.maskable_positions(input_ids, batch["attention_mask"], setup.special_tokens)
    word_starts = None
    if setup.masking_spec.kind != "token":
        word_starts = jnp.asarray(setup.word_start_table)[input_ids]  # [batch, seq]
    return masking.mask_tokens(key, input_ids, maskable, setup.masking_spec, word_starts=word_starts)


def static_mask_keys(state: TrainState, mask_seeds: jax.Array) -> jax.Array:
    """[batch] keys that depend only on the run's seed and each example's `mask_seeds` (not the step)."""
    base = jax.random.fold_in(jax.random.wrap_key_data(state.rng), _STATIC_MASK_STREAM)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, mask_seeds)


_STATIC_MASK_STREAM = 2**31 - 1  # a fold-in constant that no step number reaches


def step_key(state: TrainState) -> jax.Array:
    """The key of one step: a pure function of (seed, step)."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def dropout_key_with_impl(key: jax.Array, impl: str) -> jax.Array:
    """The step's threefry dropout key, or a key of PRNG `impl` ('rbg', 'unsafe_rbg') drawn from it: still a
    pure function of (seed, step), while the masks keep the threefry key they always had."""
    if impl == "threefry":
        return key
    shape = jax.random.key_data(jax.random.key(0, impl=impl)).shape  # [4] uint32 for the rbg keys
    return jax.random.wrap_key_data(jax.random.bits(key, shape, jnp.uint32), impl=impl)


def make_train_step(setup: Setup, mesh, train_config):
    """The jitted `train_step(state, batch) -> (state, metrics)`; state buffers are donated unless
    `train_config.donate_state` is False, and dropout draws from `train_config.dropout_prng` (configs from
    before those fields donate and use threefry)."""
    schedule = optim.learning_rate_schedule(train_config)
    dropout_prng = getattr(train_config, "dropout_prng", "threefry")
    poison_steps = tuple(int(s) for s in train_config.debug_poison_steps)

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        mask_key, dropout_key = jax.random.split(step_key(state))
        if not setup.dynamic_masking:
            mask_key = static_mask_keys(state, batch["mask_seeds"])
        masked = mask_batch(setup, batch, mask_key)
        example_weights = jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
        sample_key = None
        if setup.electra is not None:
            dropout_key, sample_key = jax.random.split(dropout_key)
        dropout_key = dropout_key_with_impl(dropout_key, dropout_prng)

        def loss_fn(params):
            sums = forward_sums(setup, params, batch, masked, example_weights, deterministic=False,
                                dropout_key=dropout_key, sample_key=sample_key, teacher=teacher_of(state), step=state.step)
            loss = losses.pretraining_loss(sums)
            if poison_steps:  # test hook: a NaN loss (and so NaN gradients) at the listed steps
                loss = loss * jnp.where(jnp.isin(state.step + 1, jnp.asarray(poison_steps)), jnp.nan, 1.0)
            return loss, sums

        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = setup.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params, opt_state = keep_if_finite(finite, (params, opt_state), (state.params, state.opt_state))
        metrics = dict(sums, loss=loss, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.int32),
                       learning_rate=schedule(schedule_count(state.opt_state)))
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    batch_spec = parallel.batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(setup.state_sharding, batch_spec),
                   out_shardings=(setup.state_sharding, parallel.replicated(mesh)),
                   donate_argnums=(0,) if getattr(train_config, "donate_state", True) else ())


def keep_if_finite(finite: jax.Array, updated, previous):
    """`updated` where `finite`, else `previous`, leaf by leaf: a bad step leaves the state bitwise as it was."""
    return jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, previous)


def schedule_count(opt_state) -> jax.Array:
    """The optimizer's own step count, which sets its learning rate; it lags `TrainState.step` by the
    number of skipped (non-finite) steps and rewinds when the trainer restores a checkpoint's optimizer."""
    return optax.tree_utils.tree_get(
        opt_state, "count", filtering=lambda path, _: getattr(path[-1], "tuple_name", "") == "ScaleByScheduleState")


def make_eval_step(setup: Setup, mesh):
    """The jitted `eval_step(params, batch, key, teacher) -> sums`: fixed masks (and ELECTRA samples) from
    `key`, no dropout; `teacher` is a distillation run's (its terms are reported too), else None."""

    def eval_step(params, batch, key, teacher):
        sample_key = None
        if setup.electra is not None:
            key, sample_key = jax.random.split(key)
        masked = mask_batch(setup, batch, key)
        sums = forward_sums(setup, params, batch, masked, batch["example_weights"], deterministic=True,
                            sample_key=sample_key, teacher=teacher, step=jnp.zeros((), jnp.int32))
        return dict(sums, num_examples=batch["example_weights"].sum())

    return jax.jit(eval_step, in_shardings=(setup.state_sharding.params, parallel.batch_sharding(mesh),
                                            parallel.replicated(mesh), teacher_of(setup.state_sharding)),
                   out_shardings=parallel.replicated(mesh))


def parameter_count(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
