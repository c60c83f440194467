"""`kd-jax quickstart`: a teacher, an SFT and a KD student from tiny bases, then a table.

The runs are configs/quickstart.py's. Each lives in WORKDIR/<name> and resumes if
interrupted; re-running the command skips finished runs. The bases are the shipped ones
(kd_jax.models.builtin_bases); `--pretrain` trains them in WORKDIR first (configs/
pretrain.py, about 11 minutes on 2 cores), and `--bases DIR` takes those a `--pretrain` run
trained in DIR. The table shows each model's held-out loss (cross-entropy on the built-in
comparison test set) and task accuracy (greedy answers on its first 200 questions, exact
match of the number).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from kd_jax import sweep, train
from kd_jax.data import builtin_paths, is_correct, load_tokenizer, read_records, render_chat
from kd_jax.data.synthetic_tasks import DEFAULT_SIZES
from kd_jax.errors import UserError
from kd_jax.metrics_log import read_metrics
from kd_jax.models import builtin_bases
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
    workdir: str | Path,
    steps_scale: float = 1.0,
    seed: int = 0,
    bases: str | Path | None = None,
    pretrain: bool = False,
) -> dict:
    """Teacher, SFT and KD students from the shipped bases (kd_jax.models.builtin_bases); with
    `pretrain`, from bases trained here first; with `bases`, from those a `--pretrain` run
    trained in that folder. Each run once: a finished run's row is read back from
    WORKDIR/results.json."""
    from configs import pretrain as pretrain_configs
    from configs import quickstart as qs

    if pretrain and bases:
        raise UserError(
            "--pretrain trains the bases in WORKDIR and --bases reads them from another "
            "folder; give one of the two."
        )
    root = Path(workdir)
    base_root = root if pretrain else Path(bases) if bases else None
    saved = root / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    theirs = base_root / "results.json" if bases else None
    shared = json.loads(theirs.read_text()) if theirs and theirs.exists() else {}
    task = qs.get_config("sft")
    test, num_examples = builtin_paths.resolve(task.data.validation), task.eval.num_examples

    def record(name, model, data, steps, weights, seconds=math.nan, ce=math.nan) -> None:
        """One row of the table (a base's CE is NaN: its validation is its own mixture's)."""
        accuracy = builtin_accuracy(weights, test, num_examples)
        results[name] = dict(
            model=model, train_data=data, steps=steps, eval_ce=ce, accuracy=accuracy,
            seconds=seconds,
        )  # fmt: skip
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results, indent=2) + "\n")

    starts = {}  # model -> the config.student keys its post-training starts from
    for model in (qs.TEACHER, qs.STUDENT):
        name = f"base-{model}"
        if base_root is None:  # the shipped base
            starts[model] = {"hf_path": builtin_bases.path(model), "workdir": ""}
            if name not in results:
                steps = builtin_bases.manifest()[model]["steps"]
                record(name, model, "built-in base", steps, builtin_bases.path(model))
            continue
        config = _seeded(pretrain_configs.get_config(model), seed, steps_scale)
        wd = base_root / name
        starts[model] = {"hf_path": "", "workdir": str(wd)}
        done = sweep.is_finished(wd, config.train.num_steps)
        if not done and not pretrain:
            raise UserError(
                f"{wd} holds no finished base; train the bases there with "
                f"`kd-jax quickstart --pretrain --workdir {base_root}`."
            )
        if done and name in results:
            continue
        if done and name in shared:  # a base of the --bases folder, as measured there
            results[name] = shared[name]
            continue
        # A base trained before, by `kd-jax train`, is not timed here.
        seconds = math.nan if done else _timed_run(config, wd)
        record(name, model, "pretraining mixture", config.train.num_steps, wd, seconds)
    for name in ("teacher", "sft", "kd"):
        config = _seeded(qs.get_config(name), seed, steps_scale)
        config.student.update(starts[qs.TEACHER if name == "teacher" else qs.STUDENT])
        if name == "kd":
            config.teacher.workdir = str(root / "teacher")
        wd = root / name
        done = sweep.is_finished(wd, config.train.num_steps)
        if done and name in results:
            continue
        seconds = math.nan if done else _timed_run(config, wd)
        ce = [r for r in read_metrics(wd) if "eval_ce" in r][-1]["eval_ce"]
        model, data = config.student.preset, describe_data(config)
        record(name, model, data, config.train.num_steps, wd, seconds, ce)
    print(format_table(results))
    return results


def _seeded(config, seed: int, steps_scale: float):
    config.seed = config.data.seed = seed
    config.train.num_steps = max(1, int(config.train.num_steps * steps_scale))
    return config


def _timed_run(config, workdir: Path) -> float:
    t0 = time.time()
    train.run(config, workdir)
    return round(time.time() - t0, 1)


def describe_data(config) -> str:
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
