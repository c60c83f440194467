"""The miniature report's figure of the low-resource recipes against synthetic size, its
cost table, and the Markdown table helper the findings share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kd_jax.evaluation import stats

PCT = 100.0


def md_table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def _mean_ci(res, cond: str, metric: str, unit: float):
    if not res.seeds(cond):
        return None
    m, lo, hi = stats.t_ci(res.values(cond, metric))
    lo, hi = max(lo, 0.0), min(hi, PCT / unit)  # the interval, cut to the scale
    err = (unit * (m - lo), unit * (hi - m)) if np.isfinite(lo) else (0.0, 0.0)
    return unit * m, err


def recipe_figure(res, scale, path: Path) -> None:
    """Accuracy and chrF of the low-resource recipes against the synthetic size: mean over
    seeds with 95% t-intervals; SFT on human data as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kd_jax.miniature.conditions import cipher_name

    def cond(recipe, s):
        return cipher_name(recipe, s, 0).rsplit("_s", 1)[0]

    sizes = sorted(scale.synthetic)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, unit in ((axes[0], "accuracy", PCT), (axes[1], "chrf", 1.0)):
        for recipe, label, xs in (
            ("two-stage", "two stages (0 = one stage: GKD on human)", sizes),
            ("stage1", "stage 1 only (SFT on synthetic)", [s for s in sizes if s]),
            ("mixed", "mixed (GKD on human + synthetic)", [max(sizes)]),
        ):
            pts = [(x, _mean_ci(res, cond(recipe, x), metric, unit)) for x in xs]
            pts = [(x, v) for x, v in pts if v is not None]
            if pts:
                ax.errorbar(
                    [x for x, _ in pts],
                    [v[0] for _, v in pts],
                    yerr=np.asarray([v[1] for _, v in pts]).T,
                    marker="o",
                    capsize=4,
                    label=label,
                )
        sft = _mean_ci(res, cond("sft", 0), metric, unit)
        if sft is not None:
            ax.axhline(sft[0], color="gray", linestyle="--", label="SFT on human data")
            ax.axhspan(sft[0] - sft[1][0], sft[0] + sft[1][1], color="gray", alpha=0.15)
        ax.set_xlabel("synthetic pairs")
        ax.set_ylabel("exact-match accuracy (%)" if metric == "accuracy" else "chrF (0-100)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"Zorbic translation (low-resource domain), {scale.human} human pairs: recipes\n"
        "points: mean over seeds; error bars and band: 95% t-interval over seeds",
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
