"""`write_report(run_dirs, out_dir)`: Markdown tables and PNG plots across the runs of a sweep.

Reads each run folder (layout and run.json fields in runs.py), pools seeds per
condition, and writes to out_dir:
  report.md                 runs; accuracy per task and method; gain over SFT with 95%
                            CIs; fidelity; Study B's t-tests, ANOVA and Spearman
                            correlations; the figures
  summary.json              the same numbers for scripts
  gain_vs_data_size.png, gain_vs_student_size.png, accuracy_vs_fidelity.png,
  temperature_ablation.png  each written when the runs vary what it plots
"""

from __future__ import annotations

import json
import os

from kd_jax.report import analysis, plots
from kd_jax.report.runs import RUN_JSON, ReportError, Run, load_run, load_runs, write_run_meta

__all__ = [
    "RUN_JSON",
    "ReportError",
    "Run",
    "load_run",
    "load_runs",
    "write_report",
    "write_run_meta",
]


def _pct(x, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def _ci(ci, signed: bool = True) -> str:
    if ci is None:
        return "—"
    sign = "+" if signed else ""
    return f"[{100 * ci[0]:{sign}.1f}, {100 * ci[1]:{sign}.1f}]"


def _num(x, fmt: str = "{:g}") -> str:
    return "—" if x is None else fmt.format(x)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _test(r: dict) -> str:
    return f"t={r['statistic']:.2f}, p={r['pvalue']:.3g}"


def _study_b_section(sb: dict, tasks) -> list[str]:
    lines = ["## Study B statistics", ""]
    imp = sb["improvements"]
    if not imp:
        return lines + ["No KD condition has an SFT run of the same student and data size.", ""]
    lines += [
        "Per (teacher, student, data size, method): the best temperature per column, "
        "minus the student's SFT (accuracy points).",
        "",
    ]
    header = ["teacher", "student", "data size", "method", "average", *tasks]
    rows = [
        [
            str(r["teacher"]),
            r["student"][0],
            _num(r["student"][1]),
            r["method"],
            f"{100 * r['average']:+.1f}",
            *[f"{100 * r[t]:+.1f}" for t in tasks],
        ]
        for r in imp
    ]
    lines += _table(header, rows) + [""]
    if sb["ttests"]:
        lines += [
            "One-sided one-sample t-test that the improvement > 0 "
            "(scipy `ttest_1samp(..., alternative='greater')`):",
            "",
        ]
        rows = [
            [m, str(res["average"]["n"]), *[_test(res[k]) for k in ("average", *tasks)]]
            for m, res in sb["ttests"].items()
        ]
        lines += _table(["rows", "n", "average", *tasks], rows) + [""]
    else:
        lines += ["t-tests need at least 2 improvement rows.", ""]
    if sb["anova"]:
        a = sb["anova"]
        lines += [
            f"One-way ANOVA of the average improvement across methods "
            f"({', '.join(a['groups'])}): F={a['statistic']:.2f}, p={a['pvalue']:.3g}.",
            "",
        ]
    if sb["spearman"]:
        rows = [
            [k, f"{v['rho']:+.2f}", f"{v['pvalue']:.3g}", str(v["n"])]
            for k, v in sb["spearman"].items()
        ]
        lines += ["Spearman correlation of the average improvement with:", ""]
        lines += _table(["factor", "rho", "p", "n"], rows) + [""]
    return lines


def write_report(run_dirs: list[str], out_dir: str) -> str:
    """Writes report.md, summary.json and the PNGs to out_dir; returns report.md's path."""
    runs = load_runs(run_dirs)
    tasks, dropped = analysis.common_tasks(runs)
    if not tasks:
        raise ReportError("the runs share no scored task; evaluate them on the same tasks")
    analysis.attach_fidelity(runs)
    conds = analysis.group(runs)
    gains = analysis.gains(conds, tasks)
    sb = analysis.study_b(conds, tasks)
    os.makedirs(out_dir, exist_ok=True)

    lines = [
        "# KD evaluation report",
        "",
        f"{len(runs)} runs, {len(conds)} conditions; tasks: {', '.join(tasks)}.",
        "Accuracies are percentages, macro-averaged over these tasks; CIs are 95% "
        "percentile bootstraps.",
        "",
    ]
    if dropped:
        lines += [f"Left out (not scored by every run): {', '.join(dropped)}.", ""]
    lines += ["## Runs", ""]
    lines += _table(
        ["run", "method", "teacher", "student", "params", "data size", "T", "seed"],
        [
            [
                r.label,
                r.method,
                r.teacher or "—",
                r.student,
                _num(r.student_size),
                _num(r.data_size),
                _num(r.temperature),
                _num(r.seed),
            ]
            for r in runs
        ],
    ) + [""]
    lines += ["## Accuracy per task and method", "", "Mean over seeds (%).", ""]
    lines += _table(
        ["condition", "seeds", *tasks, "average", "95% CI (examples)"],
        [
            [
                c.name(),
                str(len(c.runs)),
                *[_pct(c.task_mean(t)) for t in tasks],
                _pct(c.average(tasks)),
                _ci(analysis.accuracy_ci(c, tasks), signed=False),
            ]
            for c in conds
        ],
    ) + [""]
    lines += [
        "## Gain over SFT",
        "",
        "KD minus SFT of the same student and data size, task average (accuracy points).",
        "",
    ]
    if gains:
        lines += _table(
            ["condition", "KD", "SFT", "gain", "95% CI (examples)", "95% CI (seeds)"],
            [
                [
                    g["cond"].name(),
                    _pct(g["cond"].average(tasks)),
                    _pct(g["sft"].average(tasks)),
                    f"{100 * g['gain']:+.1f}",
                    _ci(g["ci_examples"]),
                    _ci(g["ci_seeds"]),
                ]
                for g in gains
            ],
        ) + [""]
    else:
        lines += ["No KD condition has an SFT run of the same student and data size.", ""]
    fid_rows = [c for c in conds if not c.is_sft and any(r.fidelity for r in c.runs)]
    if fid_rows:
        lines += [
            "## Fidelity to the teacher",
            "",
            "Agreement: same final answer (%); BLEU: student vs teacher rationales "
            "(sacrebleu 13a, 0-100); KL(teacher||student) per token at T=1 and top-1 "
            "agreement (%) on held-out text.",
            "",
        ]
        lines += _table(
            ["condition", "agreement", "BLEU", "KL", "top-1"],
            [
                [
                    c.name(),
                    _pct(c.fidelity("agreement")),
                    _num(c.fidelity("bleu"), "{:.1f}"),
                    _num(c.fidelity("kl"), "{:.3f}"),
                    _pct(c.fidelity("top1")),
                ]
                for c in fid_rows
            ],
        ) + [""]
    lines += _study_b_section(sb, tasks)

    figures = [
        ("Gain vs data size", plots.gain_vs_data_size(gains, out_dir)),
        ("Gain vs student size", plots.gain_vs_student_size(gains, out_dir)),
        ("Accuracy vs fidelity", plots.accuracy_vs_fidelity(conds, tasks, out_dir)),
        ("Temperature ablation", plots.temperature_ablation(conds, tasks, out_dir)),
    ]
    lines += ["## Figures", ""]
    for title, path in figures:
        if path:
            lines += [f"### {title}", "", f"![{title}]({os.path.basename(path)})", ""]
        else:
            lines += [f"### {title}", "", "Not drawn: no runs vary what this figure plots.", ""]

    summary = {
        "tasks": tasks,
        "conditions": [
            {
                "name": c.name(),
                "seeds": len(c.runs),
                "average": c.average(tasks),
                "tasks": {t: c.task_mean(t) for t in tasks},
                "runs": [r.path for r in c.runs],
            }
            for c in conds
        ],
        "gains": [
            {
                "condition": g["cond"].name(),
                "gain": g["gain"],
                "ci_examples": g["ci_examples"],
                "ci_seeds": g["ci_seeds"],
            }
            for g in gains
        ],
        "study_b": {k: v for k, v in sb.items() if k != "improvements"},
        "figures": [os.path.basename(p) for _, p in figures if p],
    }
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
