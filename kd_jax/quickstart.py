"""`kd-jax quickstart`: tiny bases, a teacher, an SFT and a KD student, then a table.

The runs are configs/quickstart.py's. Each lives in WORKDIR/<name> and resumes if
interrupted; re-running the command skips finished runs. `--bases DIR` takes the two
pretrained bases from DIR (another quickstart's workdir) instead of training them. The
table shows each model's held-out loss (cross-entropy on the built-in comparison test set)
and task accuracy (greedy answers on its first 200 questions, exact match of the number).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from kd_jax import sweep, train
from kd_jax.data import builtin_paths, is_correct, load_tokenizer, read_records, render_chat
from kd_jax.data.synthetic_tasks import DEFAULT_SIZES
from kd_jax.metrics_log import read_metrics
from kd_jax.models.loader import load_trained
from kd_jax.sampling import SamplingConfig, generate_text


def chat_prompts(records: list[dict], tokenizer) -> list[str]:
    """Each record's conversation up to (not including) the last assistant turn."""
    out = []
    for r in records:
        msgs = r["messages"]
        upto = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        out.append(render_chat(tokenizer, msgs[:upto], add_generation_prompt=True))
    return out


def builtin_accuracy(workdir, test_file: str, num_examples: int, max_new_tokens: int = 64):
    """Greedy accuracy of a run's student on the first `num_examples` of a built-in test."""
    model, tok_dir = load_trained(workdir)
    tokenizer = load_tokenizer(tok_dir)
    source = read_records(test_file)
    records = [source[i] for i in range(min(num_examples, len(source)))]
    cfg = SamplingConfig.for_tokenizer(tokenizer, max_new_tokens=max_new_tokens)
    outs = generate_text(model, tokenizer, chat_prompts(records, tokenizer), cfg, batch_size=100)
    return sum(is_correct(o, r["answer"]) for o, r in zip(outs, records, strict=True)) / len(outs)


def main(
    workdir: str | Path, steps_scale: float = 1.0, seed: int = 0, bases: str | Path | None = None
) -> dict:
    """Bases (in `bases`, default WORKDIR; trained there when missing), teacher, SFT and KD
    students, each run once: a finished run's row is read back from WORKDIR/results.json."""
    from configs import pretrain
    from configs import quickstart as qs

    root = Path(workdir)
    base_root = Path(bases) if bases else root
    saved = root / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    theirs = base_root / "results.json"
    shared = json.loads(theirs.read_text()) if bases and theirs.exists() else {}
    task = qs.get_config("sft")
    test, num_examples = builtin_paths.resolve(task.data.validation), task.eval.num_examples
    runs = [(f"base-{m}", pretrain.get_config(m), base_root) for m in (qs.TEACHER, qs.STUDENT)]
    runs += [(name, qs.get_config(name), root) for name in ("teacher", "sft", "kd")]
    for name, config, parent in runs:
        config.seed = config.data.seed = seed
        config.train.num_steps = max(1, int(config.train.num_steps * steps_scale))
        if not name.startswith("base-"):
            model = qs.TEACHER if name == "teacher" else qs.STUDENT
            config.student.workdir = str(base_root / f"base-{model}")
        if name == "kd":
            config.teacher.workdir = str(root / "teacher")
        wd = parent / name
        done = sweep.is_finished(wd, config.train.num_steps)
        if done and name in results:
            continue
        if done and name in shared:  # a base of the --bases folder, as measured there
            results[name] = shared[name]
            continue
        seconds = float("nan")  # a base trained before, by `kd-jax train`: not timed here
        if not done:
            t0 = time.time()
            train.run(config, wd)
            seconds = round(time.time() - t0, 1)
        rows = [r for r in read_metrics(wd) if "eval_ce" in r]
        results[name] = {
            "model": config.student.preset,
            "train_data": describe_data(name, config),
            "steps": config.train.num_steps,
            # A base's validation is its own mixture's; the table shows the task's only.
            "eval_ce": float("nan") if name.startswith("base-") else rows[-1]["eval_ce"],
            "accuracy": builtin_accuracy(wd, test, num_examples),
            "seconds": seconds,
        }
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    return results


def describe_data(name: str, config) -> str:
    if name.startswith("base-"):
        return "pretraining mixture"
    n = config.data.num_examples or DEFAULT_SIZES["compare"]["train"]
    return f"compare, {n:,} questions" + (", answers unused" if config.gkd.lambda_ > 0 else "")


def format_table(results: dict) -> str:
    lines = [
        "| run | model | train data | steps | held-out CE | accuracy | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ce = "" if math.isnan(r["eval_ce"]) else f"{r['eval_ce']:.3f}"  # a base's: not shown
        took = "" if math.isnan(r["seconds"]) else r["seconds"]
        lines.append(
            f"| {name} | {r['model']} | {r['train_data']} | {r['steps']} | "
            f"{ce} | {r['accuracy']:.3f} | {took} |"
        )
    return "\n".join(lines)
