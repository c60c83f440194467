"""Input time / step time for the tiny_compare runs: is the data pipeline the bottleneck?

Builds each configs/tiny_compare.py run (teacher, SFT student, KD student) exactly as `kd-jax train`
does, then times, in the same process, pulling batches from the pipeline alone and the
jitted train step alone (on one fixed batch). A ratio well below 1 means the step, not
the input, sets the pace; the background prefetch thread overlaps the two anyway.

    python benchmarks/input_vs_step.py [--batches 30]
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from configs import tiny_compare
from kd_jax import step_builder as build
from kd_jax.data import time_batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    for name in ("teacher", "sft", "kd"):
        config = tiny_compare.get_config(name)
        if name == "kd":  # a random teacher of the real shape: only speed is measured
            config.teacher.preset = tiny_compare.get_config("teacher").student.preset
        r = build.setup(config)
        data = time_batches(r.pipeline.train_iterator(), args.batches)["seconds_per_batch"]
        prog = build.build_program(
            config,
            mesh=r.mesh,
            rules=r.rules,
            student=r.student,
            teacher=r.teacher,
            batch_shardings=build.batch_shardings(config, r.mesh, r.rules),
        )
        step = prog.train_step
        state = prog.init_state(r.student.trainable)
        batch = next(r.pipeline.train_iterator())
        rng = jax.random.key(0)
        for _ in range(2):  # the second call sees committed, sharded state: one more compile
            state, m = step(state, batch, rng, prog.context)
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, m = step(state, batch, rng, prog.context)
        jax.block_until_ready(m)
        step_s = (time.perf_counter() - t0) / args.steps
        print(
            f"{name:8s} input {data * 1e3:7.1f} ms/batch   step {step_s * 1e3:7.1f} ms   "
            f"input/step = {data / step_s:.3f}"
        )


if __name__ == "__main__":
    main()
