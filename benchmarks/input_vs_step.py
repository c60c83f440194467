"""Input time / step time for the quickstart runs: is the data pipeline the bottleneck?

Builds each quickstart run (teacher, SFT student, KD student) exactly as `kd-jax train`
does, then times, in the same process, pulling batches from the pipeline alone and the
jitted train step alone (on one fixed batch). A ratio well below 1 means the step, not
the input, sets the pace; the background prefetch thread overlaps the two anyway.

    python benchmarks/input_vs_step.py [--batches 30]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import jax

from configs import quickstart
from kd_jax import step as step_lib
from kd_jax import train
from kd_jax.data import time_batches
from kd_jax.optim import learning_rate_schedule, make_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    for name in ("teacher", "sft", "kd"):
        config = quickstart.get_config(name)
        if name == "kd":  # a random teacher of the real shape: only speed is measured
            config.teacher.preset = quickstart.get_config("teacher").student.preset
        r = train.setup(config)
        data = time_batches(r.pipeline.train_iterator(), args.batches)["seconds_per_batch"]
        opt = make_optimizer(config.optim, config.train.num_steps)
        sched = learning_rate_schedule(config.optim, config.train.num_steps)
        step = jax.jit(functools.partial(step_lib.train_step, optimizer=opt, schedule=sched,
                                         grad_accum=1, **r.loss_kw))  # fmt: skip
        state = step_lib.init_state(r.student.trainable, opt)
        batch = next(r.pipeline.train_iterator())
        rng = jax.random.key(0)
        for _ in range(2):  # the second call sees committed, sharded state: one more compile
            state, m = step(state, batch, rng, r.context)
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, m = step(state, batch, rng, r.context)
        jax.block_until_ready(m)
        step_s = (time.perf_counter() - t0) / args.steps
        print(f"{name:8s} input {data * 1e3:7.1f} ms/batch   step {step_s * 1e3:7.1f} ms   "
              f"input/step = {data / step_s:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
