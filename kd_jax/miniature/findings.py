"""Findings (a)-(d) of the miniature suite, with 95% CIs, as Markdown and PNG figures.

CIs. "seeds": a t-interval over the per-seed values (for a gain, over per-seed
differences: runs with the same seed share initialisation and batch order, so they are
paired). With 3 seeds t(0.975, 2) = 4.30, so these are wide and honest about training
noise. "examples": a paired percentile bootstrap over test problems of the seed-averaged
correctness (kd_jax.evaluation.stats), i.e. test-set noise only. A finding's verdict uses
the seed interval: "reproduced" when it excludes 0 in the claimed direction, "same
direction, not significant" when only the mean agrees, "not reproduced" otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from kd_jax.evaluation import stats
from kd_jax.miniature import figures as fig
from kd_jax.miniature.conditions import TASK, PlannedRun, Scale, build_plan

PCT = 100.0


# ---- reading runs ------------------------------------------------------------------------


def _read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


class Results:
    """Per-run scores, per-example correctness and fidelity, grouped by condition."""

    def __init__(self, root: Path, plan: list[PlannedRun]):
        self.root, self.plan = root, plan
        self.runs = {r.name: r for r in plan}
        self.scores, self.correct, self.fid = {}, {}, {}
        for r in plan:
            doc = _read(root / r.name / "eval" / "scores.json")
            if doc is None:
                continue
            self.scores[r.name] = {t: e for t, e in doc["tasks"].items()}
            pred = root / r.name / "eval" / "predictions" / f"{r.task}.jsonl"
            rows = [json.loads(x) for x in pred.read_text().splitlines() if x.strip()]
            self.correct[r.name] = np.asarray([float(x["correct"]) for x in rows])
            fid = _read(root / r.name / "eval" / "fidelity.json")
            if fid:
                per = [v for v in fid["tasks"].values()]
                self.fid[r.name] = {
                    "agreement": np.mean([v["agreement"] for v in per]) if per else None,
                    "bleu": np.mean([v["bleu"] for v in per]) if per else None,
                    **fid.get("held_out", {}),
                }

    def seeds(self, cond: str) -> list[str]:
        """The evaluated runs of a condition (its name without `_s<seed>`), by seed."""
        names = [n for n in self.scores if re.sub(r"_s\d+$", "", n) == cond]
        return sorted(names, key=lambda n: int(n.rsplit("_s", 1)[1]))

    def values(self, cond: str, metric: str = "accuracy") -> np.ndarray:
        return np.asarray([self.scores[n][self.runs[n].task][metric] for n in self.seeds(cond)])

    def examples(self, cond: str) -> np.ndarray | None:
        vecs = [self.correct[n] for n in self.seeds(cond)]
        return np.mean(vecs, axis=0) if vecs else None


def paired(res: Results, a: str, b: str, metric: str = "accuracy") -> dict:
    """a minus b: per-seed differences (t-interval) and the example bootstrap."""
    va, vb = res.values(a, metric), res.values(b, metric)
    k = min(len(va), len(vb))
    mean, lo, hi = stats.t_ci(va[:k] - vb[:k])
    ea, eb = res.examples(a), res.examples(b)
    ex = None
    if metric == "accuracy" and ea is not None and eb is not None and ea.shape == eb.shape:
        ex = stats.paired_gain_ci({"t": ea}, {"t": eb}, n_boot=4000)
    return {"mean": mean, "seeds": (lo, hi), "examples": ex, "n": k}


def verdict(d: dict, claim: str = ">") -> str:
    m, (lo, hi) = d["mean"], d["seeds"]
    if claim == "<":
        m, lo, hi = -m, -hi, -lo
    if np.isfinite(lo) and lo > 0:
        return "reproduced"
    if m > 0:
        return "same direction, not significant (the seed CI includes 0)"
    if np.isfinite(hi) and hi < 0:
        return "not reproduced: significantly the opposite"
    return "not reproduced"


# ---- formatting --------------------------------------------------------------------------


def _p(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{PCT * x:.1f}"


def _ci(lo, hi, signed=False) -> str:
    if lo is None or not np.isfinite(lo):
        return "—"
    f = "+.1f" if signed else ".1f"
    return f"[{PCT * lo:{f}}, {PCT * hi:{f}}]"


def _acc(res: Results, cond: str, metric: str = "accuracy") -> str:
    m, lo, hi = stats.t_ci(res.values(cond, metric))
    scale = 1 / PCT if metric == "chrf" else 1.0
    # A t-interval can pass the ends of the scale; the scale itself cannot.
    lo, hi = max(lo, 0.0), min(hi, 1.0 / scale)
    return f"{_p(m * scale)} {_ci(lo * scale, hi * scale)}" if len(res.values(cond)) else "—"


def _gain(d: dict) -> str:
    ex = _ci(*d["examples"], signed=True) if d["examples"] else "—"
    return f"{PCT * d['mean']:+.1f} | {_ci(*d['seeds'], signed=True)} | {ex}"


def _kd(preset, n, teacher="teacher", t=1.0) -> str:
    return f"{preset}_n{n}_kd_{teacher}_T{t:g}"


def _sft(preset, n) -> str:
    return f"{preset}_n{n}_sft"


# ---- the findings ------------------------------------------------------------------------


def finding_a(res: Results, scale: Scale) -> tuple[list[str], dict]:
    rows, gains = [], {}
    for n in scale.sizes:
        g = paired(res, _kd("tiny-student", n), _sft("tiny-student", n))
        gains[n] = g
        rows.append(
            [n, _acc(res, _sft("tiny-student", n)), _acc(res, _kd("tiny-student", n)), _gain(g)]
        )
    small, large = min(scale.sizes), max(scale.sizes)
    shrink = {k: None for k in ("mean", "seeds", "examples")}
    d_small = res.values(_kd("tiny-student", small)) - res.values(_sft("tiny-student", small))
    d_large = res.values(_kd("tiny-student", large)) - res.values(_sft("tiny-student", large))
    k = min(len(d_small), len(d_large))
    m, lo, hi = stats.t_ci(d_small[:k] - d_large[:k])
    shrink = {"mean": m, "seeds": (lo, hi), "examples": None}
    lines = [
        "## (a) KD vs SFT as data grows",
        "",
        "tiny-student, KD = forward KL from the teacher at T = 1 (cached top-64). "
        "Accuracy (%) with the 95% seed CI; gain in points with the seed and example CIs.",
        "",
    ]
    lines += fig.md_table(
        ["examples", "SFT", "KD", "gain", "gain CI (seeds)", "gain CI (examples)"], rows
    )
    lines += [
        f"- KD beats SFT at n = {small}: **{verdict(gains[small])}** "
        f"({PCT * gains[small]['mean']:+.1f} points).",
        f"- The gap shrinks from n = {small} to n = {large}: **{verdict(shrink)}** "
        f"(gain difference {PCT * m:+.1f} points, seed CI {_ci(lo, hi, True)}).",
        "",
    ]
    return lines, {"gain_small": gains[small], "shrink": shrink}


def finding_b(res: Results, scale: Scale) -> tuple[list[str], dict]:
    large = max(scale.sizes)
    strong = paired(res, _kd("tiny-student", large, "strong-teacher"), _sft("tiny-student", large))
    weak = paired(res, _kd("tiny-student", large), _sft("tiny-student", large))
    vs = paired(res, _kd("tiny-student", large, "strong-teacher"), _kd("tiny-student", large))
    teachers = [
        [
            t,
            *(
                _p(res.scores[t][task]["accuracy"]) if t in res.scores else "—"
                for task in (TASK, "cipher")
            ),
        ]
        for t in ("teacher", "strong-teacher")
    ]
    lines = ["## (b) A stronger teacher at the largest size", ""]
    lines += fig.md_table(["teacher", f"{TASK} accuracy", "cipher accuracy"], teachers)
    lines += fig.md_table(
        ["KD at n = " + str(large), "accuracy", "gain over SFT", "CI (seeds)", "CI (examples)"],
        [
            ["teacher", _acc(res, _kd("tiny-student", large)), _gain(weak)],
            [
                "strong-teacher",
                _acc(res, _kd("tiny-student", large, "strong-teacher")),
                _gain(strong),
            ],
        ],
    )
    lines += [
        f"- The stronger teacher keeps a gap over SFT at n = {large}: **{verdict(strong)}**.",
        f"- Strong-teacher KD minus teacher KD: {PCT * vs['mean']:+.1f} points, seed CI "
        f"{_ci(*vs['seeds'], True)}.",
        "",
    ]
    return lines, {"strong": strong}


RECIPES = [
    ("cipher_sft", "SFT on human data"),
    ("cipher_stage1", "stage 1 only (SFT on synthetic)"),
    ("cipher_one-stage", "one stage (GKD on human)"),
    ("cipher_two-stage", "two stages (synthetic SFT, then GKD on human)"),
    ("cipher_mixed", "mixed (GKD on human + synthetic)"),
]


def _teacher_acc(res: Results) -> str:
    e = res.scores.get("cipher-teacher", {}).get("cipher")
    return f"accuracy {_p(e['accuracy'])}%, chrF {e['chrf']:.1f}" if e else "not evaluated"


def finding_c(res: Results, root: Path) -> tuple[list[str], dict]:
    rows = [[label, _acc(res, c), _acc(res, c, "chrf")] for c, label in RECIPES]
    two_one = paired(res, "cipher_two-stage", "cipher_one-stage")
    two_mix = paired(res, "cipher_two-stage", "cipher_mixed")
    counts = _read(root / "synthetic.jsonl.counts.json") or {}
    lines = [
        "## (c) Two-stage KD in the low-resource domain (Zorbic translation)",
        "",
        f"tiny-student; 300 noisy human pairs. The domain's teacher (cipher-teacher, "
        f"tiny-teacher trained on the terse teacher-scale pairs; {_teacher_acc(res)}) "
        f"labelled the synthetic set (filter counts: {json.dumps(counts)}) and is the "
        f"on-policy teacher. Exact-match accuracy (%) and chrF (0-100), with 95% seed CIs.",
        "",
    ]
    lines += fig.md_table(["recipe", "accuracy", "chrF"], rows)
    lines += [
        f"- Two stages beat one stage: **{verdict(two_one)}** ({_gain(two_one)} "
        "— difference | seed CI | example CI).",
        f"- Two stages beat naive mixing: **{verdict(two_mix)}** ({_gain(two_mix)}).",
        "",
    ]
    return lines, {"two_one": two_one, "two_mix": two_mix}


def finding_d(res: Results, scale: Scale) -> tuple[list[str], dict]:
    small = min(scale.sizes)
    presets = [
        p
        for p in ("tiny-student-xs", "tiny-student", "tiny-student-l")
        if res.seeds(_sft(p, small))
    ]
    gains = {p: paired(res, _kd(p, small), _sft(p, small)) for p in presets}
    params = {
        p: _read(res.root / f"{res.seeds(_sft(p, small))[0]}" / "run.json")["student_size"]
        for p in presets
    }
    lines = [f"## (d) Student size, temperature, fidelity (n = {small})", ""]
    lines += fig.md_table(
        ["student", "parameters", "SFT", "KD T=1", "gain", "CI (seeds)", "CI (examples)"],
        [
            [p, params[p], _acc(res, _sft(p, small)), _acc(res, _kd(p, small)), _gain(gains[p])]
            for p in presets
        ],
    )
    smallest, next_ = presets[0], presets[1] if len(presets) > 1 else presets[0]
    diff = {"mean": gains[smallest]["mean"] - gains[next_]["mean"], "examples": None}
    a = res.values(_kd(smallest, small)) - res.values(_sft(smallest, small))
    b = res.values(_kd(next_, small)) - res.values(_sft(next_, small))
    k = min(len(a), len(b))
    diff["seeds"] = stats.t_ci(a[:k] - b[:k])[1:]
    lines += [
        f"- Gains are larger for the smaller student ({smallest} vs {next_}): "
        f"**{verdict(diff)}** ({PCT * diff['mean']:+.1f} points).",
        "",
    ]
    t_rows, t_verdicts = [], {}
    for p in presets[:2]:
        for t in (1.0, 2.0, 5.0):
            cond = _kd(p, small, t=t)
            if res.seeds(cond):
                t_rows.append([p, f"T={t:g}", _acc(res, cond), *_fid(res, cond)])
        if res.seeds(_kd(p, small, t=5.0)):
            t_verdicts[p] = paired(res, _kd(p, small, t=5.0), _kd(p, small))
    lines += [
        "Temperature ablation and fidelity to the teacher (means over seeds): agreement = "
        "same final answer (%), BLEU of the rationales vs the teacher's (0-100), "
        "KL(teacher || student) per token and top-1 agreement (%) on held-out text.",
        "",
    ]
    lines += fig.md_table(["student", "KD", "accuracy", "agreement", "BLEU", "KL", "top-1"], t_rows)
    for p, d in t_verdicts.items():
        lines.append(
            f"- T = 5 hurts {p} (vs T = 1): **{verdict(d, '<')}** "
            f"({PCT * d['mean']:+.1f} points, seed CI {_ci(*d['seeds'], True)})."
        )
    return lines + [""], {"size": diff, "t5": t_verdicts}


def _fid(res: Results, cond: str) -> list[str]:
    vals = [res.fid.get(n, {}) for n in res.seeds(cond)]

    def mean(key, scale=1.0, fmt="{:.1f}"):
        xs = [v[key] for v in vals if v.get(key) is not None]
        return fmt.format(scale * float(np.mean(xs))) if xs else "—"

    return [mean("agreement", PCT), mean("bleu"), mean("kl", fmt="{:.3f}"), mean("top1", PCT)]


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
    cipher = [str(root / r.name) for r in plan if r.task == "cipher" and r.name in res.scores]
    if main:
        write_report(main, str(out / TASK))
    if cipher:  # the teacher's own run gives its score and predictions for agreement
        write_report(cipher, str(out / "cipher"))
    fig.recipe_figure(res, RECIPES, out / "cipher_recipes.png")

    lines = [
        f"# Miniature KD study on CPU ({scale.name} scale)",
        "",
        f"Seeds {list(scale.seeds)}; {TASK} sizes {list(scale.sizes)}; teacher "
        f"{scale.teacher_steps} steps (strong teacher x{scale.strong_factor:g}); students "
        f"{scale.student_steps} steps of {scale.batch_size} examples; stages "
        f"{scale.stage_steps} steps each; {scale.eval_examples} test problems per task, "
        "greedy. Setup: kd_jax/miniature/conditions.py. CIs: kd_jax/miniature/findings.py.",
        "",
    ]
    summary = {}
    for name, fn in (("a", finding_a), ("b", finding_b), ("c", finding_c), ("d", finding_d)):
        part, summary[name] = fn(res, root if name == "c" else scale)
        lines += part
    figures = [
        (f"{TASK}/gain_vs_data_size.png", "KD gain over SFT vs data size"),
        (f"{TASK}/gain_vs_student_size.png", "KD gain over SFT vs student size"),
        (f"{TASK}/temperature_ablation.png", "Temperature ablation"),
        (f"{TASK}/accuracy_vs_fidelity.png", "Accuracy vs fidelity"),
        ("cipher_recipes.png", "Low-resource recipes"),
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
