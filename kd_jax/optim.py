"""The optimizer from the config: AdamW, warmup + linear/cosine decay, clipping.

Gradient accumulation lives in the train step (a scan over micro-batches), so the
optimizer sees one summed gradient per step and optax needs no MultiSteps wrapper.
"""

from __future__ import annotations

import optax
from ml_collections import ConfigDict

from kd_jax.errors import UserError

SCHEDULES = ("constant", "linear", "cosine")


class OptimConfigError(UserError):
    """A bad optimizer setting, with the allowed values."""


def warmup_steps(cfg: ConfigDict, num_steps: int) -> int:
    """`warmup_steps` if set, else `warmup_ratio` of the run (Tulu 3 uses a 0.03 ratio)."""
    if cfg.warmup_steps > 0:
        return int(cfg.warmup_steps)
    return int(round(cfg.warmup_ratio * num_steps))


def learning_rate_schedule(cfg: ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then constant, linear or cosine decay to `lr * end_factor`."""
    if cfg.schedule not in SCHEDULES:
        raise OptimConfigError(
            f"optim.schedule={cfg.schedule!r} is unknown; choose from {list(SCHEDULES)}."
        )
    if cfg.lr <= 0:
        raise OptimConfigError(f"optim.lr must be > 0, got {cfg.lr}.")
    warmup = min(warmup_steps(cfg, num_steps), num_steps)
    decay_steps = max(num_steps - warmup, 1)
    end = cfg.lr * cfg.end_lr_factor
    if cfg.schedule == "constant":
        decay = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(cfg.lr, end, decay_steps)
    else:
        decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.end_lr_factor)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def make_optimizer(cfg: ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """AdamW (or Adafactor / SGD) with global-norm clipping, from `config.optim`."""
    schedule = learning_rate_schedule(cfg, num_steps)
    if cfg.name == "adamw":
        opt = optax.adamw(
            schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    elif cfg.name == "adafactor":
        opt = optax.adafactor(schedule)
    elif cfg.name == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.b1 or None)
    else:
        raise OptimConfigError(
            f"optim.name={cfg.name!r} is unknown; choose from ['adamw', 'adafactor', 'sgd']."
        )
    if cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt
