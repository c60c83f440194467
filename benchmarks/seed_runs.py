"""Runs of one config over seeds, evaluated on the built-in test, summarised with 95% CIs.

Shared by the KD-quality scripts (cross_tokenizer_kd.py, sampled_cache_kl.py): each run
trains (or resumes, or skips when finished) in its own folder, its held-out numbers go to
WORKDIR/<name>/result.json, and the tables print means with 95% t-intervals over seeds and
gains paired by seed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kd_jax import sweep, train
from kd_jax.data import builtin_paths
from kd_jax.evaluation.stats import t_ci
from kd_jax.metrics_log import read_metrics
from kd_jax.quickstart import builtin_accuracy


def with_seed(config, seed: int):
    """The same condition at another seed: init, data order and the training subset."""
    config.seed = config.data.seed = config.data.subset_seed = seed
    return config


def scaled(config, factor: float):
    """num_steps times `factor` (a quick plumbing check); one eval and checkpoint, at the end."""
    tc = config.train
    tc.num_steps = max(1, round(tc.num_steps * factor))
    tc.eval_every = tc.checkpoint_every = tc.num_steps
    config.optim.warmup_steps = min(config.optim.warmup_steps, tc.num_steps // 4)
    return config


def train_and_score(config, workdir: Path, extra=None) -> dict:
    """Trains the run (resuming or skipping) and returns its held-out numbers: the last
    validation CE of the student and greedy exact-match accuracy on the built-in test;
    `extra(config, workdir)` adds more (e.g. held-out KL to the teacher)."""
    out = workdir / "result.json"
    changed = train.changed_settings(workdir, config)
    if changed:  # resumed under another condition, the run would mix two
        raise SystemExit(f"{workdir} was started with other settings ({'; '.join(changed)}).")
    if out.exists() and sweep.is_finished(workdir, config.train.num_steps):
        return json.loads(out.read_text())
    t0 = time.time()
    train.run(config, workdir)
    rows = [r for r in read_metrics(workdir) if "eval_ce" in r]
    test = builtin_paths.resolve(config.data.validation)
    result = {
        "eval_ce": rows[-1]["eval_ce"],
        "accuracy": builtin_accuracy(workdir, test, config.eval.num_examples),
    }
    if extra is not None:
        result.update(extra(config, workdir))
    result["seconds"] = round(time.time() - t0, 1)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{workdir.name}: {result}", flush=True)
    return result


def fmt_ci(values, scale: float = 1.0, digits: int = 3) -> str:
    m, lo, hi = (v * scale for v in t_ci(values))
    if lo != lo:  # one seed: no interval
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def paired_gains(results: dict, metric: str, base: str, sign: float = 1.0) -> dict:
    """Per condition, its per-seed gain over `base` (sign -1 for a loss: lower is better)."""
    seeds = sorted(results[base])
    return {
        name: [sign * (runs[s][metric] - results[base][s][metric]) for s in seeds]
        for name, runs in results.items()
        if name != base and sorted(runs) == seeds
    }
