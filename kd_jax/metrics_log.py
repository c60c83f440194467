"""Run metrics: `WORKDIR/metrics.jsonl` (one JSON object per logged step), TensorBoard,
and optionally Weights & Biases (`train.wandb.enabled`; the package is needed only then).

On resume the JSONL file is cut back to the restored step, so a preempted-and-resumed
run leaves exactly the file an uninterrupted run would have written. TensorBoard event
files come from tensorboardX (no TensorFlow). Only process 0 writes.

Rows also carry wall-clock fields (`TIMING_KEYS`, from kd_jax.step_clock): they are the
only fields that differ between two runs of the same config and seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np

from kd_jax.config_checks import ConfigError

METRICS_FILE = "metrics.jsonl"
TIMING_KEYS = (
    "step_time_s",
    "tokens_per_s_per_device",
    "model_tflops_per_s_per_device",
    "mfu",
    "sample_time_share",
)


def without_timing(row: dict) -> dict:
    """A row's reproducible part: everything but the wall-clock fields."""
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def to_python(metrics: dict) -> dict:
    """Device scalars -> JSON numbers (non-finite values as strings, which JSON lacks)."""
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v).item() if hasattr(v, "shape") or isinstance(v, np.generic) else v
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        out[k] = v
    return out


def read_metrics(workdir: str | Path, timing: bool = True) -> list[dict]:
    """The rows of a run's metrics.jsonl (`timing=False`: without the wall-clock fields)."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows if timing else [without_timing(r) for r in rows]


class TrackerError(ConfigError):
    """An experiment tracker asked for that cannot run."""


WANDB_MODES = ("online", "offline", "disabled")


def check_tracker(wandb_cfg) -> None:
    """Fails before training when `train.wandb` is enabled but cannot run (every process
    checks, so none waits on a process that stopped)."""
    if not wandb_cfg or not wandb_cfg.get("enabled"):
        return
    if wandb_cfg.get("mode", "online") not in WANDB_MODES:
        raise TrackerError(
            f"config.train.wandb.mode={wandb_cfg['mode']!r} is unknown; use one of {WANDB_MODES}."
        )
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise TrackerError(
            "config.train.wandb.enabled=True but the wandb package is not installed; "
            "pip install wandb, or set --config.train.wandb.enabled=False."
        ) from None


def _start_wandb(workdir: Path, wandb_cfg, config: dict | None):
    import wandb

    return wandb.init(
        project=wandb_cfg.get("project") or "kd_jax",
        entity=wandb_cfg.get("entity") or None,
        name=wandb_cfg.get("name") or workdir.name,
        # One W&B run per workdir: a resumed run continues it.
        id=wandb_cfg.get("name") or workdir.absolute().as_posix().replace("/", "_")[-120:],
        resume="allow",
        mode=wandb_cfg.get("mode", "online"),
        dir=str(workdir),
        config=config or {},
    )


class MetricsWriter:
    def __init__(
        self,
        workdir: str | Path,
        resume_step: int = 0,
        tensorboard: bool = True,
        wandb_cfg=None,
        config: dict | None = None,
    ):
        """`wandb_cfg`: the `train.wandb` section; `config`: the resolved config it logs."""
        self.enabled = jax.process_index() == 0
        self.path = Path(workdir) / METRICS_FILE
        self._tb = self._wandb = None
        check_tracker(wandb_cfg)
        if not self.enabled:
            return
        if wandb_cfg and wandb_cfg.get("enabled"):
            self._wandb = _start_wandb(Path(workdir), wandb_cfg, config)
        rows = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, metrics: dict) -> dict:
        row = {"step": int(step), **to_python(metrics)}
        if not self.enabled:
            return row
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, int | float)}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))
        return row

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
