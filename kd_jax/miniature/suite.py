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

from kd_jax.miniature.conditions import (
    CACHE_K,
    HUMAN_TRAIN,
    HUMAN_VAL,
    STRONGER_BY,
    TASK,
    TERSE_CIPHER,
    PlannedRun,
    Scale,
)

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


def named_path(root: Path, name: str) -> Path | None:
    """The file a workdir-relative data name stands for (suite.write_named_files)."""
    if name in (HUMAN_TRAIN, HUMAN_VAL, TERSE_CIPHER) or name.startswith("synthetic-"):
        return root / f"{name}.jsonl"
    return None


def resolve_paths(run: PlannedRun, root: Path) -> ConfigDict:
    """The run's config with run names, "cache:<teacher>" and data names made paths."""
    c = ConfigDict(run.config.to_dict())
    for mc in (c.student, c.teacher):
        if mc.workdir:
            mc.workdir = str(root / mc.workdir)
    if c.kd.teacher_cache.startswith("cache:"):
        c.kd.teacher_cache = str(root / f"cache-{c.kd.teacher_cache[len('cache:') :]}")
    for key in ("train", "validation"):
        files = [str(named_path(root, p) or p) for p in c.data[key].split(",") if p]
        c.data[key] = ",".join(files)
    return c


def build_cache(config: ConfigDict, out: Path) -> None:
    from kd_jax import teacher_cache_job

    meta = out / "meta.json"
    if meta.exists() and json.loads(meta.read_text()).get("complete"):
        return
    cfg = ConfigDict(config.to_dict())
    cfg.data.num_examples = 0  # the cache covers every record; subsets look theirs up
    cfg.data.validation_size = 0
    teacher_cache_job.build(cfg, out, k=CACHE_K, batch_size=100, progress=False)


def _lines(name: str) -> list[str]:
    from kd_jax.data import builtin_paths

    with open(builtin_paths.resolve(name), encoding="utf-8") as f:
        return [line for line in f if line.strip()]


def write_named_files(root: Path, scale: Scale, name: str) -> Path:
    """The files (c) trains on: the human train / validation pairs (disjoint, drawn from
    the 300 built-in human pairs in a fixed order), the terse teacher-scale pairs, and
    nested synthetic sets (the first N teacher-labelled inputs)."""
    import random

    out = named_path(root, name)
    if out.exists():
        return out
    if name in (HUMAN_TRAIN, HUMAN_VAL):
        human = _lines("builtin:chat/cipher/human")
        random.Random(0).shuffle(human)
        val, train = human[: scale.human_val], human[scale.human_val :][: scale.human]
        keep = train if name == HUMAN_TRAIN else val
    elif name == TERSE_CIPHER:
        keep = [
            line
            for line in _lines("builtin:chat/cipher/train")
            if not json.loads(line)["messages"][-1]["content"].startswith("Word by word")
        ]
    else:
        size = int(name.split("-")[1])
        labelled = synthesize(root, scale).read_text().splitlines(keepends=True)
        if len(labelled) < size:
            raise RuntimeError(
                f"The cipher teacher labelled only {len(labelled)} usable inputs; "
                f"(c) needs {size}: train the cipher teacher longer (cipher_teacher_steps)."
            )
        keep = labelled[:size]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(keep))
    tmp.rename(out)
    return out


def synthesize(root: Path, scale: Scale) -> Path:
    """The cipher teacher labels Zorbic inputs of the teacher-scale set (its greedy
    answers), a tenth more than the largest synthetic size: the filter drops some."""
    from kd_jax import synthesize as synth

    out = root / "synthetic.jsonl"
    if out.exists():
        return out
    inputs = root / "synthetic_inputs.jsonl"
    inputs.write_text(
        "".join(_lines("builtin:chat/cipher/train")[: int(1.1 * max(scale.synthetic)) + 8])
    )
    tmp = root / "synthetic.tmp.jsonl"
    synth.synthesize_file(
        str(root / "cipher-teacher"),
        str(named_path(root, HUMAN_TRAIN)),
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


def strong_gate(root: Path) -> tuple[bool, dict]:
    """Whether the strong teacher beats the teacher by STRONGER_BY on the test, and both
    accuracies: (b) uses it only then."""
    acc = {}
    for name in ("teacher", "strong-teacher"):
        doc = json.loads((root / name / "eval" / "scores.json").read_text())
        acc[name] = doc["tasks"][TASK]["accuracy"]
    return acc["strong-teacher"] >= acc["teacher"] + STRONGER_BY, acc


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
    student = load_trained(wd, which=run.checkpoint)[0]
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
    gate = None
    for i, run in enumerate(plan, 1):
        wd = root / run.name
        config = resolve_paths(run, root)
        if "strong-teacher" in run.needs:
            if gate is None:
                gate = strong_gate(root)
                log.info(
                    "Strong teacher %s vs teacher %s", gate[1]["strong-teacher"], gate[1]["teacher"]
                )
            if not gate[0]:
                log.error(
                    "%s skipped: the strong teacher (%.1f%%) is not %.0f points better than "
                    "the teacher (%.1f%%) on the test; train it longer (strong_steps).",
                    run.name,
                    100 * gate[1]["strong-teacher"],
                    100 * STRONGER_BY,
                    100 * gate[1]["teacher"],
                )
                continue
        for need in run.needs:
            if named_path(root, need) is not None:
                timer(f"data {need}", write_named_files, root, scale, need)
            elif need.startswith("cache:"):
                timer(f"cache {need[6:]}", build_cache, config, Path(config.kd.teacher_cache))
        after = None
        if run.teacher:
            after = functools.partial(
                timer, f"fidelity {run.name}", fidelity, run, wd, root, config, models
            )
        label = f"[{i}/{len(plan)}] {run.name}"
        evaluation = {"meta": dict(run.meta), "checkpoint": run.checkpoint}
        sweep.run_condition(label, wd, config, evaluation, timer=timer, after_eval=after)
    return timer.rows
