"""Reading the miniature suite's runs, comparing conditions with 95% CIs, and the verdicts.

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
import re
from pathlib import Path

import numpy as np

from kd_jax.evaluation import stats
from kd_jax.miniature.conditions import PlannedRun

PCT = 100.0


# ---- reading runs ------------------------------------------------------------------------


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


class Results:
    """Per-run scores, per-example correctness and fidelity, grouped by condition."""

    def __init__(self, root: Path, plan: list[PlannedRun]):
        self.root, self.plan = root, plan
        self.runs = {r.name: r for r in plan}
        self.scores, self.correct, self.fid = {}, {}, {}
        for r in plan:
            doc = read_json(root / r.name / "eval" / "scores.json")
            if doc is None:
                continue
            self.scores[r.name] = {t: e for t, e in doc["tasks"].items()}
            pred = root / r.name / "eval" / "predictions" / f"{r.task}.jsonl"
            rows = [json.loads(x) for x in pred.read_text().splitlines() if x.strip()]
            self.correct[r.name] = np.asarray([float(x["correct"]) for x in rows])
            fid = read_json(root / r.name / "eval" / "fidelity.json")
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

    def best_steps(self, cond: str) -> list[int]:
        """Per seed, the step of the checkpoint a validating run kept as its best."""
        out = []
        for n in self.seeds(cond):
            steps = [int(p.name) for p in (self.root / n / "checkpoints_best").glob("[0-9]*")]
            out += [max(steps)] if steps else []
        return out

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
    if not np.isfinite(lo):  # one seed: a direction, no interval
        return f"{'same direction' if m > 0 else 'not reproduced'}, one seed (no CI)"
    if lo > 0:
        return "reproduced"
    if m > 0:
        return "same direction, not significant (the seed CI includes 0)"
    if np.isfinite(hi) and hi < 0:
        return "not reproduced: significantly the opposite"
    return "not reproduced"


# ---- formatting --------------------------------------------------------------------------


def pct(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{PCT * x:.1f}"


def fmt_ci(lo, hi, signed=False) -> str:
    if lo is None or not np.isfinite(lo):
        return "—"
    f = "+.1f" if signed else ".1f"
    return f"[{PCT * lo:{f}}, {PCT * hi:{f}}]"


def fmt_acc(res: Results, cond: str, metric: str = "accuracy") -> str:
    m, lo, hi = stats.t_ci(res.values(cond, metric))
    scale = 1 / PCT if metric == "chrf" else 1.0
    # A t-interval can pass the ends of the scale; the scale itself cannot.
    lo, hi = max(lo, 0.0), min(hi, 1.0 / scale)
    return f"{pct(m * scale)} {fmt_ci(lo * scale, hi * scale)}" if len(res.values(cond)) else "—"


def fmt_gain(d: dict) -> str:
    ex = fmt_ci(*d["examples"], signed=True) if d["examples"] else "—"
    return f"{PCT * d['mean']:+.1f} | {fmt_ci(*d['seeds'], signed=True)} | {ex}"


def diff_of_gains(res: Results, a: tuple[str, str], b: tuple[str, str]) -> dict:
    """(a[0] - a[1]) minus (b[0] - b[1]), paired by seed."""
    da = res.values(a[0]) - res.values(a[1]) if res.seeds(a[0]) and res.seeds(a[1]) else []
    db = res.values(b[0]) - res.values(b[1]) if res.seeds(b[0]) and res.seeds(b[1]) else []
    k = min(len(da), len(db))
    m, lo, hi = stats.t_ci(np.asarray(da[:k]) - np.asarray(db[:k]))
    return {"mean": m, "seeds": (lo, hi), "examples": None, "n": k}


def verdict_line(claim: str, d: dict, sign: str = ">") -> str:
    mean = PCT * d["mean"] if np.isfinite(d["mean"]) else float("nan")
    return (
        f"- {claim}: **{verdict(d, sign)}** "
        f"({mean:+.1f} points, seed CI {fmt_ci(*d['seeds'], True)})."
    )


def fid_cells(res: Results, cond: str) -> list[str]:
    vals = [res.fid.get(n, {}) for n in res.seeds(cond)]

    def mean(key, scale=1.0, fmt="{:.1f}"):
        xs = [v[key] for v in vals if v.get(key) is not None]
        return fmt.format(scale * float(np.mean(xs))) if xs else "—"

    return [mean("agreement", PCT), mean("bleu"), mean("kl", fmt="{:.3f}"), mean("top1", PCT)]
