"""Generated tokens/s: kd_jax's KV-cache sampler vs transformers' `generate` (PyTorch, CPU).

Both decode the same random Llama-shaped model (built with transformers, saved, loaded
into kd_jax) greedily from the same prompts, batch and length, and both use a KV cache.
The first kd_jax call compiles; timings are medians of warm repeats, alternating the
two sides so that load from other processes falls on both alike. Target: >= 3x.

    python benchmarks/generate_vs_transformers.py [--batch 16 --new 64 --hidden 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from kd_jax import hf
from kd_jax.sampling import SamplingConfig, generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    cfg = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32,
        num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=1024,
    )  # fmt: skip
    torch.manual_seed(0)
    torch_model = transformers.LlamaForCausalLM(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        torch_model.save_pretrained(d)
        model = hf.load(d)

    prompts = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.prompt))
    scfg = SamplingConfig(max_new_tokens=args.new)
    mask = jnp.ones(prompts.shape, jnp.int32)

    def ours():
        out, _ = generate(model, jnp.asarray(prompts), mask, jax.random.key(0), scfg)
        return np.asarray(out)

    def theirs():
        with torch.no_grad():
            out = torch_model.generate(
                torch.as_tensor(prompts),
                attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                pad_token_id=0,
            )  # fmt: skip
        return out[:, args.prompt :].numpy()

    same = np.mean(ours() == theirs())  # also the warm-up (and kd_jax's compile)
    times = {"kd_jax": [], "transformers": []}
    for _ in range(args.repeats):
        for name, fn in (("kd_jax", ours), ("transformers", theirs)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    tokens = args.batch * args.new
    rate = {k: tokens / float(np.median(v)) for k, v in times.items()}
    print(f"model: Llama d={args.hidden} x {args.layers} layers, vocab {args.vocab}; batch "
          f"{args.batch}, prompt {args.prompt}, {args.new} new tokens, greedy; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"same tokens as transformers: {same:.1%}")
    for k, v in rate.items():
        print(f"{k:13s} {v:10,.0f} generated tokens/s")
    print(f"ratio kd_jax / transformers = {rate['kd_jax'] / rate['transformers']:.2f}x "
          "(target >= 3x)")  # fmt: skip


if __name__ == "__main__":
    main()
