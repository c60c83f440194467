"""Cross-tokenizer KD against SFT and same-tokenizer KD, off- and on-policy, over seeds.

    python benchmarks/cross_tokenizer_kd.py --workdir runs/xt [--seeds 0,1,2,3,4] [--runlocal]

configs/tiny_compare.py's task (number comparison, 250 training questions, tiny-student): a teacher
on the student's tokenizer (configs/tiny_compare.py:teacher) and one on the second built-in
tokenizer (configs/cross_tokenizer.py:teacher_b: digits in pairs, another vocabulary and
chat template). Students, every one from the same seeds: SFT; token-level KD from the
same-tokenizer teacher; "aligned" and "uld" KD from the other-tokenizer teacher; every KD
loss at the cross-tokenizer configs' alpha (half CE, half divergence). Each KD
method off-policy (the dataset's responses) and on-policy (gkd.lambda_ = 0.5: half the
batches are the student's own samples, decoded and tokenized again for the teacher).

Prints, per condition, the held-out CE (the student's, on the gold test responses) and
greedy exact-match accuracy with 95% t-intervals over seeds; each KD condition's gain over
SFT paired by seed; and the share of same-tokenizer KD's gain (same policy) that
cross-tokenizer KD keeps. Runs resume and finished runs are skipped, so a second call
prints the tables at once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seed_runs import fmt_ci, paired_gains, scaled, train_and_score, with_seed

from configs import cross_tokenizer, tiny_compare
from kd_jax.evaluation.stats import t_ci

ONPOLICY = {"lambda_": 0.5, "max_new_tokens": 32, "temperature": 1.0}
METHODS = ("kd", "aligned", "uld")


def student_config(method: str, policy: str, runlocal: bool):
    flags = ",runlocal" if runlocal else ""
    if method == "kd":
        c = cross_tokenizer.get_config("sft" + flags)  # the same schedule, one tokenizer
        c.method, c.kd = "kd", tiny_compare.get_config("kd").kd
        c.kd.alpha = cross_tokenizer.get_config("aligned").kd.alpha  # the same loss mix
    else:
        c = cross_tokenizer.get_config(method + flags)
    if policy == "on":
        c.gkd.update(ONPOLICY)
    return c


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--runlocal", action="store_true", help="the configs' short variants")
    p.add_argument("--steps-scale", type=float, default=1.0, help="e.g. 0.05: a plumbing check")
    args = p.parse_args(argv)
    root, seeds = Path(args.workdir), [int(s) for s in args.seeds.split(",")]
    flags = ",runlocal" if args.runlocal else ""

    ta = tiny_compare.get_config("teacher")
    tb = cross_tokenizer.get_config("teacher_b" + flags)
    if args.runlocal:  # teacher_b's short schedule for teacher a too
        ta.train.num_steps, ta.data.max_length = tb.train.num_steps, tb.data.max_length
    teachers = {"teacher_a": ta, "teacher_b": tb}
    scores = {
        name: train_and_score(scaled(c, args.steps_scale), root / name)
        for name, c in teachers.items()
    }

    results: dict[str, dict[int, dict]] = {}
    conditions = [("sft", "off")] + [(m, pol) for pol in ("off", "on") for m in METHODS]
    for seed in seeds:
        for method, policy in conditions:
            if method == "sft":
                c, name = cross_tokenizer.get_config("sft" + flags), "sft"
            else:
                c, name = student_config(method, policy, args.runlocal), f"{method}_{policy}"
                teacher = "teacher_a" if method == "kd" else "teacher_b"
                c.teacher.workdir = str(root / teacher)
            run = root / f"{name}_seed{seed}"
            c = scaled(with_seed(c, seed), args.steps_scale)
            results.setdefault(name, {})[seed] = train_and_score(c, run)

    print(format_tables(scores, results, seeds))
    (root / "summary.json").write_text(json.dumps({"teachers": scores, "runs": results}) + "\n")
    return results


def _share(gain, reference) -> str:
    """Mean gain as a share of the reference's mean gain (only when that one is a gain)."""
    ref = t_ci(reference)[0]
    return f"{t_ci(gain)[0] / ref:.0%}" if ref > 0 else "n/a (no reference gain)"


def format_tables(teachers: dict, results: dict, seeds: list[int]) -> str:
    lines = [
        f"teachers: a (student's tokenizer) accuracy {teachers['teacher_a']['accuracy']:.3f}, "
        f"b (builtin:tokenizer-b) accuracy {teachers['teacher_b']['accuracy']:.3f}",
        f"seeds {seeds}; mean [95% t-interval]",
        "",
        "| condition | held-out CE | accuracy |",
        "|---|---|---|",
    ]
    for name, runs in results.items():
        ce = [runs[s]["eval_ce"] for s in seeds]
        acc = [runs[s]["accuracy"] for s in seeds]
        lines.append(f"| {name} | {fmt_ci(ce)} | {fmt_ci(acc, 100, 1)} |")
    ce_gain = paired_gains(results, "eval_ce", "sft", sign=-1.0)
    acc_gain = paired_gains(results, "accuracy", "sft")
    lines += [
        "",
        "| vs SFT | CE reduction | accuracy gain (points) "
        "| share of same-tokenizer KD's gain (CE, acc) |",
        "|---|---|---|---|",
    ]
    for name in ce_gain:
        method, policy = name.split("_")
        share = "(reference)"
        if method != "kd" and f"kd_{policy}" in ce_gain:
            share = ", ".join(_share(g[name], g[f"kd_{policy}"]) for g in (ce_gain, acc_gain))
        lines.append(
            f"| {name} | {fmt_ci(ce_gain[name])} | {fmt_ci(acc_gain[name], 100, 1)} | {share} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
