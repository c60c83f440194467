"""Step time, throughput and MFU of the training loop, without a host sync per step.

JAX dispatches steps asynchronously, so the wall time of one step is only known when
the host waits for a result. The loop waits anyway on logging, eval and checkpoint
steps; `StepClock` times the steps between two such waits and divides:

    step_time_s                    wall seconds per train step over the interval
    tokens_per_s_per_device        batch_size * max_length / step_time / devices
    model_tflops_per_s_per_device  model FLOPs of one step (kd_jax.flops: student 6N or
                                   4N under LoRA, teacher 2N, attention scores) / time
    mfu                            that rate / the device's peak (kd_jax.flops)
    sample_time_share              (GKD runs) the interval's share spent sampling

Eval and checkpoint time is left out (the clock restarts after them); the first
interval includes compilation. On-policy steps wait for the previous step before
sampling and for the sampler after it, so its time is its own (a GKD run pays those two
waits on sampled steps only).
"""

from __future__ import annotations

import logging
import math
import time

import jax

from kd_jax import flops

log = logging.getLogger("kd_jax.train")


def step_model_flops(config, student, teacher) -> float:
    """Model FLOPs of one train step of `config` (all devices together)."""
    b, t = config.data.batch_size, config.data.max_length
    total = 0.0
    for role, parts in (("student", student), ("teacher", teacher)):
        if parts is not None:
            f = flops.parts_flops(parts, role, t, b * t)
            total += f["model"] + f["attention"]
    return total


class StepClock:
    def __init__(self, *, tokens_per_step: int, flops_per_step: float, sampling: bool):
        self.tokens = tokens_per_step
        self.flops = flops_per_step
        self.sampling = sampling
        self.devices = jax.device_count()
        self.peak, source = flops.peak_flops_per_s()
        log.info(
            "MFU against %.4g FLOP/s per device (%s); %.4g model FLOP per step.",
            self.peak,
            source,
            flops_per_step,
        )
        self.restart(0)

    def restart(self, step: int) -> None:
        """Start a new interval after `step`, whose result the host has just waited for."""
        self._t0, self._step, self._sampled = time.perf_counter(), step, 0.0

    def sampled(self, seconds: float) -> None:
        self._sampled += seconds

    def measure(self, step: int) -> dict:
        """Fields for the steps since the last restart; call right after a host wait."""
        n = step - self._step
        if n <= 0:
            return {}
        elapsed = time.perf_counter() - self._t0
        per_step = elapsed / n
        rate = self.flops / per_step / self.devices
        out = {
            "step_time_s": per_step,
            "tokens_per_s_per_device": self.tokens / per_step / self.devices,
            "model_tflops_per_s_per_device": rate / 1e12,
        }
        if math.isfinite(self.peak):
            out["mfu"] = rate / self.peak
        if self.sampling:
            out["sample_time_share"] = self._sampled / elapsed
        self.restart(step)
        return out
