"""The report's figures (matplotlib, Agg backend, PNG): gains, fidelity, the temperature ablation.

Each figure is split into panels (one per student, data size, or both) so that a panel
holds a handful of lines; a line's colour names its KD method and temperature and is
the same in every panel; one legend sits outside the panels. Axes are in the units of
the tables (accuracy and gains in points, i.e. percent), 95% bootstrap CIs are error
bars or shaded bands, and the title says which CI. A figure with nothing to show is
not written.
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kd_jax.evaluation import stats  # noqa: E402
from kd_jax.report.analysis import N_BOOT, Condition, accuracy_ci  # noqa: E402

PCT = 100.0
_CI_NOTE = "error bars: 95% bootstrap CI over seeds (over test examples where a side has 1 seed)"


def _num(x) -> str:
    return "—" if x is None else f"{x:g}"


def _size(x) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:g}"


def _kd_label(c: Condition) -> str:
    t = "" if c.temperature is None else f" T={c.temperature:g}"
    return f"{c.method}{t} (teacher {c.teacher})"


def _colors(labels) -> dict:
    labels = sorted(set(labels))
    cmap = plt.cm.tab10 if len(labels) <= 10 else plt.cm.tab20
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _panels(n: int, width: float = 4.6, height: float = 3.6):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols + 3.2, height * rows + 0.8), squeeze=False, sharey=True
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, axes, title: str, note: str, path: str) -> str:
    handles, labels = {}, []
    for ax in axes:
        ax.grid(True, alpha=0.3)
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.suptitle(f"{title}\n{note}", fontsize=10)
    fig.legend(
        [handles[lab] for lab in labels],
        labels,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        frameon=True,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _gain_ci(row):
    return row["ci_seeds"] or row["ci_examples"]


def _errorbar(ax, xs, ys, cis, **kw):
    lo = [max(y - PCT * ci[0], 0.0) if ci else 0.0 for y, ci in zip(ys, cis, strict=True)]
    hi = [max(PCT * ci[1] - y, 0.0) if ci else 0.0 for y, ci in zip(ys, cis, strict=True)]
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, **kw)


def _gain_panels(rows, facet_of, facet_title, x_of, xlabel, title, path, ticks=None):
    rows = [r for r in rows if x_of(r) is not None]
    if not rows:
        return None
    facets: dict = {}
    for r in rows:
        facets.setdefault(facet_of(r), []).append(r)
    colors = _colors(_kd_label(r["cond"]) for r in rows)
    fig, axes = _panels(len(facets))
    xs_all = [x_of(r) for r in rows]
    for ax, (facet, members) in zip(
        axes, sorted(facets.items(), key=lambda kv: kv[0]), strict=True
    ):
        series: dict = {}
        for r in members:
            series.setdefault(_kd_label(r["cond"]), []).append(r)
        for label, pts in sorted(series.items()):
            pts.sort(key=x_of)
            _errorbar(
                ax,
                [x_of(r) for r in pts],
                [PCT * r["gain"] for r in pts],
                [_gain_ci(r) for r in pts],
                color=colors[label],
                label=label,
            )
        ax.axhline(0.0, color="black", lw=0.8, ls="--", label="SFT (gain 0)")
        ax.set_title(facet_title(facet), fontsize=9)
        ax.set_xlabel(xlabel)
        if max(xs_all) / max(min(xs_all), 1e-12) >= 10:
            ax.set_xscale("log")
        if ticks:
            ax.set_xticks(*ticks(rows))
            ax.minorticks_off()
    axes[0].set_ylabel("gain over SFT (accuracy points)")
    return _save(fig, axes, title, _CI_NOTE, path)


def gain_vs_data_size(gain_rows: list[dict], out_dir: str) -> str | None:
    return _gain_panels(
        gain_rows,
        lambda r: (r["cond"].student_size or 0, r["cond"].student),
        lambda f: f"student {f[1]}" + (f" ({_size(f[0])} params)" if f[0] else ""),
        lambda r: r["cond"].data_size,
        "training examples (data size)",
        "KD gain over SFT vs data size",
        os.path.join(out_dir, "gain_vs_data_size.png"),
        ticks=lambda rows: (
            [x for x in sorted({r["cond"].data_size for r in rows})],
            [f"{x:g}" for x in sorted({r["cond"].data_size for r in rows})],
        ),
    )


def gain_vs_student_size(gain_rows: list[dict], out_dir: str) -> str | None:
    def ticks(rows):
        sizes = sorted({(r["cond"].student_size, r["cond"].student) for r in rows})
        return [s for s, _ in sizes], [f"{n}\n{_size(s)}" for s, n in sizes]

    return _gain_panels(
        gain_rows,
        lambda r: r["cond"].data_size or 0,
        lambda f: "data size not recorded" if not f else f"data size {_num(f)}",
        lambda r: r["cond"].student_size,
        "student (parameters)",
        "KD gain over SFT vs student size",
        os.path.join(out_dir, "gain_vs_student_size.png"),
        ticks=ticks,
    )


def accuracy_vs_fidelity(conds: list[Condition], tasks, out_dir: str) -> str | None:
    points = [(c, r) for c in conds if not c.is_sft for r in c.runs if r.fidelity]
    panels = [
        (k, n)
        for k, n in (
            ("agreement", "final-answer agreement with teacher (%)"),
            ("bleu", "rationale BLEU vs teacher (0-100)"),
        )
        if any(k in r.fidelity for _, r in points)
    ]
    if not panels:
        return None
    fig, axes = _panels(len(panels))
    colors = _colors(_kd_label(c) for c, _ in points)
    for ax, (key, xlabel) in zip(axes, panels, strict=True):
        for label in sorted(colors):
            sel = [(c, r) for c, r in points if _kd_label(c) == label and key in r.fidelity]
            xs = [r.fidelity[key] * (PCT if key == "agreement" else 1) for _, r in sel]
            ys = [PCT * np.mean([r.scores[t] for t in tasks]) for _, r in sel]
            ax.scatter(xs, ys, color=colors[label], label=label, s=30, alpha=0.85)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("student accuracy, task average (%)")
    path = os.path.join(out_dir, "accuracy_vs_fidelity.png")
    return _save(fig, axes, "Accuracy vs fidelity", "one point per KD run (seed)", path)


def _accuracy_with_ci(c: Condition, tasks):
    if len(c.runs) >= 2:
        return c.average(tasks), stats.bootstrap_ci(c.seed_averages(tasks), n_boot=N_BOOT)
    return c.average(tasks), accuracy_ci(c, tasks)


def temperature_ablation(conds: list[Condition], tasks, out_dir: str) -> str | None:
    kd = [c for c in conds if not c.is_sft and c.temperature is not None]
    if not kd:
        return None
    facets: dict = {}
    for c in kd:
        facets.setdefault((c.student_size or 0, c.student, c.data_size or 0), []).append(c)
    colors = _colors((c.method, c.teacher) for c in kd)
    fig, axes = _panels(len(facets))
    temps = sorted({c.temperature for c in kd})
    for ax, ((size, student, data), members) in zip(axes, sorted(facets.items()), strict=True):
        lines: dict = {}
        for c in members:
            lines.setdefault((c.method, c.teacher), []).append(c)
        for key, pts in sorted(lines.items()):
            pts.sort(key=lambda c: c.temperature)
            acc = [_accuracy_with_ci(c, tasks) for c in pts]
            _errorbar(
                ax,
                [c.temperature for c in pts],
                [PCT * m for m, _ in acc],
                [ci for _, ci in acc],
                color=colors[key],
                label=f"{key[0]} (teacher {key[1]})",
            )
        sft = [c for c in conds if c.is_sft and c.student == student and (c.data_size or 0) == data]
        if sft:
            mean, ci = _accuracy_with_ci(sft[0], tasks)
            ax.axhline(PCT * mean, ls="--", lw=1.2, color="black", label="SFT (same student, data)")
            if ci is not None:
                ax.axhspan(PCT * ci[0], PCT * ci[1], color="gray", alpha=0.2, label="SFT 95% CI")
        title = f"{student}" + (f" ({_size(size)})" if size else "")
        ax.set_title(title + (f", data size {data:g}" if data else ""), fontsize=9)
        ax.set_xticks(temps)
        ax.set_xlabel("KD temperature T")
    axes[0].set_ylabel("student accuracy, task average (%)")
    note = "error bars and SFT band: 95% bootstrap CI (over seeds, or examples with 1 seed)"
    return _save(
        fig, axes, "Temperature ablation", note, os.path.join(out_dir, "temperature_ablation.png")
    )
