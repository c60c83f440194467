"""The numbers behind the report: pooled conditions, gains over SFT with CIs, Study B's tests.

A condition is (teacher, student, data size, method, temperature); its runs differ only
in seed. Accuracies are macro averages over the tasks every run shares, as fractions.

Gain of a KD condition = mean over its seeds of the average accuracy minus the same for
SFT with the same student and data size. Two 95% CIs (percentile bootstrap, seeded):
  examples  each example's correctness averaged over a condition's seeds, resampled per
            task, paired KD vs SFT (both saw the same test items);
  seeds     each side's per-seed averages resampled on their own; needs >= 2 seeds each.
Study B's tests run on its aggregation: per (teacher, student, data size, method) the
max over temperatures, improvement = that minus the student's SFT (stats.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kd_jax.evaluation import fidelity as fid
from kd_jax.evaluation import stats
from kd_jax.report.runs import Run, summarize_fidelity, teacher_run

N_BOOT = 2000  # enough for stable 95% percentile bounds at report precision


@dataclasses.dataclass
class Condition:
    teacher: str | None
    student: str
    data_size: float | None
    method: str
    temperature: float | None
    runs: list[Run]

    @property
    def is_sft(self) -> bool:
        return self.runs[0].is_sft

    @property
    def student_size(self) -> float | None:
        return self.runs[0].student_size

    def name(self) -> str:
        parts = [self.method, self.student]
        if self.teacher:
            parts.insert(1, f"{self.teacher}->")
        if self.data_size is not None:
            parts.append(f"n={self.data_size:g}")
        if self.temperature is not None:
            parts.append(f"T={self.temperature:g}")
        return " ".join(parts).replace("-> ", "->")

    def task_mean(self, task: str) -> float:
        return float(np.mean([r.scores[task] for r in self.runs]))

    def seed_averages(self, tasks) -> np.ndarray:
        return np.asarray([np.mean([r.scores[t] for t in tasks]) for r in self.runs])

    def average(self, tasks) -> float:
        return float(self.seed_averages(tasks).mean())

    def example_scores(self, tasks) -> dict[str, np.ndarray] | None:
        """Per task, each example's correctness averaged over seeds; None if any is missing."""
        out = {}
        for t in tasks:
            vecs = [r.correct.get(t) for r in self.runs]
            if any(v is None for v in vecs) or len({len(v) for v in vecs}) != 1:
                return None
            out[t] = np.mean(vecs, axis=0)
        return out

    def fidelity(self, key: str) -> float | None:
        values = [r.fidelity[key] for r in self.runs if key in r.fidelity]
        return float(np.mean(values)) if values else None


def common_tasks(runs: list[Run]) -> tuple[list[str], list[str]]:
    """(tasks every run scored, in first-run order; tasks some run lacks)."""
    shared = [t for t in runs[0].scores if all(t in r.scores for r in runs)]
    every = sorted({t for r in runs for t in r.scores} - set(shared))
    return shared, every


def attach_fidelity(runs: list[Run]) -> None:
    """KD runs without agreement/BLEU get them from their teacher's predictions, if present."""
    for run in runs:
        if run.is_sft or "agreement" in run.fidelity:
            continue
        teacher = teacher_run(run, runs)
        if teacher is None:
            continue
        per_task = fid.fidelity_from_predictions(run.eval_dir, teacher.eval_dir)
        if per_task:
            run.fidelity.update(summarize_fidelity({"tasks": per_task}))


def group(runs: list[Run]) -> list[Condition]:
    by_key: dict[tuple, list[Run]] = {}
    for r in runs:
        by_key.setdefault(r.condition(), []).append(r)
    conds = [Condition(k[0], k[1], k[2], k[3], k[4], v) for k, v in by_key.items()]

    def order(c: Condition):
        return (
            c.student_size or 0,
            c.student,
            c.data_size or 0,
            not c.is_sft,
            c.method,
            c.teacher or "",
            c.temperature or 0,
        )

    return sorted(conds, key=order)


