"""Evaluation throughput: batched generation vs one example at a time, same model and tasks.

A tiny kd_jax decoder (untrained: the answers are noise, the cost is real) answers the
built-in test questions through `kd_jax.evaluation.evaluate`, with a plain jitted greedy
decoder written here: no KV cache, every step re-runs the whole [B, P + N] buffer (the
causal mask hides the slots not yet written). Prompt lengths are bucketed to multiples
of 16 and the batch shape is fixed, so both modes run already-compiled programs when
timed (a warm-up pass compiles them first). Prints examples/s for each and the ratio,
then the same comparison through `make_generate` (the KV-cache sampler, greedy).

Without a KV cache every example costs the same FLOPs batched or not, so on a CPU,
where the tiny model is compute-bound, batching gains little; the KV-cache sampler
does one token of work per step, so per-call overhead dominates and batching pays.

  python benchmarks/eval_throughput.py [--examples 64] [--batch-size 16] [--new-tokens 24]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kd_jax.data import build_tokenizer, load_tokenizer, write_builtin_data
from kd_jax.evaluation import evaluate, make_generate
from kd_jax.models import create_model, presets


def make_greedy(model, tokenizer, batch_size: int, new_tokens: int):
    graphdef, state = nnx.split(model)
    pad = tokenizer.pad_token_id or 0

    @jax.jit
    def decode(state, prompt_BxP, mask_BxP):
        b, p = prompt_BxP.shape
        tokens = jnp.concatenate([prompt_BxP, jnp.full((b, new_tokens), pad, jnp.int32)], 1)
        segments = jnp.concatenate([mask_BxP, jnp.ones((b, new_tokens), jnp.int32)], 1)
        positions = jnp.maximum(jnp.cumsum(segments, axis=1) - 1, 0)
        model = nnx.merge(graphdef, state)

        def step(i, tokens):
            logits = model(tokens, positions, segments)  # [B, P + N, V], full recompute
            nxt = jnp.argmax(logits[:, p - 1 + i], axis=-1).astype(jnp.int32)
            return jax.lax.dynamic_update_slice_in_dim(tokens, nxt[:, None], p + i, axis=1)

        return jax.lax.fori_loop(0, new_tokens, step, tokens)[:, p:]

    def generate(prompts: list[str]) -> list[str]:
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            rows = [tokenizer.encode(t, add_special_tokens=False) for t in chunk]
            rows += [rows[-1]] * (batch_size - len(rows))
            p = math.ceil(max(map(len, rows)) / 16) * 16
            toks, mask = (
                np.full((batch_size, p), pad, np.int32),
                np.zeros((batch_size, p), np.int32),
            )
            for i, r in enumerate(rows):
                toks[i, p - len(r) :], mask[i, p - len(r) :] = r, 1
            new = np.asarray(decode(state, jnp.asarray(toks), jnp.asarray(mask)))
            out += [tokenizer.decode(new[i], skip_special_tokens=True) for i in range(len(chunk))]
        return out

    return generate


def timed(label, tasks, generate, data_root, out, limit):
    kw = dict(data_root={"builtin": data_root}, limit=limit, progress=False)
    evaluate(tasks, generate, None, out, **kw)  # warm-up: compile every prompt bucket
    t = time.perf_counter()
    doc = evaluate(tasks, generate, None, out, **kw)
    secs = time.perf_counter() - t
    n = sum(e["n"] for e in doc["tasks"].values())
    print(f"{label:>24}: {n} examples in {secs:6.2f} s  = {n / secs:7.1f} examples/s")
    return n / secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=64, help="per task")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--preset", default="tiny-student")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_builtin_data(os.path.join(tmp, "data"), scale=0.2, formats=("chat",))
        tok = load_tokenizer(build_tokenizer(os.path.join(tmp, "tok"), per_family=200))
        model = create_model(presets.get(args.preset, vocab_size=len(tok)), seed=0)
        tasks = ["arith", "compare"]
        print(
            f"{args.preset}, {jax.devices()[0].platform}, {args.new_tokens} new tokens, "
            f"tasks {tasks}, {args.examples} examples each"
        )
        data, out = os.path.join(tmp, "data"), os.path.join(tmp, "out")
        one = timed(
            "one at a time",
            tasks,
            make_greedy(model, tok, 1, args.new_tokens),
            data,
            out,
            args.examples,
        )
        many = timed(
            f"batched ({args.batch_size})",
            tasks,
            make_greedy(model, tok, args.batch_size, args.new_tokens),
            data,
            out,
            args.examples,
        )
        print(f"{'batched / one at a time':>24}: {many / one:.1f}x  (no-cache greedy decode)")
        kw = dict(max_new_tokens=args.new_tokens, temperature=0.0)
        one = timed(
            "sampler, one at a time",
            tasks,
            make_generate(model, tok, batch_size=1, **kw),
            data,
            out,
            args.examples,
        )
        many = timed(
            f"sampler, batched ({args.batch_size})",
            tasks,
            make_generate(model, tok, batch_size=args.batch_size, **kw),
            data,
            out,
            args.examples,
        )
        print(f"{'batched / one at a time':>24}: {many / one:.1f}x  (KV-cache sampler)")


if __name__ == "__main__":
    main()
