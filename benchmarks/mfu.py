"""MFU of a KD step: what the training logs say against a direct measurement.

The training loop times steps between the host waits it makes anyway (kd_jax.step_clock)
and logs `mfu` on logging steps. In each round the same config is (a) trained for two
logging intervals and the second interval's logged mfu taken (the first compiles), and
(b) its train step, built once on the same shapes and data, timed step by step with a
wait after each, MFU = model FLOPs of a step
(kd_jax.flops, as `kd-jax plan` counts) / step time / devices / peak. Both use one peak:
on CPU the float32 matmul rate of one device, measured once. Target: within 10%.

    python benchmarks/mfu.py [--log-every 10 --rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

from configs import tiny_compare
from kd_jax import flops, train
from kd_jax import step_builder as build
from kd_jax.data import builtin_paths
from kd_jax.metrics_log import read_metrics
from kd_jax.step_clock import step_model_flops


def kd_config(steps: int, log_every: int):
    """configs/tiny_compare.py's KD run (tiny-student from a random tiny-teacher of its shapes)."""
    c = tiny_compare.get_config("kd")
    c.teacher.workdir, c.teacher.preset = "", "tiny-teacher"
    c.train.num_steps, c.train.log_every = steps, log_every
    c.train.eval_every, c.train.checkpoint_every = 0, steps
    c.train.progress_bar, c.train.async_checkpointing = False, False
    return c


def logged_mfu(config, workdir: str) -> float:
    """The mfu the training loop logs for its second interval (the first compiles)."""
    train.run(config, workdir)
    return read_metrics(workdir)[1]["mfu"]


def direct_timer(config):
    """A function timing `n` steps of the config's train step, waiting after each one,
    on the pipeline's batches (fetched outside the timed span); returns step seconds."""
    r = build.setup(config)
    prog = build.build_program(
        config,
        mesh=r.mesh,
        rules=r.rules,
        student=r.student,
        teacher=r.teacher,
        batch_shardings=build.batch_shardings(config, r.mesh, r.rules, r.pipeline),
    )
    step = prog.train_step
    box = {"state": prog.init_state(r.student.trainable)}
    batches = r.pipeline.train_iterator()
    rng = jax.random.key(config.seed)

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            batch = next(batches)
            t0 = time.perf_counter()
            box["state"], _ = jax.block_until_ready(step(box["state"], batch, rng, prog.context))
            times.append(time.perf_counter() - t0)
        return times

    run(1)  # compile
    per_step = step_model_flops(config, r.student, r.teacher) / jax.device_count()
    return run, per_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    builtin_paths.ensure()
    # Two logging intervals per training run; the second is compared.
    config = kd_config(2 * args.log_every, args.log_every)
    peak, source = flops.peak_flops_per_s()
    timer, flops_per_device = direct_timer(config)
    logged, direct = [], []
    # Paired rounds: other processes' load falls on both measurements of a round alike.
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            logged.append(logged_mfu(config, f"{tmp}/run{i}"))
            t = float(np.median(timer(args.log_every)))
            direct.append(flops_per_device / t / peak)
    logged, direct = np.asarray(logged), np.asarray(direct)
    b, length = config.data.batch_size, config.data.max_length
    print(
        f"KD step {config.student.preset} <- {config.teacher.preset}, batch {b} x {length}, "
        f"{jax.device_count()} device(s); peak {peak:.4g} FLOP/s ({source})"
    )
    print(f"logged mfu   per round: {', '.join(f'{m:.4f}' for m in logged)}")
    print(f"measured mfu per round: {', '.join(f'{m:.4f}' for m in direct)}")
    print(f"median logged {np.median(logged):.4f}, measured {np.median(direct):.4f}")
    ratio = float(np.median(logged / direct))
    print(f"logged / measured (median of rounds) {ratio:.3f}  (target within 0.9-1.1)")


if __name__ == "__main__":
    main()
