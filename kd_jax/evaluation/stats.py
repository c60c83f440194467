"""Statistics of a KD study: Study B's hypothesis tests, its aggregation, bootstrap CIs.

Tests wrap scipy exactly as Study B's analysis notebooks call it:
  `ttest_greater`  scipy.stats.ttest_1samp(improvement, 0, alternative="greater")
  `anova`          scipy.stats.f_oneway(*improvements by method)
  `spearman`       scipy.stats.spearmanr(improvement, x)
Aggregation (`best_over_temperatures`, `improvements`): for each (teacher, student,
method) the maximum over temperatures, column by column; the "average" column is the
per-run average over tasks, maximised over temperatures like any other column (the
notebooks' groupby-max over a table that already holds the average, so it can differ
from the average of the per-task maxima). Improvement = KD minus that student's SFT.

Confidence intervals are percentile bootstraps with a seeded generator: over examples
(paired, stratified by task, for a gain of one run over another on the same test set)
and over seeds (independent resampling of each side's per-seed scores).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as sps


def t_ci(values) -> tuple[float, float, float]:
    """(mean, low, high) of a 95% t-interval; a single value has no interval."""
    x = np.asarray(values, np.float64)
    m = float(x.mean()) if x.size else float("nan")
    if x.size < 2:
        return m, float("nan"), float("nan")
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return m, m - half, m + half


def ttest_greater(improvements: Sequence[float]) -> dict:
    """One-sided one-sample t-test of mean improvement > 0."""
    x = np.asarray(improvements, np.float64)
    r = sps.ttest_1samp(x, 0.0, alternative="greater")
    return {
        "statistic": float(r.statistic),
        "pvalue": float(r.pvalue),
        "df": len(x) - 1,
        "mean": float(x.mean()),
        "n": len(x),
    }


def anova(groups: Mapping[str, Sequence[float]]) -> dict:
    """One-way ANOVA of improvements across methods."""
    r = sps.f_oneway(*[np.asarray(v, np.float64) for v in groups.values()])
    return {"statistic": float(r.statistic), "pvalue": float(r.pvalue), "groups": list(groups)}


def spearman(x: Sequence[float], y: Sequence[float]) -> dict:
    r = sps.spearmanr(np.asarray(x, np.float64), np.asarray(y, np.float64))
    return {"rho": float(r.statistic), "pvalue": float(r.pvalue), "n": len(x)}


def _percentile(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float],
    *,
    stat: Callable[[np.ndarray], np.ndarray] | None = None,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat` (default: the mean) of i.i.d. values."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("bootstrap of zero values")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    samples = x[idx].mean(axis=1) if stat is None else stat(x[idx])
    return _percentile(samples, level)


def paired_gain_ci(
    a_by_task: Mapping[str, Sequence[float]],
    b_by_task: Mapping[str, Sequence[float]],
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """CI over examples of mean_task(mean(a) - mean(b)), resampling each task's items jointly.

    a and b are per-example scores of two runs on the same items (same order); the
    macro average over tasks matches how the tables average accuracies.
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for task, a in a_by_task.items():
        a, b = np.asarray(a, np.float64), np.asarray(b_by_task[task], np.float64)
        if a.shape != b.shape or a.size == 0:
            raise ValueError(f"task {task}: paired scores need the same (non-zero) length")
        idx = rng.integers(0, a.size, size=(n_boot, a.size))
        total += (a - b)[idx].mean(axis=1)
    return _percentile(total / len(a_by_task), level)


def seed_gain_ci(
    a_seeds: Sequence[float],
    b_seeds: Sequence[float],
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """CI over seeds of mean(a) - mean(b), each side resampled on its own."""
    a, b = np.asarray(a_seeds, np.float64), np.asarray(b_seeds, np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("seed bootstrap needs at least one seed on each side")
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    mb = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1)
    return _percentile(ma - mb, level)


# ---- Study B's aggregation -----------------------------------------------------------------


def best_over_temperatures(rows: Sequence[dict], tasks: Sequence[str]) -> list[dict]:
    """Rows {teacher, student, method, temperature, <task>: score...} -> one row per
    (teacher, student, method) with each task's maximum over temperatures and
    "average" = max over temperatures of that run's mean over `tasks`."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["teacher"], r["student"], r["method"]), []).append(r)
    out = []
    for (teacher, student, method), members in groups.items():
        row = {"teacher": teacher, "student": student, "method": method}
        for t in tasks:
            row[t] = max(m[t] for m in members)
        row["average"] = max(float(np.mean([m[t] for t in tasks])) for m in members)
        out.append(row)
    return out


def improvements(
    kd_rows: Sequence[dict], sft_by_student: Mapping[str, Mapping[str, float]], tasks: Sequence[str]
) -> list[dict]:
    """KD rows (already best over temperatures) minus the student's SFT scores, per column.

    The SFT "average" is the mean over `tasks` of its scores, as for a single run.
    """
    out = []
    for r in kd_rows:
        sft = sft_by_student[r["student"]]
        sft_avg = float(np.mean([sft[t] for t in tasks]))
        row = {k: r[k] for k in ("teacher", "student", "method")}
        for t in tasks:
            row[t] = r[t] - sft[t]
        row["average"] = r["average"] - sft_avg
        out.append(row)
    return out
