"""Generated tokens/s: kd_jax's KV-cache sampler vs transformers' `generate` (PyTorch, CPU).

For each model shape, both sides decode the same random Llama model (built with
transformers, saved, loaded into kd_jax) greedily from the same prompts, batch and length,
and both use a KV cache. The first kd_jax call compiles; timings are medians of warm
repeats, alternating the two sides so that load from other processes falls on both alike.

Shapes: `tiny-teacher`, the largest built-in tiny model (the one the quickstart and the
miniature study sample from on CPU) at the built-in tokenizer's vocabulary, which the
>= 3x target is about; then two wider models with an 8k vocabulary, where the matmuls
grow to dominate both sides (the same f32 GEMMs), so the ratio shrinks.

    python benchmarks/generate_vs_transformers.py [--batch 16 --new 64 --shapes tiny-teacher]
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

from kd_jax.models import hf_io, presets
from kd_jax.sampling import SamplingConfig, generate

BUILTIN_VOCAB = 640  # kd_jax.data.builtin_tokenizer's default vocabulary size
SHAPES = {
    "tiny-teacher": dict(preset="tiny-teacher", vocab_size=BUILTIN_VOCAB),
    "d256-v8k": dict(
        preset="tiny-teacher",
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=768,
        num_heads=8,
        head_dim=32,
    ),
    "d512-v8k": dict(
        preset="tiny-teacher",
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=1536,
        num_heads=16,
        num_kv_heads=4,
        head_dim=32,
    ),
}


def hf_model(shape: dict) -> transformers.PreTrainedModel:
    fields = dict(shape)
    cfg = presets.get(fields.pop("preset"), **fields)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg.to_hf())).eval()


def measure(torch_model, args) -> dict:
    with tempfile.TemporaryDirectory() as d:
        torch_model.save_pretrained(d)
        model = hf_io.load(d)
    vocab = torch_model.config.vocab_size
    prompts = np.random.default_rng(0).integers(1, vocab, (args.batch, args.prompt))
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
                max_new_tokens=args.new,
                min_new_tokens=args.new,
                do_sample=False,
                pad_token_id=0,
            )
        return out[:, args.prompt :].numpy()

    same = float(np.mean(ours() == theirs()))  # also the warm-up (and kd_jax's compile)
    times = {"kd_jax": [], "transformers": []}
    for _ in range(args.repeats):
        for name, fn in (("kd_jax", ours), ("transformers", theirs)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    tokens = args.batch * args.new
    rate = {k: tokens / float(np.median(v)) for k, v in times.items()}
    return {"same": same, **rate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {list(SHAPES)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"batch {args.batch}, prompt {args.prompt}, {args.new} new tokens, greedy, f32; "
        f"{os.cpu_count()} CPU threads for each side"
    )
    print(
        f"{'shape':14s} {'params':>8s} {'kd_jax tok/s':>13s} {'transformers':>13s} "
        f"{'ratio':>6s}  same tokens"
    )
    for name in args.shapes.split(","):
        torch_model = hf_model(SHAPES[name])
        n_params = sum(t.numel() for t in torch_model.parameters())
        r = measure(torch_model, args)
        ratio = r["kd_jax"] / r["transformers"]
        target = "  (target >= 3x)" if name == "tiny-teacher" else ""
        print(
            f"{name:14s} {n_params / 1e6:7.1f}M {r['kd_jax']:13,.0f} {r['transformers']:13,.0f} "
            f"{ratio:5.2f}x  {r['same']:.1%}{target}"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
