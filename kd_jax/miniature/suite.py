"""Running the miniature plan: teachers, the teacher cache, synthetic data, students, evals.

Every step is skipped when its output is already there (a finished checkpoint, a complete
cache, the synthetic file, an evaluation newer than the checkpoint), so an interrupted
suite resumes where it stopped. Wall time and the machine's load average are recorded
per step in WORKDIR/timings.json: the machine is shared, so the load says how much of
the two cores the suite actually had.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path

from ml_collections import ConfigDict

from kd_jax.miniature.conditions import CACHE_K, HUMAN_CIPHER, TERSE_CIPHER, PlannedRun, Scale

log = logging.getLogger("kd_jax.miniature")


class Timer:
    """Seconds and mean 1-minute load average per named step, saved as it goes."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = json.loads(path.read_text()) if path.exists() else {}

    def __call__(self, name: str, fn, *args, **kwargs):
        load0, t0 = os.getloadavg()[0], time.time()
        out = fn(*args, **kwargs)
        seconds = round(time.time() - t0, 1)
        # Steps that were skipped (already done) keep the time measured when they ran.
        if seconds > 1.0 or name not in self.rows:
            load = round((load0 + os.getloadavg()[0]) / 2, 2)
            self.rows[name] = {"seconds": seconds, "load": load}
            self.path.write_text(json.dumps(self.rows, indent=1))
        return out


def resolve_paths(run: PlannedRun, root: Path) -> ConfigDict:
    """The run's config with run names, "cache:<teacher>" and "synthetic" made paths."""
    c = ConfigDict(run.config.to_dict())
    for mc in (c.student, c.teacher):
        if mc.workdir:
            mc.workdir = str(root / mc.workdir)
    if c.kd.teacher_cache.startswith("cache:"):
        c.kd.teacher_cache = str(root / f"cache-{c.kd.teacher_cache[len('cache:') :]}")
    named = {"synthetic": root / "synthetic.jsonl", TERSE_CIPHER: root / "cipher_terse.jsonl"}
    files = [str(named.get(p, p)) for p in c.data.train.split(",")]
    c.data.train = ",".join(files)
    return c


def build_cache(config: ConfigDict, out: Path) -> None:
    from kd_jax import teacher_cache_job

    meta = out / "meta.json"
    if meta.exists() and json.loads(meta.read_text()).get("complete"):
        return
    cfg = ConfigDict(config.to_dict())
    cfg.data.num_examples = 0  # the cache covers every record; subsets look theirs up
    teacher_cache_job.build(cfg, out, k=CACHE_K, batch_size=100, progress=False)


def terse_cipher(root: Path) -> Path:
    """The teacher-scale Zorbic pairs whose reply is the terse "The answer is X ." form."""
    from kd_jax.data import builtin_paths

    out = root / "cipher_terse.jsonl"
    if not out.exists():
        with open(builtin_paths.resolve("builtin:chat/cipher/train"), encoding="utf-8") as f:
            keep = [
                line
                for line in f
                if not json.loads(line)["messages"][-1]["content"].startswith("Word by word")
            ]
        out.write_text("".join(keep))
    return out


def synthesize(root: Path, scale: Scale) -> Path:
    """The teacher labels `scale.synthetic` Zorbic inputs (its greedy answers)."""
    from kd_jax import synthesize as synth
    from kd_jax.data import builtin_paths

    out = root / "synthetic.jsonl"
    if out.exists():
        return out
    inputs = root / "synthetic_inputs.jsonl"
    with open(builtin_paths.resolve("builtin:chat/cipher/train"), encoding="utf-8") as f:
        lines = [next(f) for _ in range(scale.synthetic)]
    inputs.write_text("".join(lines))
    tmp = root / "synthetic.tmp.jsonl"
    teacher = str(root / "cipher-teacher")
    synth.synthesize_file(
        teacher,
        HUMAN_CIPHER,
        tmp,
        mode="label",
        inputs=str(inputs),
        temperature=0.0,
        max_new_tokens=64,
        batch_size=100,
    )
    tmp.rename(out)
    os.replace(str(tmp) + ".counts.json", str(out) + ".counts.json")
    return out


class Models:
    """Loaded teacher models, kept for the fidelity of every student distilled from them."""

    def __init__(self):
        self._cache = {}

    def get(self, path: Path):
        from kd_jax.models.loader import load_trained

        if path not in self._cache:
            self._cache[path] = load_trained(path)[0]
        return self._cache[path]


def fidelity(run: PlannedRun, wd: Path, root: Path, config: ConfigDict, models: Models) -> None:
    """fidelity.json: agreement/BLEU against the teacher's own predictions, held-out KL."""
    from kd_jax.evaluation.fidelity import fidelity_from_predictions, write_fidelity
    from kd_jax.evaluation.run_eval import held_out_fidelity
    from kd_jax.models.loader import load_trained

    teacher_dir = root / run.teacher
    per_task = fidelity_from_predictions(str(wd / "eval"), str(teacher_dir / "eval"))
    student = load_trained(wd)[0]
    held = held_out_fidelity(config, student, models.get(teacher_dir), max_batches=4)
    write_fidelity(str(wd / "eval"), per_task, **held)


def run_plan(plan: list[PlannedRun], root: Path, scale: Scale) -> dict:
    """Runs every step of the plan that is not done yet; returns the timings."""
    from kd_jax import sweep

    root.mkdir(parents=True, exist_ok=True)
    timer = Timer(root / "timings.json")
    models = Models()
    (root / "plan.json").write_text(
        json.dumps(
            {
                "scale": scale.__dict__,
                "runs": [{"name": r.name, "groups": r.groups, "meta": r.meta} for r in plan],
            },
            indent=1,
            default=list,
        )
    )
    for i, run in enumerate(plan, 1):
        wd = root / run.name
        config = resolve_paths(run, root)
        for need in run.needs:
            if need == TERSE_CIPHER:
                timer("terse cipher data", terse_cipher, root)
            elif need == "synthetic":
                timer("synthetic data", synthesize, root, scale)
            elif need.startswith("cache:"):
                timer(f"cache {need[6:]}", build_cache, config, Path(config.kd.teacher_cache))
        after = None
        if run.teacher:
            after = functools.partial(
                timer, f"fidelity {run.name}", fidelity, run, wd, root, config, models
            )
        label = f"[{i}/{len(plan)}] {run.name}"
        sweep.run_condition(
            label, wd, config, {"meta": dict(run.meta)}, timer=timer, after_eval=after
        )
    return timer.rows
