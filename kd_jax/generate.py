"""`kd-jax generate`: sample continuations of a file of prompts with a trained model.

Prompts are a JSONL file of {"prompt": str} or {"messages": [...]} (rendered with the
tokenizer's chat template and a generation prompt), or a text file with one prompt per
line. Output: JSONL of {"prompt", "completion"} in input order.
"""

from __future__ import annotations

import json
from pathlib import Path

from kd_jax import sharding as shd
from kd_jax.data import DataError, load_tokenizer, render_chat
from kd_jax.errors import MissingFileError
from kd_jax.models.loader import load_trained, run_rules
from kd_jax.sampling import SamplingConfig, generate_text


def read_prompts(path: str | Path, tokenizer) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"Prompt file {path} does not exist; check --prompts.")
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


def generate_file(
    model_path: str | Path,
    prompts_path: str | Path,
    out: str | Path,
    *,
    checkpoint: str = "latest",
    tokenizer: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    mesh: dict | None = None,
    **sampling,
) -> int:
    """Writes one {"prompt", "completion"} line per prompt; returns how many. `mesh`
    ({axis: size}) loads the model on that mesh; on a mesh that spans hosts every host
    runs this, each feeds its rows of every batch, and process 0 writes."""
    on = shd.make_mesh(mesh) if mesh else None
    model, tok_dir = load_trained(model_path, which=checkpoint, mesh=on)
    tok = load_tokenizer(tokenizer or tok_dir)
    prompts = read_prompts(prompts_path, tok)
    cfg = SamplingConfig.for_tokenizer(tok, **sampling)
    rules = run_rules(model_path)
    outs = generate_text(model, tok, prompts, cfg, batch_size=batch_size, seed=seed, rules=rules)
    if not shd.is_writer():
        return len(outs)
    with open(out, "w") as f:
        for prompt, completion in zip(prompts, outs, strict=True):
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    return len(outs)
