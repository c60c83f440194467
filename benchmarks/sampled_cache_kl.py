"""KD from a sampled teacher cache vs from top-k caches: held-out KL to the teacher, over seeds.

    python benchmarks/sampled_cache_kl.py --workdir runs/sc [--teacher DIR] [--seeds 0,1,2]
        [--k 64]

configs/tiny_compare.py's KD student (tiny-student, 250 comparison questions, forward KL at T = 1,
alpha = 1) trained four ways from one teacher (configs/tiny_compare.py:teacher, trained in
WORKDIR/teacher unless --teacher names a finished run): online (the teacher in the step:
the exact target), from K = --k draws per token (`--mode sample`, drawn again for every
seed), from the top-K cache, and from a top-k cache of the same bytes per token as the
sampled one (k chosen after measuring it). Prints each cache's bytes per token (every
array of the cache over its cached tokens) and, per condition, the student's held-out
KL(teacher || student) per token on the comparison test set with 95% t-intervals over
seeds, and each cache's KL excess over online KD paired by seed.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from seed_runs import fmt_ci, paired_gains, scaled, train_and_score, with_seed

from configs import tiny_compare
from kd_jax import teacher_cache_job
from kd_jax.evaluation.run_eval import held_out_fidelity
from kd_jax.id_packing import index_bits
from kd_jax.models.loader import load_trained


def cache_bytes_per_token(folder: Path) -> float:
    """Every array the cache holds (offsets included) over the tokens it covers."""
    total, tokens = 0, 0
    for shard in sorted(folder.glob("shard-*")):
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in shard.glob("*.npy")}
        total += sum(a.nbytes for a in arrays.values())
        tokens += int(arrays["offsets"][-1])
    return total / tokens


def topk_bytes_per_token(k: int, vocab: int) -> float:
    return k * 2 + math.ceil(k * index_bits(vocab) / 8)  # float16 values, packed ids


def build_cache(config, out: Path, k: int, mode: str, seed: int = 0) -> Path:
    meta = out / "meta.json"
    if not (meta.exists() and json.loads(meta.read_text()).get("complete")):
        c = with_seed(tiny_compare.get_config("kd"), seed)
        c.teacher.workdir = config.teacher.workdir
        c.data.num_examples = 0  # the cache covers every record; subsets look theirs up
        teacher_cache_job.build(c, out, k=k, mode=mode, batch_size=100, progress=False)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--teacher", default="", help="a finished configs/tiny_compare.py:teacher run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--k", type=int, default=64, help="draws per token (and the top-k's k)")
    p.add_argument("--steps-scale", type=float, default=1.0, help="e.g. 0.05: a plumbing check")
    args = p.parse_args(argv)
    root, seeds, k = Path(args.workdir), [int(s) for s in args.seeds.split(",")], args.k
    teacher_dir = Path(args.teacher) if args.teacher else root / "teacher"
    if not args.teacher:
        train_and_score(tiny_compare.get_config("teacher"), teacher_dir)
    teacher = load_trained(teacher_dir)[0]

    def kl(config, workdir):
        return {"kl": held_out_fidelity(config, load_trained(workdir)[0], teacher)["kl"]}

    base = tiny_compare.get_config("kd")
    base.teacher.workdir = str(teacher_dir)
    vocab = teacher.cfg.vocab_size
    caches = {f"topk{k}": build_cache(base, root / f"cache-topk{k}", k, "topk")}
    sizes = {f"topk{k}": cache_bytes_per_token(caches[f"topk{k}"])}
    for seed in seeds:
        name = f"sample{k}_seed{seed}"
        caches[name] = build_cache(base, root / f"cache-{name}", k, "sample", seed)
        sizes[name] = cache_bytes_per_token(caches[name])
    sampled = float(np.mean([sizes[f"sample{k}_seed{s}"] for s in seeds]))
    k_same = next(j for j in range(1, k + 1) if topk_bytes_per_token(j, vocab) >= sampled)
    caches[f"topk{k_same}"] = build_cache(base, root / f"cache-topk{k_same}", k_same, "topk")
    sizes[f"topk{k_same}"] = cache_bytes_per_token(caches[f"topk{k_same}"])

    results: dict[str, dict[int, dict]] = {}
    for seed in seeds:
        for name in ("online", f"sample{k}", f"topk{k}", f"topk{k_same}"):
            c = with_seed(tiny_compare.get_config("kd"), seed)
            c.teacher.workdir = str(teacher_dir)
            if name != "online":
                cache = f"{name}_seed{seed}" if name.startswith("sample") else name
                c.kd.teacher_cache = str(caches[cache])
            run = root / f"{name}_seed{seed}"
            c = scaled(c, args.steps_scale)
            results.setdefault(name, {})[seed] = train_and_score(c, run, extra=kl)

    print(format_tables(sizes, results, seeds, k, vocab))
    (root / "summary.json").write_text(json.dumps({"bytes": sizes, "runs": results}) + "\n")
    return results


def format_tables(sizes: dict, results: dict, seeds: list[int], k: int, vocab: int) -> str:
    lines = [f"cache bytes per token ({vocab}-token vocabulary, {index_bits(vocab)}-bit ids):"]
    lines += [f"  {name}: {b:.1f}" for name, b in sizes.items()]
    lines += [
        f"  (a 152k vocabulary: top-{k} {topk_bytes_per_token(k, 152_064):.0f}; sampled K = {k}"
        f" at most {1 + k * (1 + index_bits(152_064) / 8):.0f})",
        "",
        f"seeds {seeds}; mean [95% t-interval]",
        "",
        "| condition | held-out KL to the teacher | held-out CE | accuracy |",
        "|---|---|---|---|",
    ]
    for name, runs in results.items():
        kl, ce, acc = ([runs[s][m] for s in seeds] for m in ("kl", "eval_ce", "accuracy"))
        lines.append(f"| {name} | {fmt_ci(kl, digits=4)} | {fmt_ci(ce)} | {fmt_ci(acc, 100, 1)} |")
    excess = paired_gains(results, "kl", "online")
    lines += ["", "| cache | KL excess over online KD |", "|---|---|"]
    lines += [f"| {name} | {fmt_ci(g, digits=4)} |" for name, g in excess.items()]
    sample = {s: results[f"sample{k}"][s]["kl"] for s in seeds}
    for name in results:
        if name.startswith("topk"):
            diff = [results[name][s]["kl"] - sample[s] for s in seeds]
            lines.append(f"\n{name} KL minus sample{k} KL (paired): {fmt_ci(diff, digits=4)}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
