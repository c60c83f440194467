"""Reading run folders for the report: metadata, scores, per-example results, fidelity.

A run folder (one trained model, evaluated once) holds:

  RUN_DIR/run.json                      metadata (below); written by whoever trains or
                                        evaluates the run
  RUN_DIR/eval/scores.json              `kd_jax.evaluation.evaluate` output: per-task scores
  RUN_DIR/eval/predictions/<task>.jsonl  per-example results (for CIs over examples and
                                        for agreement/BLEU against the teacher)
  RUN_DIR/eval/fidelity.json            optional: {"tasks": {task: {"agreement", "bleu"}},
                                        "held_out": {"kl", "top1"}} (fidelity.write_fidelity)

The eval files may also sit directly in RUN_DIR (no `eval/`). run.json:

  {"method": "SFT" | "SeqKD" | "RevKD" | "GKD" | any KD name,   required
   "student": "tiny-student",                                   required
   "teacher": "tiny-teacher",            required unless method is SFT
   "student_size": 112000,               parameters; for gain vs student size
   "data_size": 500,                     training examples; for gain vs data size
   "temperature": 2.0,                   KD temperature; for the temperature ablation
   "seed": 0,                            runs differing only in seed are pooled
   "label": "optional display name"}

The teacher's own evaluation is a run with method "SFT" and student = the teacher's
name: it gives the teacher score, and its predictions give agreement and BLEU when a
KD run has no fidelity.json.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from kd_jax.errors import UserError

RUN_JSON, EVAL_DIR, FIDELITY_JSON = "run.json", "eval", "fidelity.json"
SFT = "SFT"


class ReportError(UserError):
    """A run folder the report cannot use, with the fix in one sentence."""


@dataclasses.dataclass
class Run:
    path: str
    eval_dir: str
    method: str
    student: str
    teacher: str | None
    student_size: float | None
    data_size: float | None
    temperature: float | None
    seed: int | None
    label: str
    scores: dict[str, float]  # task -> accuracy (fraction)
    correct: dict[str, np.ndarray]  # task -> per-example 0/1, test-file order
    fidelity: dict = dataclasses.field(default_factory=dict)  # agreement, bleu, kl, top1

    @property
    def is_sft(self) -> bool:
        return self.method.upper() == SFT

    def condition(self) -> tuple:
        """Everything but the seed: runs with the same condition are pooled."""
        return (self.teacher, self.student, self.data_size, self.method, self.temperature)


def _eval_dir(path: str) -> str:
    for d in (os.path.join(path, EVAL_DIR), path):
        if os.path.exists(os.path.join(d, "scores.json")):
            return d
    raise ReportError(f"{path}: no eval/scores.json; run `kd-jax eval` on this run first")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e.msg}); fix or rewrite the file") from None


def _number(meta: dict, key: str, path: str):
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float):
        raise ReportError(f"{path}: {key} must be a number, got {value!r}")
    return value


def load_run(path: str) -> Run:
    meta_path = os.path.join(path, RUN_JSON)
    if not os.path.exists(meta_path):
        raise ReportError(f"{path}: no run.json; write one with at least method and student")
    meta = _read_json(meta_path)
    for key in ("method", "student"):
        if not meta.get(key):
            raise ReportError(f"{meta_path}: missing {key!r}; add it to run.json")
    if str(meta["method"]).upper() != SFT and not meta.get("teacher"):
        raise ReportError(f"{meta_path}: a {meta['method']} run needs 'teacher' in run.json")
    eval_dir = _eval_dir(path)
    doc = _read_json(os.path.join(eval_dir, "scores.json"))
    scores, correct = {}, {}
    for task, entry in doc.get("tasks", {}).items():
        # Generation accuracy when the task was generated; log-likelihood accuracy otherwise.
        metric, field = (
            ("accuracy", "correct") if "accuracy" in entry else ("mc_accuracy", "mc_correct")
        )
        if metric not in entry:
            continue
        scores[task] = float(entry[metric])
        pred_path = os.path.join(eval_dir, "predictions", f"{task}.jsonl")
        if os.path.exists(pred_path):
            with open(pred_path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            correct[task] = np.asarray([float(r[field]) for r in rows])
    run = Run(
        path=path,
        eval_dir=eval_dir,
        method=str(meta["method"]),
        student=str(meta["student"]),
        teacher=meta.get("teacher") or None,
        student_size=_number(meta, "student_size", meta_path),
        data_size=_number(meta, "data_size", meta_path),
        temperature=_number(meta, "temperature", meta_path),
        seed=meta.get("seed"),
        label=str(meta.get("label") or os.path.basename(os.path.normpath(path))),
        scores=scores,
        correct=correct,
    )
    if run.is_sft:  # SFT has no teacher and no temperature, whatever run.json says
        run.teacher, run.temperature = None, None
    fid_path = os.path.join(eval_dir, FIDELITY_JSON)
    if os.path.exists(fid_path):
        run.fidelity = summarize_fidelity(_read_json(fid_path))
    return run


def summarize_fidelity(doc: dict) -> dict:
    """Macro averages over tasks of agreement and BLEU, plus the held-out KL and top-1."""
    out = {}
    tasks = doc.get("tasks", {})
    for key in ("agreement", "bleu"):
        values = [v[key] for v in tasks.values() if key in v]
        if values:
            out[key] = float(np.mean(values))
    out.update({k: float(v) for k, v in doc.get("held_out", {}).items()})
    return out


def write_run_meta(run_dir: str, *, method: str, student: str, **fields) -> str:
    """Writes RUN_DIR/run.json (fields as documented above); returns its path."""
    meta = {"method": method, "student": student, **fields}
    if str(method).upper() != SFT and not meta.get("teacher"):
        raise ReportError(f"a {method} run needs a teacher in its run.json")
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, RUN_JSON)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    return path


def load_runs(paths) -> list[Run]:
    if not paths:
        raise ReportError("no run folders given; pass the folders of the runs to compare")
    return [load_run(p) for p in paths]


def teacher_run(run: Run, runs: list[Run]) -> Run | None:
    """The teacher's own SFT evaluation among `runs`: same seed preferred, then any."""
    if run.teacher is None:
        return None
    cands = [r for r in runs if r.is_sft and r.student == run.teacher]
    same_seed = [r for r in cands if r.seed == run.seed]
    return (same_seed or cands or [None])[0]


def expand_run_dirs(paths: list[str]) -> tuple[list[str], list[str]]:
    """(evaluated run folders, skipped folders) from run folders and folders of runs.

    A folder that is not itself a run but holds runs (a sweep's workdir) stands for every
    run inside it; folders with nothing evaluated (a teacher that was never evaluated,
    the report folder itself) are skipped."""
    runs, skipped = [], []
    for path in paths:
        if not os.path.isdir(path):
            raise ReportError(f"{path}: no such folder; pass run folders or a sweep's workdir")
        if os.path.exists(os.path.join(path, RUN_JSON)):
            runs.append(path)
            continue
        inner = sorted(
            os.path.join(path, d)
            for d in os.listdir(path)
            if os.path.exists(os.path.join(path, d, RUN_JSON))
        )
        if inner:
            runs.extend(inner)
        else:
            skipped.append(path)
    return runs, skipped
