"""Tokenize + pack throughput of the data pipeline on this machine's cores.

Generates a 20k-conversation chat file (built-in tasks joined into 1-4 turn
conversations, some with a system turn, so lengths spread like a chat mixture), then
measures, side by side:
  tokenize only      ExampleTokenizer over the records in one thread (the floor);
  pipeline           the grain pipeline end to end (shuffle, tokenize, pack, batch)
                     with its defaults, with reader threads, with worker processes,
                     with padding instead of packing, and a second (cached) epoch;
  packing bins       packing efficiency against num_packing_bins.
Prints examples/s and tokens/s (non-padding tokens) for each.

  python benchmarks/data_pipeline.py [--tokenizer DIR] [--max-length 1024] [--examples 20000]

Without --tokenizer it builds the built-in one; pass a real HF tokenizer folder to
measure a production vocabulary (its chat template is used).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

from kd_jax.data import (
    DataConfig,
    ExampleTokenizer,
    build_tokenizer,
    builtin,
    load_tokenizer,
    make_pipeline,
)


def write_chat_file(path: str, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    pool = []
    for family in builtin.FAMILIES:
        pool += builtin.generate(family, "train", 4000, seed)
    with open(path, "w") as f:
        for _ in range(n):
            messages = []
            if rng.random() < 0.3:
                messages.append({"role": "system", "content": "Answer with a short rationale ."})
            for p in rng.sample(pool, rng.choice([1, 1, 2, 3, 4])):
                for q, r in p.turns:
                    messages += [
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": r},
                    ]
            f.write(json.dumps({"messages": messages}) + "\n")


def run_pipeline(
    cfg: DataConfig, tokenizer, max_examples: int | None = None, skip_epochs: int = 0
) -> dict:
    """Rates over one epoch (after `skip_epochs` untimed ones), or its first max_examples."""
    p = make_pipeline(cfg, tokenizer=tokenizer)
    it = p.train_iterator(num_epochs=1 + skip_epochs)
    n_host = len(p.train_indices)
    while it.stats.examples < skip_epochs * n_host:
        next(it)
    before = it.stats.summary()
    t0 = time.perf_counter()
    for _ in it:
        if max_examples and it.stats.examples - before["examples"] >= max_examples:
            break
    dt = time.perf_counter() - t0
    s = {
        k: v - before[k] if k in ("examples", "tokens") else v
        for k, v in it.stats.summary().items()
    }
    return {
        "examples_per_s": s["examples"] / dt,
        "tokens_per_s": s["tokens"] / dt,
        "packing_efficiency": s["packing_efficiency"],
        "examples_per_row": s["examples_per_row"],
        "seconds": dt,
        "examples": s["examples"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default="")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--examples", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="kd_jax_bench_")
    tok_dir = args.tokenizer or build_tokenizer(os.path.join(work, "tok"))
    tok = load_tokenizer(tok_dir)
    data = os.path.join(work, "chat.jsonl")
    write_chat_file(data, args.examples)
    print(f"cores: {os.cpu_count()}  tokenizer: {tok_dir} (vocab {len(tok)})  file: {data}")

    records = [json.loads(line) for line in open(data)]
    fn = ExampleTokenizer(tok, max_length=args.max_length)
    t0 = time.perf_counter()
    n_tok = sum(len(fn(r)["inputs"]) for r in records)
    dt = time.perf_counter() - t0
    print(
        f"{'tokenize only (1 thread)':36s} {len(records) / dt:9.0f} ex/s {n_tok / dt:11.0f} tok/s"
        f"   mean length {n_tok / len(records):.0f} tokens"
    )

    base = dict(
        train=data, tokenizer=tok_dir, max_length=args.max_length, batch_size=args.batch_size
    )
    for name, extra in [
        ("pipeline, packing (defaults)", dict()),
        ("pipeline, packing, 2 reader threads", dict(num_threads=2)),
        ("pipeline, packing, 2 worker procs", dict(num_workers=2)),
        ("pipeline, padding", dict(packing=False)),
        ("pipeline, packing, cached epoch 2", dict(skip_epochs=1)),
    ]:
        skip = extra.pop("skip_epochs", 0)
        r = run_pipeline(DataConfig(**base, **extra), tok, skip_epochs=skip)
        print(
            f"{name:36s} {r['examples_per_s']:9.0f} ex/s {r['tokens_per_s']:11.0f} tok/s"
            f"   fill {r['packing_efficiency']:.3f}, {r['examples_per_row']:.2f} ex/row"
        )

    print("packing efficiency by num_packing_bins (first 2,000 examples):")
    for bins in (8, 16, 64, 256):
        cfg = DataConfig(**base, num_packing_bins=bins)
        r = run_pipeline(cfg, tok, max_examples=2000)
        print(
            f"  bins {bins:4d}: fill {r['packing_efficiency']:.3f}, {r['examples_per_s']:.0f} ex/s"
        )


if __name__ == "__main__":
    main()