def sft_for(cond: Condition, conds: list[Condition]) -> Condition | None:
    for c in conds:
        if c.is_sft and c.student == cond.student and c.data_size == cond.data_size:
            return c
    return None


def accuracy_ci(cond: Condition, tasks, seed: int = 0) -> tuple[float, float] | None:
    ex = cond.example_scores(tasks)
    if ex is None:
        return None
    zeros = {t: np.zeros_like(v) for t, v in ex.items()}
    return stats.paired_gain_ci(ex, zeros, n_boot=N_BOOT, seed=seed)


def gains(conds: list[Condition], tasks) -> list[dict]:
    out = []
    for c in conds:
        if c.is_sft:
            continue
        sft = sft_for(c, conds)
        if sft is None:
            continue
        row = {
            "cond": c,
            "sft": sft,
            "gain": c.average(tasks) - sft.average(tasks),
            "ci_examples": None,
            "ci_seeds": None,
        }
        a, b = c.example_scores(tasks), sft.example_scores(tasks)
        if a is not None and b is not None and all(len(a[t]) == len(b[t]) for t in tasks):
            row["ci_examples"] = stats.paired_gain_ci(a, b, n_boot=N_BOOT)
        if len(c.runs) >= 2 and len(sft.runs) >= 2:
            row["ci_seeds"] = stats.seed_gain_ci(
                c.seed_averages(tasks), sft.seed_averages(tasks), n_boot=N_BOOT
            )
        out.append(row)
    return out


def study_b(conds: list[Condition], tasks) -> dict:
    """Study B's improvement rows and hypothesis tests over the KD conditions."""
    kd = [c for c in conds if not c.is_sft and sft_for(c, conds) is not None]
    rows = [
        {
            "teacher": c.teacher,
            "student": (c.student, c.data_size),
            "method": c.method,
            **{t: c.task_mean(t) for t in tasks},
        }
        for c in kd
    ]
    best = stats.best_over_temperatures(rows, tasks)
    sft_by = {
        (c.student, c.data_size): {t: c.task_mean(t) for t in tasks} for c in conds if c.is_sft
    }
    imp = stats.improvements(best, sft_by, tasks)
    result: dict = {"improvements": imp, "ttests": {}, "anova": None, "spearman": {}}
    if len(imp) < 2:
        return result
    cols = ["average", *tasks]
    result["ttests"]["all methods"] = {k: stats.ttest_greater([r[k] for r in imp]) for k in cols}
    by_method: dict[str, list[dict]] = {}
    for r in imp:
        by_method.setdefault(r["method"], []).append(r)
    for m, members in by_method.items():
        if len(members) >= 2:
            result["ttests"][m] = {k: stats.ttest_greater([r[k] for r in members]) for k in cols}
    groups = {m: [r["average"] for r in v] for m, v in by_method.items() if len(v) >= 2}
    if len(groups) >= 2:
        result["anova"] = stats.anova(groups)
    # Correlates of the gain, each taken from the temperature that gave the best average.
    factors: dict[str, list] = {
        k: []
        for k in (
            "student size",
            "teacher score",
            "student SFT score",
            "agreement",
            "BLEU fidelity",
        )
    }
    for r in imp:
        members = [
            c
            for c in kd
            if (c.teacher, (c.student, c.data_size), c.method)
            == (r["teacher"], r["student"], r["method"])
        ]
        top = max(members, key=lambda c: c.average(tasks))
        teacher_sft = [c for c in conds if c.is_sft and c.student == top.teacher]
        factors["student size"].append(top.student_size)
        factors["teacher score"].append(teacher_sft[0].average(tasks) if teacher_sft else None)
        factors["student SFT score"].append(sft_for(top, conds).average(tasks))
        factors["agreement"].append(top.fidelity("agreement"))
        factors["BLEU fidelity"].append(top.fidelity("bleu"))
    y = [r["average"] for r in imp]
    for name, x in factors.items():
        pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None]
        if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
            result["spearman"][name] = stats.spearman(*zip(*pairs, strict=True))
    return result
