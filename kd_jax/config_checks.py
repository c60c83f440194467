"""Checks of a run config before anything is written: one clear sentence per mistake."""

from __future__ import annotations

import os
from pathlib import Path

from ml_collections import ConfigDict

from kd_jax.errors import ConfigError

METHODS = ("sft", "kd")


def _writable(workdir: Path) -> bool:
    p = workdir.absolute()
    while not p.exists():
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def _has_source(mc: ConfigDict) -> bool:
    return bool(mc.hf_path or mc.workdir or mc.preset)


def validate(config: ConfigDict, workdir: str | Path | None) -> None:
    """Raises ConfigError for the first problem found; touches nothing on disk."""
    from kd_jax.data import DataConfig
    from kd_jax.optim import learning_rate_schedule, make_optimizer
    from kd_jax.step_builder import loss_config

    if config.method not in METHODS:
        raise ConfigError(f"config.method={config.method!r} is unknown; use one of {METHODS}.")
    if not _has_source(config.student):
        raise ConfigError(
            "config.student names no weights; set student.hf_path, student.workdir or "
            "student.preset."
        )
    if config.method == "kd" and not _has_source(config.teacher):
        raise ConfigError(
            "config.method='kd' needs a teacher; set teacher.hf_path, teacher.workdir or "
            "teacher.preset (or use method='sft')."
        )
    kd = config.kd
    try:
        loss_config(config, method="kd")
    except ValueError as e:
        raise ConfigError(f"config.kd: {e}") from None
    if kd.reduction == "sequence" and config.data.packing:
        raise ConfigError(
            "kd.reduction='sequence' averages per row, which packing mixes; set "
            "--config.data.packing=False."
        )
    if kd.teacher_cache:
        if config.method != "kd":
            raise ConfigError("config.kd.teacher_cache is set but method is not 'kd'.")
        if config.data.packing:
            raise ConfigError(
                "A teacher cache supplies one example per row; set --config.data.packing=False."
            )
        if kd.teacher_top_k or kd.teacher_noise_std:
            raise ConfigError(
                "kd.teacher_top_k and kd.teacher_noise_std do not apply to a teacher cache "
                "(its top-k is fixed when it is built); set them to 0."
            )
    if kd.chunk_size < 1:
        raise ConfigError(f"config.kd.chunk_size must be >= 1, got {kd.chunk_size}.")
    try:
        DataConfig.from_mapping(config.data)
    except ValueError as e:
        raise ConfigError(f"config.data: {e}") from None
    if not config.data.train:
        raise ConfigError("config.data.train is empty; point it to a JSONL/Parquet/TFDS path.")
    if not config.data.tokenizer:
        raise ConfigError("config.data.tokenizer is empty; point it to an HF tokenizer folder.")
    try:
        learning_rate_schedule(config.optim, max(config.train.num_steps, 1))
        make_optimizer(config.optim, max(config.train.num_steps, 1))
    except ValueError as e:
        raise ConfigError(f"config.optim: {e}") from None
    if config.optim.grad_accum < 1 or config.data.batch_size % config.optim.grad_accum:
        raise ConfigError(
            f"data.batch_size={config.data.batch_size} must be a positive multiple of "
            f"optim.grad_accum={config.optim.grad_accum}."
        )
    gkd = config.gkd
    if not 0.0 <= gkd.lambda_ <= 1.0:
        raise ConfigError(f"config.gkd.lambda_ must be in [0, 1], got {gkd.lambda_}.")
    if gkd.lambda_ > 0:
        if config.method != "kd":
            raise ConfigError("config.gkd.lambda_ > 0 needs method='kd' and a teacher.")
        if config.data.packing or config.data.train_on_inputs:
            raise ConfigError(
                "On-policy batches (gkd.lambda_ > 0) need one example per row with supervised "
                "responses; set --config.data.packing=False --config.data.train_on_inputs=False."
            )
        if gkd.max_new_tokens < 1 or gkd.temperature < 0 or not 0 < gkd.top_p <= 1:
            raise ConfigError(
                "config.gkd needs max_new_tokens >= 1, temperature >= 0 and 0 < top_p <= 1."
            )
    tc = config.train
    if tc.num_steps < 1:
        raise ConfigError(f"config.train.num_steps must be >= 1, got {tc.num_steps}.")
    for key in ("log_every", "checkpoint_every", "max_bad_steps"):
        if tc[key] < 1:
            raise ConfigError(f"config.train.{key} must be >= 1, got {tc[key]}.")
    if workdir is not None and not _writable(Path(workdir)):
        raise ConfigError(
            f"Cannot write to workdir {workdir}; choose a directory you can write (--workdir)."
        )
