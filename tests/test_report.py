"""write_report on run folders: two tiny evaluated runs, then a synthetic sweep with seeds."""

import json
import math
import os

import numpy as np
import pytest

from kd_jax.evaluation import evaluate, stats, write_fidelity
from kd_jax.report import ReportError, write_report, write_run_meta
from tests.test_eval_tasks import BUILTIN

PNGS = [
    "gain_vs_data_size.png",
    "gain_vs_student_size.png",
    "accuracy_vs_fidelity.png",
    "temperature_ablation.png",
]


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000


def _evaluated_run(root, name, meta, right):
    """A run folder made by `evaluate` on the built-in fixture with a stub that answers
    correctly exactly on the user questions containing one of `right`."""
    golds = {}
    for fam in ("arith", "compare"):
        for line in open(os.path.join(BUILTIN, "chat", fam, "test.jsonl")):
            r = json.loads(line)
            golds[r["messages"][0]["content"]] = r["answer"]

    def generate(prompts):
        out = []
        for p in prompts:
            q = next(k for k in golds if k in p)
            ok = any(s in q for s in right)
            out.append(f"The answer is {golds[q] if ok else 0} .")
        return out

    run = os.path.join(root, name)
    write_run_meta(run, **meta)
    evaluate(
        ["arith", "compare"],
        generate,
        None,
        os.path.join(run, "eval"),
        data_root={"builtin": BUILTIN},
        progress=False,
    )
    return run


def test_two_evaluated_runs_give_markdown_and_all_figures(tmp_path):
    common = {"student": "tiny-student", "student_size": 112_000, "data_size": 500, "seed": 0}
    # SFT: right on 1 of 3 arith and 1 of 3 compare items; KD: 2 of 3 and 3 of 3.
    sft = _evaluated_run(tmp_path, "sft", {"method": "SFT", **common}, ["Leo has", "663 or"])
    kd = _evaluated_run(
        tmp_path,
        "kd",
        {"method": "SeqKD", "teacher": "tiny-teacher", "temperature": 2.0, **common},
        ["Leo has", "Sam has", "663 or", "851 or", "540 or"],
    )
    write_fidelity(
        os.path.join(kd, "eval"), {"arith": {"agreement": 0.5, "bleu": 40.0}}, kl=0.3, top1=0.8
    )
    path = write_report([sft, kd], str(tmp_path / "report"))
    text = open(path).read()
    for png in PNGS:
        assert _is_png(tmp_path / "report" / png), png
        assert f"]({png})" in text
    # Accuracy table: SFT arith 1/3 = 33.3%, KD compare 3/3 = 100.0%; averages 33.3 and 83.3.
    assert "| SFT tiny-student n=500 | 1 | 33.3 | 33.3 | 33.3 |" in text
    assert "| SeqKD tiny-teacher->tiny-student n=500 T=2 | 1 | 66.7 | 100.0 | 83.3 |" in text
    assert "| +50.0 |" in text  # gain 83.3 - 33.3 points
    assert "| 50.0 | 40.0 | 0.300 | 80.0 |" in text  # fidelity row
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    (gain,) = summary["gains"]
    assert gain["gain"] == pytest.approx(0.5)
    lo, hi = gain["ci_examples"]
    assert lo <= 0.5 <= hi and gain["ci_seeds"] is None  # one seed each: no seed CI


