"""`kd-jax generate`: sample continuations of a file of prompts with a trained model.

Prompts are a JSONL file of {"prompt": str} or {"messages": [...]} (rendered with the
tokenizer's chat template and a generation prompt), or a text file with one prompt per
line. Output: JSONL of {"prompt", "completion"} in input order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kd_jax.data import DataError, load_tokenizer, render_chat
from kd_jax.models_from_runs import load_trained, run_rules
from kd_jax.sampling import SamplingConfig, generate_text


def read_prompts(path: str | Path, tokenizer) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Prompt file {path} does not exist; check --prompts.")
    prompts = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line)
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{n}: not valid JSON ({e.msg}); fix or remove the line."
            ) from None
        if "messages" in rec:
            msgs = [m for m in rec["messages"] if m["role"] != "assistant"]
            prompts.append(render_chat(tokenizer, msgs, add_generation_prompt=True))
        elif "prompt" in rec:
            prompts.append(rec["prompt"])
        else:
            raise DataError(f"{path}:{n}: needs a 'prompt' or 'messages' field.")
    return prompts


def sampling_from_args(args, tokenizer) -> SamplingConfig:
    stops = tuple({t for t in (tokenizer.eos_token_id,) if t is not None})
    return SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_tokens=stops,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="kd-jax generate")
    p.add_argument("--model", required=True, help="HF folder or kd_jax workdir")
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    p.add_argument("--tokenizer", default=None, help="default: the model's own")
    p.add_argument("--prompts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model, tok_dir = load_trained(args.model, which=args.checkpoint)
    tokenizer = load_tokenizer(args.tokenizer or tok_dir)
    prompts = read_prompts(args.prompts, tokenizer)
    outs = generate_text(
        model,
        tokenizer,
        prompts,
        sampling_from_args(args, tokenizer),
        batch_size=args.batch_size,
        seed=args.seed,
        rules=run_rules(args.model),
    )
    with open(args.out, "w") as f:
        for prompt, completion in zip(prompts, outs, strict=True):
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    print(f"Wrote {len(outs)} completions to {args.out}")
    return 0
