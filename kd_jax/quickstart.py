"""`kd-jax quickstart`: teacher, SFT student and KD student on built-in data, then a table.

Each run lives in WORKDIR/<name> and resumes if interrupted; re-running the command skips
finished runs. The table shows each model's held-out loss (cross-entropy on the built-in
comparison test set) and task accuracy (greedy answers, exact match of the final number).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kd_jax import train
from kd_jax.data import builtin_paths, is_correct, load_tokenizer, read_records, render_chat
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


def main(workdir: str | Path, steps_scale: float = 1.0) -> dict:
    from configs import quickstart as qs

    root = Path(workdir)
    results = {}
    for name in ("teacher", "sft", "kd"):
        config = qs.get_config(name)
        config.train.num_steps = max(1, int(config.train.num_steps * steps_scale))
        if name == "kd":
            config.teacher.workdir = str(root / "teacher")
        t0 = time.time()
        train.run(config, root / name)
        rows = [r for r in read_metrics(root / name) if "eval_ce" in r]
        test = builtin_paths.resolve(config.data.validation)
        acc = builtin_accuracy(root / name, test, config.eval.num_examples)
        results[name] = {
            "model": config.student.preset,
            "train_data": config.data.train,
            "steps": config.train.num_steps,
            "eval_ce": rows[-1]["eval_ce"] if rows else float("nan"),
            "accuracy": acc,
            "seconds": round(time.time() - t0, 1),
        }
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    return results


def format_table(results: dict) -> str:
    lines = [
        "| run | model | train data | steps | held-out CE | accuracy | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['model']} | {r['train_data']} | {r['steps']} | "
            f"{r['eval_ce']:.3f} | {r['accuracy']:.3f} | {r['seconds']} |"
        )
    return "\n".join(lines)