def _synthetic_run(root, name, meta, acc_by_task, n=120, teacher_acc=None):
    """A run folder in evaluate's layout with exactly round(acc * n) correct items per task;
    predictions agree with a teacher that is right on the first `teacher_acc * n` items."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    run = os.path.join(root, name)
    os.makedirs(os.path.join(run, "eval", "predictions"))
    tasks = {}
    for task, acc in acc_by_task.items():
        right = np.zeros(n, bool)
        right[rng.permutation(n)[: round(acc * n)]] = True
        with open(os.path.join(run, "eval", "predictions", f"{task}.jsonl"), "w") as f:
            for i in range(n):
                pred = str(i) if right[i] else str(1000 + i % 7)
                f.write(
                    json.dumps(
                        {
                            "index": i,
                            "gold": str(i),
                            "prediction": pred,
                            "response": f"step {i % 5} . The answer is {pred} .",
                            "correct": bool(right[i]),
                        }
                    )
                    + "\n"
                )
        tasks[task] = {"n": n, "accuracy": float(right.mean())}
    with open(os.path.join(run, "eval", "scores.json"), "w") as f:
        json.dump({"tasks": tasks}, f)
    with open(os.path.join(run, "run.json"), "w") as f:
        json.dump(meta, f)
    return run


STUDENTS = {"tiny-student-xs": 30_000, "tiny-student": 112_000, "tiny-student-l": 300_000}


def make_sweep(root):
    """Teacher, three students, two data sizes, SFT / SeqKD (T = 1, 2, 5) / RevKD (T = 1),
    two seeds. The true KD gain shrinks with data and student size; T = 5 hurts the
    smallest student, as in Study B."""
    runs = [
        _synthetic_run(
            root,
            f"teacher-s{s}",
            {"method": "SFT", "student": "tiny-teacher", "student_size": 816_000, "seed": s},
            {"arith": 0.95, "compare": 0.9},
        )
        for s in (0, 1)
    ]
    for student, size in STUDENTS.items():
        for data in (500, 2000):
            base = 0.35 + 0.08 * math.log10(size / 30_000) + (0.2 if data == 2000 else 0.0)
            gain = 0.12 * (500 / data) ** 0.5 * (30_000 / size) ** 0.3
            conds = [
                ("SFT", None, 0.0),
                ("SeqKD", 1.0, gain * 0.6),
                ("SeqKD", 2.0, gain),
                ("SeqKD", 5.0, gain - (0.2 if size < 50_000 else 0.0)),
                ("RevKD", 1.0, gain * 1.1),
            ]
            for method, temp, g in conds:
                for seed in (0, 1):
                    acc = base + g + 0.02 * seed
                    meta = {
                        "method": method,
                        "student": student,
                        "student_size": size,
                        "data_size": data,
                        "seed": seed,
                    }
                    if method != "SFT":
                        meta.update(teacher="tiny-teacher", temperature=temp)
                    name = f"{method}-{student}-n{data}-T{temp}-s{seed}"
                    runs.append(
                        _synthetic_run(root, name, meta, {"arith": acc, "compare": acc - 0.05})
                    )
    return runs


def test_sweep_report_tables_statistics_and_figures(tmp_path):
    runs = make_sweep(str(tmp_path / "runs"))
    path = write_report(runs, str(tmp_path / "report"))
    text = open(path).read()
    for png in PNGS:
        assert _is_png(tmp_path / "report" / png), png
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    gains = {g["condition"]: g for g in summary["gains"]}
    assert len(gains) == 3 * 2 * 4
    for student in STUDENTS:  # the built-in trend survives the pipeline
        small = gains[f"SeqKD tiny-teacher->{student} n=500 T=2"]
        big = gains[f"SeqKD tiny-teacher->{student} n=2000 T=2"]
        assert small["gain"] > big["gain"]
        assert small["ci_seeds"] is not None and small["ci_examples"] is not None
    sb = summary["study_b"]
    # 12 improvement rows (3 students x 2 sizes x 2 methods), best temperature each.
    assert sb["ttests"]["all methods"]["average"]["n"] == 12
    assert sb["ttests"]["all methods"]["average"]["pvalue"] < 0.01
    # One teacher only, so its score is constant and has no rank correlation to report.
    assert set(sb["spearman"]) == {
        "student size",
        "student SFT score",
        "agreement",
        "BLEU fidelity",
    }
    assert sb["spearman"]["student size"]["rho"] < 0  # gains fall with student size
    assert set(sb["anova"]["groups"]) == {"SeqKD", "RevKD"}
    imp = [0.133, 0.121, 0.067, 0.062, 0.092, 0.083, 0.046, 0.042, 0.067, 0.058, 0.033, 0.029]
    # The report's pooled t-test is scipy's on the improvement column it prints (rounded
    # here to the table's 0.1 points, so the statistic agrees to about 1%).
    assert sb["ttests"]["all methods"]["average"]["statistic"] == pytest.approx(
        stats.ttest_greater(imp)["statistic"], rel=0.02
    )
    assert "## Study B statistics" in text and "One-way ANOVA" in text


def test_report_errors_name_the_fix(tmp_path):
    with pytest.raises(ReportError, match="no run.json"):
        write_report([str(tmp_path)], str(tmp_path / "r"))
    (tmp_path / "run.json").write_text(json.dumps({"method": "SeqKD", "student": "s"}))
    with pytest.raises(ReportError, match="needs 'teacher'"):
        write_report([str(tmp_path)], str(tmp_path / "r"))
    (tmp_path / "run.json").write_text(json.dumps({"method": "SFT", "student": "s"}))
    with pytest.raises(ReportError, match="run `kd-jax eval`"):
        write_report([str(tmp_path)], str(tmp_path / "r"))
