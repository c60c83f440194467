"""Peak memory and time of the chunked vs the dense KD loss + gradient (w.r.t. h_s and w_s).

Shapes are Qwen2.5-0.5B-like by default: hidden 896 for student and teacher, V = 151,936,
8,192 tokens (8 x 1,024), float32. Target: chunked <= 10% of dense memory at <= 1.2x its time.

Memory is read from each compiled program's memory analysis (argument + output + temp bytes),
so the dense program is measured at full size even where it cannot run here. Time is the
median of warm runs, dense and chunked alternating, at the largest token count (halving from
--tokens, at most --max-time-tokens) where the dense program fits in 40% of the free RAM;
the output says which size was timed.

  .venv/bin/python benchmarks/loss_memory.py                              # full (a few min)
  .venv/bin/python benchmarks/loss_memory.py --tokens 2048 --vocab 32768  # quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import losses

GB = 1e9


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=8192, help="B * T of the memory comparison")
    p.add_argument("--seq-len", type=int, default=1024, help="T; B = tokens / T")
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--student-hidden", type=int, default=896)
    p.add_argument("--teacher-hidden", type=int, default=896)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--also-chunk-sizes", default="512,1024", help="memory only, comma list")
    p.add_argument("--kind", default="fkl", choices=losses.KINDS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-time-tokens", type=int, default=1024, help="bounds the run time")
    return p.parse_args()


def loss_and_grad(fn, cfg, **kw):
    def step(h_s, w_s, h_t, w_t, targets, mask):
        def loss(h_s, w_s):
            terms = fn(h_s, w_s, h_t, w_t, targets, mask, cfg=cfg, **kw)
            return terms["loss_sum"] / terms["denominator"]

        return jax.value_and_grad(loss, argnums=(0, 1))(h_s, w_s)

    return jax.jit(step)


def input_specs(args, tokens):
    seq = min(args.seq_len, tokens)
    b, t, v = tokens // seq, seq, args.vocab
    f32, i32 = jnp.float32, jnp.int32
    return (
        jax.ShapeDtypeStruct((b, t, args.student_hidden), f32),  # h_s
        jax.ShapeDtypeStruct((args.student_hidden, v), f32),  # w_s
        jax.ShapeDtypeStruct((b, t, args.teacher_hidden), f32),  # h_t
        jax.ShapeDtypeStruct((args.teacher_hidden, v), f32),  # w_t
        jax.ShapeDtypeStruct((b, t), i32),  # targets
        jax.ShapeDtypeStruct((b, t), i32),  # mask
    )


def compiled_peak(compiled) -> dict:
    m = compiled.memory_analysis()
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
    return {"total": total, "temp": m.temp_size_in_bytes}


def random_inputs(specs, vocab, seed=0):
    """Unit hidden states and unembeddings scaled so that logits have std ~3."""
    rng = np.random.default_rng(seed)
    h_s, w_s, h_t, w_t, targets, mask = specs

    def normal(spec, scale=1.0):
        return jnp.asarray(rng.standard_normal(spec.shape, np.float32) * scale)

    return (
        normal(h_s),
        normal(w_s, 3 / np.sqrt(w_s.shape[0])),
        normal(h_t),
        normal(w_t, 3 / np.sqrt(w_t.shape[0])),
        jnp.asarray(rng.integers(0, vocab, targets.shape), jnp.int32),
        jnp.asarray(rng.random(mask.shape) < 0.9, jnp.int32),
    )


def free_ram_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    args = parse_args()
    cfg = losses.KDLossConfig(kind=args.kind)
    dense = loss_and_grad(losses.dense_kd_loss, cfg)
    chunked = loss_and_grad(losses.chunked_kd_loss, cfg, chunk_size=args.chunk_size)
    print(
        f"KD loss + grad, kind={args.kind}, V={args.vocab}, hidden {args.student_hidden}/"
        f"{args.teacher_hidden}, float32, chunk_size={args.chunk_size}, "
        f"device={jax.devices()[0].device_kind}"
    )

    specs = input_specs(args, args.tokens)
    mem_dense = compiled_peak(dense.lower(*specs).compile())
    mem_chunk = compiled_peak(chunked.lower(*specs).compile())
    print(f"\nmemory at {args.tokens} tokens (compiled memory analysis, arg + out + temp):")
    print(f"  dense    {mem_dense['total'] / GB:8.2f} GB   (temp {mem_dense['temp'] / GB:.2f})")
    print(f"  chunked  {mem_chunk['total'] / GB:8.2f} GB   (temp {mem_chunk['temp'] / GB:.2f})")
    print(
        f"  ratio chunked/dense  {mem_chunk['total'] / mem_dense['total']:.3f}"
        f"   (temp only {mem_chunk['temp'] / mem_dense['temp']:.3f})   target <= 0.10"
    )
    for c in [int(c) for c in args.also_chunk_sizes.split(",") if c]:
        other = loss_and_grad(losses.chunked_kd_loss, cfg, chunk_size=c)
        m = compiled_peak(other.lower(*specs).compile())
        print(
            f"  (chunk_size={c}: {m['total'] / GB:.2f} GB, "
            f"ratio {m['total'] / mem_dense['total']:.3f})"
        )

    # Time where dense fits: its memory scales with tokens, so halve until it does.
    budget = 0.4 * free_ram_bytes()
    tokens = min(args.tokens, args.max_time_tokens)
    why = f"capped by --max-time-tokens {args.max_time_tokens}" if tokens < args.tokens else ""
    while tokens > args.chunk_size:
        need = compiled_peak(dense.lower(*input_specs(args, tokens)).compile())["total"]
        if need <= budget:
            break
        why = f"dense at {tokens} tokens needs {need / GB:.1f} GB > 40% of free RAM"
        tokens //= 2
    specs = input_specs(args, tokens)
    inputs = random_inputs(specs, args.vocab)
    why = f" ({why})" if why else ""
    print(f"\ntime at {tokens} tokens{why}, median of {args.repeats} warm runs:")

    times = {"dense": [], "chunked": []}
    values = {}
    for name, fn in (("dense", dense), ("chunked", chunked)):
        values[name] = jax.block_until_ready(fn(*inputs))  # compile + warm
    for _ in range(args.repeats):
        for name, fn in (("dense", dense), ("chunked", chunked)):
            start = time.perf_counter()
            jax.block_until_ready(fn(*inputs))
            times[name].append(time.perf_counter() - start)
    t_dense, t_chunk = (statistics.median(times[k]) for k in ("dense", "chunked"))
    print(f"  dense    {t_dense:8.3f} s")
    print(f"  chunked  {t_chunk:8.3f} s")
    print(f"  ratio chunked/dense  {t_chunk / t_dense:.3f}   target <= 1.2")
    (loss_d, (gh_d, gw_d)), (loss_c, (gh_c, gw_c)) = values["dense"], values["chunked"]
    print(
        f"  same results: loss {float(loss_d):.6f} vs {float(loss_c):.6f}, "
        f"max |d w_s| diff {float(jnp.max(jnp.abs(gw_d - gw_c))):.2e}, "
        f"max |d h_s| diff {float(jnp.max(jnp.abs(gh_d - gh_c))):.2e}"
    )


if __name__ == "__main__":
    main()
