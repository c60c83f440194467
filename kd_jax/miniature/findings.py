"""Findings (a)-(d) of the miniature suite as Markdown and PNG figures: each prediction
(conditions.PREDICTIONS), its numbers with 95% CIs and its verdict (kd_jax.miniature.results).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kd_jax.miniature import figures as fig
from kd_jax.miniature.conditions import (
    CACHE_K,
    CIPHER_STUDENT,
    MAIN_STUDENT,
    PREDICTIONS,
    STRONGER_BY,
    STUDENTS,
    TASK,
    TEACHER_BASE,
    Scale,
    build_plan,
    cipher_name,
    condition_name,
)
from kd_jax.miniature.results import (
    PCT,
    Results,
    diff_of_gains,
    fid_cells,
    fmt_acc,
    fmt_gain,
    paired,
    pct,
    read_json,
    verdict_line,
)
from kd_jax.miniature.suite import strong_gate

# ---- the findings ------------------------------------------------------------------------

M = MAIN_STUDENT


def _kd(model, n, teacher="teacher", t=1.0) -> str:
    return condition_name(model, n, "kd", teacher, t)


def _sft(model, n) -> str:
    return condition_name(model, n, "sft")


def finding_a(res: Results, scale: Scale) -> tuple[list[str], dict]:
    rows, gains = [], {}
    for n in scale.sizes:
        g = paired(res, _kd(M, n), _sft(M, n))
        gains[n] = g
        best = [
            "/".join(map(str, p))
            for p in zip(res.best_steps(_sft(M, n)), res.best_steps(_kd(M, n)), strict=False)
        ]
        rows.append(
            [
                n,
                scale.steps(n),
                ", ".join(map(str, best)) or "—",
                fmt_acc(res, _sft(M, n)),
                fmt_acc(res, _kd(M, n)),
                fmt_gain(g),
            ]
        )
    small, large = min(scale.sizes), max(scale.sizes)
    shrink = diff_of_gains(res, (_kd(M, small), _sft(M, small)), (_kd(M, large), _sft(M, large)))
    lines = [
        "## (a) KD vs SFT as data grows",
        "",
        f"Prediction: {PREDICTIONS['a']}",
        "",
        f"{M}; KD = forward KL from the teacher at T = 1 (cached top-{CACHE_K}, no CE term). "
        "Both keep their lowest-validation-CE checkpoint (the step it came from, per seed, "
        "is shown: a best step below the last means the run had converged). Accuracy (%) "
        "with the 95% seed CI; gain in points with the seed and example CIs.",
        "",
    ]
    lines += fig.md_table(
        [
            "examples",
            "steps",
            "best step SFT / KD",
            "SFT",
            "KD",
            "gain",
            "gain CI (seeds)",
            "gain CI (examples)",
        ],
        rows,
    )
    lines += [
        verdict_line(f"KD beats SFT at n = {small}", gains[small]),
        verdict_line(f"The gain shrinks from n = {small} to n = {large}", shrink),
        "",
    ]
    return lines, {"gain_small": gains[small], "shrink": shrink, "gains": gains}


def finding_b(res: Results, scale: Scale, root: Path) -> tuple[list[str], dict]:
    large = max(scale.sizes)
    teachers = []
    for t in ("teacher", "strong-teacher"):
        run = res.runs.get(t)
        acc = pct(res.scores[t][TASK]["accuracy"]) if t in res.scores else "—"
        steps, model = (run.config.train.num_steps, run.config.student.preset) if run else "——"
        teachers.append([t, model, steps, acc])
    ok, accs = (None, {}) if "strong-teacher" not in res.scores else strong_gate(root)
    strong = paired(res, _kd(M, large, "strong-teacher"), _sft(M, large))
    weak = paired(res, _kd(M, large), _sft(M, large))
    vs = paired(res, _kd(M, large, "strong-teacher"), _kd(M, large))
    lines = [
        "## (b) A stronger teacher at the largest size",
        "",
        f"Prediction: {PREDICTIONS['b']}",
        "",
        "The strong teacher is the same base trained longer, checked before use: it must "
        f"score at least {PCT * STRONGER_BY:.0f} points above the teacher on the test.",
        "",
    ]
    lines += fig.md_table(["teacher", "base", "steps", f"{TASK} test accuracy (%)"], teachers)
    if ok is None:
        lines += ["- The strong teacher was not evaluated.", ""]
        return lines, {"strong": strong, "gate": None}
    margin = PCT * (accs["strong-teacher"] - accs["teacher"])
    lines += [
        f"- Check: {margin:+.1f} points: **{'passed' if ok else 'failed'}**"
        + ("" if ok else "; (b)'s runs were not trained."),
        "",
    ]
    lines += fig.md_table(
        [f"KD at n = {large}", "accuracy", "gain over SFT", "CI (seeds)", "CI (examples)"],
        [
            ["teacher", fmt_acc(res, _kd(M, large)), fmt_gain(weak)],
            ["strong-teacher", fmt_acc(res, _kd(M, large, "strong-teacher")), fmt_gain(strong)],
        ],
    )
    lines += [
        verdict_line(f"Strong-teacher KD beats SFT at n = {large}", strong),
        verdict_line("Strong-teacher KD beats teacher KD", vs),
        "",
    ]
    return lines, {"strong": strong, "strong_vs_teacher": vs, "gate": ok}


def _teacher_acc(res: Results) -> str:
    e = res.scores.get("cipher-teacher", {}).get("cipher")
    return f"accuracy {pct(e['accuracy'])}%, chrF {e['chrf']:.1f}" if e else "not evaluated"


def _cipher(recipe: str, s: int) -> str:
    return cipher_name(recipe, s, 0).rsplit("_s", 1)[0]


def finding_c(res: Results, scale: Scale, root: Path) -> tuple[list[str], dict]:
    largest = max(scale.synthetic)

    def row(label, size, cond):
        return [label, size, fmt_acc(res, cond), fmt_acc(res, cond, "chrf")]

    rows = [row("SFT on human data", 0, _cipher("sft", 0))]
    for s in scale.synthetic:
        if s:
            c = _cipher("stage1", s)
            rows.append(row("stage 1 only (SFT on synthetic)", s, c))
        c = _cipher("two-stage", s)
        label = "one stage (GKD on human)" if s == 0 else "two stages (stage 1, then GKD on human)"
        rows.append(row(label, s, c))
    if largest:
        c = _cipher("mixed", largest)
        rows.append(row("mixed (GKD on human + synthetic)", largest, c))
    two = _cipher("two-stage", largest)
    two_one = paired(res, two, _cipher("two-stage", 0))
    one_sft = paired(res, _cipher("two-stage", 0), _cipher("sft", 0))
    two_mix = paired(res, two, _cipher("mixed", largest))
    two_sft = paired(res, two, _cipher("sft", 0))
    counts = read_json(root / "synthetic.jsonl.counts.json") or {}
    lines = [
        "## (c) Two-stage KD in the low-resource domain (Zorbic translation)",
        "",
        f"Prediction: {PREDICTIONS['c']}",
        "",
        f"{CIPHER_STUDENT}; {scale.human} noisy human pairs to train on, {scale.human_val} to "
        f"validate on. The domain's teacher (cipher-teacher: {TEACHER_BASE} on the terse "
        f"teacher-scale pairs; {_teacher_acc(res)}) labelled the synthetic sets (filter "
        f"counts: {json.dumps(counts)}) and is the on-policy teacher. Exact-match accuracy "
        "(%) and chrF (0-100) on the test, with 95% seed CIs.",
        "",
    ]
    lines += fig.md_table(["recipe", "synthetic pairs", "accuracy", "chrF"], rows)
    lines += [
        verdict_line(f"Two stages (synthetic {largest}) beat one stage", two_one),
        verdict_line("One stage beats SFT", one_sft),
        verdict_line(f"Two stages beat naive mixing (synthetic {largest})", two_mix),
        verdict_line("Two stages beat SFT", two_sft),
        "",
    ]
    return lines, {"two_one": two_one, "one_sft": one_sft, "two_mix": two_mix, "two_sft": two_sft}


def finding_d(res: Results, scale: Scale) -> tuple[list[str], dict]:
    small = min(scale.sizes)
    models = [p for p in STUDENTS if res.seeds(_sft(p, small))]
    gains = {p: paired(res, _kd(p, small), _sft(p, small)) for p in models}
    params = {
        p: read_json(res.root / f"{res.seeds(_sft(p, small))[0]}" / "run.json")["student_size"]
        for p in models
    }
    lines = [
        f"## (d) Student size, temperature, fidelity (n = {small})",
        "",
        f"Prediction: {PREDICTIONS['d']}",
        "",
        "Each student follows the teacher if KD brings its held-out KL(teacher || student) "
        "(nats per token, on the validation questions) well below SFT's.",
        "",
    ]
    lines += fig.md_table(
        [
            "student",
            "parameters",
            "SFT",
            "KD T=1",
            "gain",
            "CI (seeds)",
            "CI (examples)",
            "KL SFT",
            "KL KD",
        ],
        [
            [
                p,
                params[p],
                fmt_acc(res, _sft(p, small)),
                fmt_acc(res, _kd(p, small)),
                fmt_gain(gains[p]),
                fid_cells(res, _sft(p, small))[2],
                fid_cells(res, _kd(p, small))[2],
            ]
            for p in models
        ],
    )
    out: dict = {"gains": gains}
    if len(models) >= 2:
        smallest, largest = models[0], models[-1]
        out["size"] = diff_of_gains(
            res,
            (_kd(smallest, small), _sft(smallest, small)),
            (_kd(largest, small), _sft(largest, small)),
        )
        lines += [
            verdict_line(f"The gain is larger for {smallest} than for {largest}", out["size"]),
            "",
        ]
    t_rows, out["t5"] = [], {}
    hottest = max(scale.temperatures)
    for p in models:
        for t in scale.temperatures:
            cond = _kd(p, small, t=t)
            if res.seeds(cond):
                t_rows.append([p, f"T={t:g}", fmt_acc(res, cond), *fid_cells(res, cond)])
        if hottest > 1 and res.seeds(_kd(p, small, t=hottest)):
            out["t5"][p] = paired(res, _kd(p, small, t=hottest), _kd(p, small))
    lines += [
        "Temperature ablation and fidelity to the teacher (means over seeds): agreement = "
        "same final answer (%), BLEU of the rationales vs the teacher's (0-100), "
        "KL(teacher || student) per token and top-1 agreement (%) on held-out text.",
        "",
    ]
    lines += fig.md_table(["student", "KD", "accuracy", "agreement", "BLEU", "KL", "top-1"], t_rows)
    for p, d in out["t5"].items():
        lines.append(verdict_line(f"T = {hottest:g} hurts {p} (vs T = 1)", d, "<"))
    return lines + [""], out


# ---- figures and the document ------------------------------------------------------------


def write(root: Path, scale: Scale, timings: dict, docs: str | None = None) -> Path:
    """report/miniature.md (+ PNGs) under the workdir; with `docs`, a copy there too."""
    from kd_jax.report import write_report

    root = Path(root)
    plan = build_plan(scale)
    res = Results(root, plan)
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    main = [str(root / r.name) for r in plan if r.task == TASK and r.name in res.scores]
    if main:
        write_report(main, str(out / TASK))
    fig.recipe_figure(res, scale, out / "cipher_recipes.png")

    parts, summary = [], {}
    for name, fn, args in (
        ("a", finding_a, (scale,)),
        ("b", finding_b, (scale, root)),
        ("c", finding_c, (scale, root)),
        ("d", finding_d, (scale,)),
    ):
        part, summary[name] = fn(res, *args)
        parts += part
    verdicts = [x for x in parts if x.startswith("- ") and "**" in x]
    lines = [
        f"# Miniature KD study on CPU ({scale.name} scale)",
        "",
        "Both studies' findings tried at toy scale on 2 CPU cores with the built-in tiny "
        "pretrained bases and data. This file and its figures are written by the suite:",
        "",
        "```bash",
        "kd-jax miniature --workdir runs/mini --docs docs    # this report",
        "kd-jax miniature --workdir runs/mini_smoke --smoke  # the plumbing, 1 seed",
        "```",
        "",
        "Setup (kd_jax/miniature/conditions.py): "
        f"seeds {list(scale.seeds)}; {TASK} sizes {list(scale.sizes)} with a fixed "
        f"{scale.val_size}-question validation set carved from training; SFT runs "
        f"{scale.epochs:g} epochs within [{scale.min_steps}, {scale.max_steps}] steps of "
        f"{scale.batch_size}, validated {scale.evals} times, best checkpoint scored; teacher "
        f"{scale.teacher_steps} steps, strong teacher {scale.strong_steps}; temperatures "
        f"{list(scale.temperatures)}; Zorbic {scale.human} + {scale.human_val} human pairs, "
        f"synthetic sizes {list(scale.synthetic)}, {scale.gkd_steps} on-policy steps per "
        f"stage; {scale.eval_examples} test problems per task, greedy. CIs "
        "(kd_jax/miniature/findings.py): 95% t-intervals over seeds, paired by seed for "
        "gains, and paired bootstraps over test problems; a verdict uses the seed interval.",
        "",
        "## Verdicts",
        "",
        *verdicts,
        "",
        *parts,
    ]
    figures = [
        (f"{TASK}/gain_vs_data_size.png", "KD gain over SFT vs data size"),
        (f"{TASK}/gain_vs_student_size.png", "KD gain over SFT vs student size"),
        (f"{TASK}/temperature_ablation.png", "Temperature ablation"),
        (f"{TASK}/accuracy_vs_fidelity.png", "Accuracy vs fidelity"),
        ("cipher_recipes.png", "Low-resource recipes vs synthetic size"),
    ]
    lines += ["## Figures", ""]
    for rel, title in figures:
        if (out / rel).exists():
            lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    lines += fig.timing_lines(timings)
    path = out / "miniature.md"
    path.write_text("\n".join(lines))
    (out / "findings.json").write_text(json.dumps(summary, indent=1, default=str))
    if docs:
        _copy_to_docs(path, out, Path(docs), [rel for rel, _ in figures if (out / rel).exists()])
    return path


def _copy_to_docs(path: Path, out: Path, docs: Path, figures: list[str]) -> None:
    """docs/miniature.md with the figures as docs/miniature_<name>.png."""
    docs.mkdir(parents=True, exist_ok=True)
    text = path.read_text()
    for rel in figures:
        flat = "miniature_" + rel.replace("/", "_")
        shutil.copy(out / rel, docs / flat)
        text = text.replace(f"]({rel})", f"]({flat})")
    (docs / "miniature.md").write_text(text)
    os.utime(docs / "miniature.md")
