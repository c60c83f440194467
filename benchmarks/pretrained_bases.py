"""Do the built-in tiny bases help post-training? SFT and KD from pretrained and random starts.

    python benchmarks/pretrained_bases.py --workdir runs/bases [--seeds 0] [--steps-scale 1]

Pretrains tiny-teacher and the three tiny students on configs/pretrain.py's mixture (every
built-in family, chat and Alpaca, prompts included), fine-tunes the teacher on the
tiny_compare task (all 4k comparison questions, configs/tiny_compare.py:teacher's schedule,
from its base), then post-trains each student on its 250 questions by SFT and by
KD (configs/tiny_compare.py:sft / kd) from its base and from random initialisation. Prints
each run's held-out CE, greedy accuracy on the comparison test and held-out KL to the
teacher (per token, on the test responses), and the wall time of every stage. Runs resume
and finished runs are skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from seed_runs import fmt_ci, scaled, train_and_score, with_seed

from configs import pretrain, tiny_compare
from kd_jax import sweep, train
from kd_jax.evaluation.run_eval import held_out_fidelity
from kd_jax.models.loader import load_trained

STUDENTS = ("tiny-student-xs", "tiny-student", "tiny-student-l")


def pretrained(name: str, root: Path, factor: float, steps: int = 0) -> tuple[Path, float]:
    """The base of `name` (trained here once; `steps` other than configs/pretrain.py's),
    and the seconds it took."""
    config = pretrain.get_config(name)
    config.train.num_steps = steps or config.train.num_steps
    config = scaled(config, factor)
    wd = root / f"base-{name}"
    took = wd / "seconds.txt"  # measured when it trained; a later call skips it
    if not sweep.is_finished(wd, config.train.num_steps):
        t0 = time.time()
        train.run(config, wd)
        took.write_text(f"{time.time() - t0:.1f}\n")
    return wd, float(took.read_text()) if took.exists() else float("nan")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps-scale", type=float, default=1.0, help="e.g. 0.05: a plumbing check")
    p.add_argument(
        "--teacher-base-steps", type=int, default=0, help="README's table: 800 (default 1600)"
    )
    args = p.parse_args(argv)
    root, seeds, f = Path(args.workdir), [int(s) for s in args.seeds.split(",")], args.steps_scale
    seconds = {}
    bases = {}
    for name in ("tiny-teacher", *STUDENTS):
        steps = args.teacher_base_steps if name == "tiny-teacher" else 0
        bases[name], seconds[f"pretrain {name}"] = pretrained(name, root, f, steps)

    t = scaled(tiny_compare.get_config("teacher"), f)
    t.student.workdir = str(bases["tiny-teacher"])
    results = {"teacher": {0: train_and_score(t, root / "teacher")}}
    teacher = load_trained(root / "teacher")[0]

    def kl(config, workdir):
        return {"kl": held_out_fidelity(config, load_trained(workdir)[0], teacher)["kl"]}

    for student in STUDENTS:
        for start in ("base", "scratch"):
            for method in ("sft", "kd"):
                name = f"{student}_{start}_{method}"
                for seed in seeds:
                    c = with_seed(scaled(tiny_compare.get_config(method), f), seed)
                    c.student.preset = student
                    if start == "base":
                        c.student.workdir = str(bases[student])
                    if method == "kd":
                        c.teacher.workdir = str(root / "teacher")
                    run = root / f"{name}_seed{seed}"
                    results.setdefault(name, {})[seed] = train_and_score(c, run, extra=kl)
    (root / "summary.json").write_text(json.dumps({"seconds": seconds, "runs": results}) + "\n")
    print(format_table(results, seconds))
    return results


def format_table(results: dict, seconds: dict) -> str:
    lines = [
        "| run | held-out CE | accuracy (%) | KL to teacher | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        rows = list(runs.values())
        kl = fmt_ci([r["kl"] for r in rows]) if "kl" in rows[0] else ""
        lines.append(
            f"| {name} | {fmt_ci([r['eval_ce'] for r in rows])} | "
            f"{fmt_ci([r['accuracy'] for r in rows], 100, 1)} | {kl} | "
            f"{sum(r['seconds'] for r in rows):.0f} |"
        )
    lines += ["", *(f"{k}: {v} s" for k, v in seconds.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
