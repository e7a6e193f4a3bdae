"""The optimizer of pretraining: global-norm clipping, then AdamW, LAMB or StableAdamW, on a
linear or warmup-stable-decay learning-rate schedule.

The default matches google-research/bert's `optimization.py`: Adam with decoupled weight decay (0.01)
that skips LayerNorm parameters and biases, beta2 0.999, epsilon 1e-6, linear warmup then linear decay
to zero. LAMB is ALBERT's optimizer, StableAdamW and the warmup-stable-decay schedule ModernBERT's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from bert_jax.errors import require as _require

OPTIMIZERS = ("adamw", "lamb", "stable_adamw")
SCHEDULES = ("linear", "wsd")
DECAY_SHAPES = ("linear", "1-sqrt", "cosine")

# Fields a fine-tuning optimizer config (finetuning/steps.py `optimizer_config`) or a config stored before
# they existed may lack; these values are the behaviour from before them.
_DEFAULTS = {"optimizer": "adamw", "schedule": "linear", "decay_steps": 0, "decay_shape": "linear",
             "decay_start_step": -1, "min_learning_rate_ratio": 0.0}


def _field(train_config, name: str):
    return train_config.get(name, _DEFAULTS[name])


def decay_start(train_config) -> int:
    """The step where the 'wsd' schedule leaves its peak: `decay_start_step`, or (-1) the last
    `decay_steps` of the run."""
    start = _field(train_config, "decay_start_step")
    return train_config.num_train_steps - _field(train_config, "decay_steps") if start < 0 else start


def learning_rate_schedule(train_config) -> optax.Schedule:
    """The learning rate of each step (0-based: step 0 is the first update), from `train_config.schedule`.

    'linear': linear warmup from 0 to `learning_rate` over `warmup_steps`, then linear decay to
    `min_learning_rate_ratio` * `learning_rate` at `num_train_steps` (google-research/bert, floor 0).
    'wsd': warmup, stable at the peak until `decay_start`, then a decay of `decay_steps` steps to the floor
    (Hägele et al. 2024; ModernBERT), held after it. A decay that starts or ends after `num_train_steps`
    makes a run of the stable phase alone, to decay later from one of its checkpoints.
    """
    if _field(train_config, "schedule") == "wsd":
        return _warmup_stable_decay(train_config)
    peak = train_config.learning_rate
    floor = peak * _field(train_config, "min_learning_rate_ratio")
    warmup = optax.linear_schedule(0.0, peak, max(train_config.warmup_steps, 1))
    decay = optax.linear_schedule(peak, floor, max(train_config.num_train_steps - train_config.warmup_steps, 1))
    return optax.join_schedules([warmup, decay], boundaries=[train_config.warmup_steps])


def _warmup_stable_decay(train_config) -> optax.Schedule:
    """Trapezoidal schedule. A stable phase does not depend on where the decay will start, so any of its
    checkpoints can be decayed from by setting `decay_start_step` to its step."""
    peak, warmup = train_config.learning_rate, train_config.warmup_steps
    floor = peak * _field(train_config, "min_learning_rate_ratio")
    start, length = decay_start(train_config), _field(train_config, "decay_steps")
    shape = _field(train_config, "decay_shape")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        progress = jnp.clip((step - start) / length, 0.0, 1.0)
        if shape == "1-sqrt":
            remaining = 1.0 - jnp.sqrt(progress)
        elif shape == "cosine":
            remaining = 0.5 * (1.0 + jnp.cos(math.pi * progress))
        else:
            remaining = 1.0 - progress
        warming = peak * step / max(warmup, 1)
        return jnp.where(step < warmup, warming, jnp.where(step < start, peak, floor + (peak - floor) * remaining))
    return schedule


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def weight_decay_mask(params):
    """True for parameters that get weight decay: everything but biases and LayerNorm scales/biases."""
    def decays(path, _):
        names = _path_names(path)
        leaf = names[-2] if names[-1] == "value" else names[-1]
        return leaf not in ("bias", "scale")
    return jax.tree_util.tree_map_with_path(decays, params)


def lamb(learning_rate, *, b1, b2, eps, weight_decay) -> optax.GradientTransformation:
    """LAMB (You et al. 2019): the Adam direction plus decoupled weight decay, rescaled per tensor by the
    trust ratio ||w|| / ||update|| (1 where either is 0). As google-research/albert's `lamb_optimizer.py`,
    the tensors without weight decay (LayerNorm, biases) also skip the trust ratio
    (`exclude_from_layer_adaptation` defaults to the weight-decay exclusions). Adam's moments are
    bias-corrected, as in the paper's Algorithm 2, NVIDIA's LAMB and `optax.lamb` (ALBERT's code omits the
    correction, as google-research/bert's AdamW does, whose correction this package's AdamW keeps too).
    """
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
        optax.masked(optax.scale_by_trust_ratio(), weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def stable_adamw(learning_rate, *, b1, b2, eps, weight_decay) -> optax.GradientTransformation:
    """StableAdamW (Wortsman et al. 2023, Algorithm 2; ModernBERT's optimizer): AdamW whose learning rate
    is divided, per tensor, by max(1, RMS_t) with RMS_t = sqrt(mean(g_t^2 / max(v_t, eps^2))), v_t the
    bias-corrected second moment including g_t. Adafactor's update clipping, so one outlier gradient
    cannot take a step much larger than the learning rate. As `optimi.StableAdamW` (decouple_lr False, its
    default): the weight decay is decoupled and scaled by the clipped learning rate, the Adam step is
    m_t / (sqrt(v_t) + eps) with both moments bias-corrected. LayerNorm and biases get no weight decay.
    """
    return optax.chain(_scale_by_stable_adam(b1, b2, eps, weight_decay), optax.scale_by_learning_rate(learning_rate))


def _scale_by_stable_adam(b1: float, b2: float, eps: float, weight_decay: float) -> optax.GradientTransformation:
    """StableAdamW without the learning rate: (Adam direction + decay) / max(1, RMS_t), per tensor."""

    def init(params):
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(jnp.zeros_like, params),
                                      nu=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("stable_adamw's weight decay needs the parameters: call update(grads, state, params).")
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        mu_correction, nu_correction = 1 - b1 ** count, 1 - b2 ** count

        def step(m, v, g, w, decays):
            v_hat = v / nu_correction
            rms = jnp.sqrt(jnp.mean(g * g / jnp.maximum(v_hat, eps * eps)))
            direction = (m / mu_correction) / (jnp.sqrt(v_hat) + eps) + (weight_decay * w if decays else 0.0)
            return direction / jnp.maximum(1.0, rms)

        updates = jax.tree.map(step, mu, nu, grads, params, weight_decay_mask(params))
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(train_config) -> optax.GradientTransformation:
    """Clip by global norm, then `train_config.optimizer`; the learning rate is reported with
    `learning_rate_schedule`."""
    hyper = {"b1": train_config.adam_b1, "b2": train_config.adam_b2, "eps": train_config.adam_eps,
             "weight_decay": train_config.weight_decay}
    schedule = learning_rate_schedule(train_config)
    name = _field(train_config, "optimizer")
    if name == "lamb":
        inner = lamb(schedule, **hyper)
    elif name == "stable_adamw":
        inner = stable_adamw(schedule, **hyper)
    else:
        inner = optax.adamw(schedule, mask=weight_decay_mask, **hyper)
    return optax.chain(optax.clip_by_global_norm(train_config.max_grad_norm), inner)


def validate_train(t) -> None:
    """The optimizer and schedule fields of `config.train` (`config.validate` asks here)."""
    _require(t.optimizer in OPTIMIZERS, f"config.train.optimizer={t.optimizer!r} is not one of {OPTIMIZERS}.")
    _require(t.schedule in SCHEDULES, f"config.train.schedule={t.schedule!r} is not one of {SCHEDULES}.")
    _require(t.decay_shape in DECAY_SHAPES, f"config.train.decay_shape={t.decay_shape!r} is not one of {DECAY_SHAPES}.")
    _require(0.0 <= t.min_learning_rate_ratio <= 1.0, "config.train.min_learning_rate_ratio must be in [0, 1] (the "
             f"floor of the decay as a fraction of learning_rate), got {t.min_learning_rate_ratio}.")
    _require(t.decay_start_step >= -1, "config.train.decay_start_step must be a step >= 0, or -1 (the last "
             f"decay_steps of the run), got {t.decay_start_step}.")
    if t.schedule != "wsd":
        unread = [f"{name}={t[name]!r}" for name in ("decay_steps", "decay_shape", "decay_start_step")
                  if t[name] != _DEFAULTS[name]]
        _require(not unread, f"config.train.schedule='linear' decays over the whole run and reads no "
                 f"{', '.join(unread)}; set config.train.schedule='wsd' to use them, or leave them at their defaults.")
        return
    _require(t.decay_steps >= 1, f"config.train.schedule='wsd' needs config.train.decay_steps >= 1, got "
             f"{t.decay_steps}; e.g. a fifth of the run (Hägele et al. 2024).")
    start = decay_start(t)
    where = f"step {start}" + (" (num_train_steps - decay_steps)" if t.decay_start_step < 0 else "")
    _require(start >= t.warmup_steps, f"the 'wsd' decay would start at {where}, before the warmup ends "
             f"(config.train.warmup_steps={t.warmup_steps}); shorten the warmup or the decay, or start it later.")
