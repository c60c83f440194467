"""The miniature study suite: both studies' findings reproduced (or not) on a CPU.

    python -m kd_jax.miniature --workdir runs/mini            # the full suite (docs/)
    python -m kd_jax.miniature --workdir runs/mini_smoke --smoke
    python -m kd_jax.miniature --workdir runs/mini --docs docs  # also write docs/miniature.md

plan      the runs: teachers, students per finding, the low-resource recipes (read it
          for what each finding compares)
runner    trains, caches the teacher's top-k, synthesizes, evaluates; resumes; timings
findings  findings (a)-(d) with 95% CIs, the Markdown report and its figures
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from kd_jax.miniature import conditions, findings, suite

    p = argparse.ArgumentParser(prog="kd-jax miniature", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="runs/miniature")
    p.add_argument("--smoke", action="store_true", help="1 seed, few steps: the plumbing")
    p.add_argument("--docs", default=None, help="also write DOCS/miniature.md and its PNGs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorboardX", "kd_jax.data"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    scale = conditions.SCALES["smoke" if args.smoke else "full"]
    root = Path(args.workdir)
    t0 = time.time()
    timings = suite.run_plan(conditions.build_plan(scale), root, scale)
    path = findings.write(root, scale, timings, docs=args.docs)
    print(f"Wrote {path} ({time.time() - t0:.0f} s this invocation)")
    return 0
