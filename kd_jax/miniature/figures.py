"""The miniature report's figure of the low-resource recipes, its cost table, and the
Markdown table helper the findings share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kd_jax.evaluation import stats

PCT = 100.0


def md_table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


SHORT = [
    "SFT\nhuman",
    "stage 1 only\nSFT synthetic",
    "one stage\nGKD human",
    "two stages\nSFT synthetic,\nthen GKD human",
    "mixed\nGKD human\n+ synthetic",
]


def recipe_figure(res, recipes, path: Path) -> None:
    """Bar chart of each low-resource recipe's accuracy and chrF, mean and 95% t-interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, unit in ((axes[0], "accuracy", PCT), (axes[1], "chrf", 1.0)):
        means, errs = [], [[], []]
        for cond, _ in recipes:
            m, lo, hi = stats.t_ci(res.values(cond, metric)) if res.seeds(cond) else (0, 0, 0)
            lo, hi = max(lo, 0.0), min(hi, PCT / unit)  # the interval, cut to the scale
            means.append(unit * m)
            errs[0].append(unit * (m - lo) if np.isfinite(lo) else 0)
            errs[1].append(unit * (hi - m) if np.isfinite(hi) else 0)
        ax.bar(
            range(len(means)), means, yerr=errs, capsize=5, color=plt.cm.tab10(range(len(means)))
        )
        ax.set_xticks(range(len(means)), SHORT, fontsize=7)
        ax.set_ylabel("exact-match accuracy (%)" if metric == "accuracy" else "chrF (0-100)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(
        "Zorbic translation (low-resource domain), tiny-student: recipes\n"
        "bars: mean over seeds; error bars: 95% t-interval over seeds",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def timing_lines(timings: dict) -> list[str]:
    total = sum(v["seconds"] for v in timings.values())
    groups: dict[str, list] = {}
    for name, v in timings.items():
        groups.setdefault(name.split(" ")[0], []).append(v)
    rows = [
        [
            g,
            len(vs),
            f"{sum(v['seconds'] for v in vs):.0f}",
            f"{np.mean([v['load'] for v in vs]):.1f}",
        ]
        for g, vs in groups.items()
    ]
    return [
        "## Cost",
        "",
        f"Summed step time {total / 60:.1f} min on 2 shared CPU cores; "
        "`load` is the mean 1-minute load average during the steps (2.0 = both cores "
        "busy; above that, other jobs shared them).",
        "",
    ] + md_table(["step", "count", "seconds", "load"], rows)
