"""Can each shipped student base follow a teacher? SFT vs KD at three student sizes.

    python benchmarks/student_sizes.py --workdir runs/sizes [--seeds 0,1,2] [--teacher DIR]

The quickstart's setting (configs/quickstart.py) for each shipped student base
(kd_jax/models/bases: tiny-student-xs, tiny-student, tiny-student-l): SFT on the 500
labelled questions and on-policy KD (GKD, lambda = 1) on the 4k unlabelled ones, from the
quickstart's teacher (`--teacher`: a finished configs/quickstart.py:teacher run, e.g.
runs/quickstart/teacher; else trained here once, at seed 0). Prints each condition's
held-out CE, greedy accuracy and held-out KL to the teacher (per token, on the test
responses), mean [95% t-interval] over seeds, and KD's gain over SFT paired by seed.
Runs resume and finished runs are skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seed_runs import fmt_ci, paired_gains, scaled, train_and_score, with_seed

from configs import quickstart
from kd_jax.evaluation.run_eval import held_out_fidelity
from kd_jax.models import builtin_bases
from kd_jax.models.loader import load_trained

STUDENTS = ("tiny-student-xs", "tiny-student", "tiny-student-l")


def student_config(name: str, method: str, seed: int, factor: float, teacher: Path):
    c = scaled(with_seed(quickstart.get_config(method), seed), factor)
    c.student.preset, c.student.hf_path = name, builtin_bases.path(name)
    if method == "kd":
        c.teacher.workdir = str(teacher)
    return c


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--teacher", default="", help="a finished configs/quickstart.py:teacher run")
    p.add_argument("--steps-scale", type=float, default=1.0, help="e.g. 0.02: a plumbing check")
    args = p.parse_args(argv)
    root, seeds, f = Path(args.workdir), [int(s) for s in args.seeds.split(",")], args.steps_scale
    teacher_dir = Path(args.teacher) if args.teacher else root / "teacher"
    if not args.teacher:
        train_and_score(scaled(quickstart.get_config("teacher"), f), teacher_dir)
    teacher = load_trained(teacher_dir)[0]

    def kl(config, workdir):
        return {"kl": held_out_fidelity(config, load_trained(workdir)[0], teacher)["kl"]}

    results = {}
    for name in STUDENTS:
        for method in ("sft", "kd"):
            for seed in seeds:
                c = student_config(name, method, seed, f, teacher_dir)
                run = root / f"{name}_{method}_seed{seed}"
                results.setdefault(f"{name} {method}", {})[seed] = train_and_score(c, run, kl)
    print(format_table(results))
    return results


def format_table(results: dict) -> str:
    lines = [
        "| student | method | held-out CE | accuracy (%) | KL to teacher | "
        "KD - SFT accuracy (points) |",
        "|---|---|---|---|---|---|",
    ]
    for name in STUDENTS:
        for method in ("sft", "kd"):
            rows = list(results[f"{name} {method}"].values())
            gain = ""
            if method == "kd":
                pair = {k: results[f"{name} {k}"] for k in ("sft", "kd")}
                gain = fmt_ci(paired_gains(pair, "accuracy", "sft")["kd"], 100, 1)
            lines.append(
                f"| {name} | {method} | "
                f"{fmt_ci([r['eval_ce'] for r in rows])} | "
                f"{fmt_ci([r['accuracy'] for r in rows], 100, 1)} | "
                f"{fmt_ci([r['kl'] for r in rows])} | {gain} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
