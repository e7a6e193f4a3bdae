"""The optimizer of BERT pretraining: global-norm clipping, then AdamW with warmup and linear decay.

Matches google-research/bert's `optimization.py`: Adam with decoupled weight decay (0.01) that skips
LayerNorm parameters and biases, beta2 0.999, epsilon 1e-6, linear warmup then linear decay to zero.
"""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(train_config) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then linear decay to 0 at the end."""
    peak = train_config.learning_rate
    warmup = optax.linear_schedule(0.0, peak, max(train_config.warmup_steps, 1))
    decay = optax.linear_schedule(peak, 0.0, max(train_config.num_train_steps - train_config.warmup_steps, 1))
    return optax.join_schedules([warmup, decay], boundaries=[train_config.warmup_steps])


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def weight_decay_mask(params):
    """True for parameters that get weight decay: everything but biases and LayerNorm scales/biases."""
    def decays(path, _):
        names = _path_names(path)
        leaf = names[-2] if names[-1] == "value" else names[-1]
        return leaf not in ("bias", "scale")
    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train_config) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW; the learning rate is reported with `learning_rate_schedule`."""
    return optax.chain(
        optax.clip_by_global_norm(train_config.max_grad_norm),
        optax.adamw(learning_rate_schedule(train_config), b1=train_config.adam_b1, b2=train_config.adam_b2,
                    eps=train_config.adam_eps, weight_decay=train_config.weight_decay, mask=weight_decay_mask),
    )
