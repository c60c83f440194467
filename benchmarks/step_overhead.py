"""KD step overhead: time(KD step) / (time(SFT step) + time(teacher forward)), and the
step with an offline teacher cache: time(cached KD step) / time(SFT step).

Everything is measured in one run on the same shapes: the SFT step (student forward,
backward and update), the teacher's forward alone (hidden states and logits), the KD
step that does both plus the divergence, and the KD step reading the teacher's top-k
(k = --top-k) from the batch as `kd-jax cache-teacher` supplies it. Targets: <= 1.05
for the first ratio (fusing the teacher costs nothing beyond the two parts), <= 1.10 for
the second (a cached teacher costs little more than SFT). Also prints the cache's bytes
per token at this vocabulary.

    python benchmarks/step_overhead.py [--student tiny-student --teacher tiny-teacher]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from configs import base
from kd_jax import sharding as shd
from kd_jax import step_builder as build
from kd_jax.models import loader
from kd_jax.teacher_cache import index_bits


def interleaved_times(fns: dict, repeats: int) -> dict:
    """Wall times of each warm `fn()` over `repeats` rounds; in every round each runs once,
    so that load from other processes falls on all of them alike and a ratio can be
    taken round by round."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: np.asarray(t) for name, t in times.items()}


def random_batch(b: int, t: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (b, t + 1)).astype(np.int32)
    return {
        "inputs": jnp.asarray(tokens[:, :-1]),
        "targets": jnp.asarray(tokens[:, 1:]),
        "loss_mask": jnp.ones((b, t), jnp.float32),
        "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
        "segment_ids": jnp.ones((b, t), jnp.int32),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="tiny-student")
    p.add_argument("--teacher", default="tiny-teacher")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--chunk", type=int, default=base.get_config().kd.chunk_size)
    args = p.parse_args()

    mesh = shd.make_mesh({"data": -1})
    config = base.get_config()
    config.data.batch_size, config.data.max_length = args.batch, args.length
    config.kd.update(divergence="fkl", alpha=0.5, temperature=2.0, chunk_size=args.chunk)
    rules = build.rules_of(config)
    common = dict(role="x", vocab_size=args.vocab, mesh=mesh, rules=rules)
    student_mc, teacher_mc = base.model_config(), base.model_config()
    student_mc.preset, teacher_mc.preset = args.student, args.teacher
    student = loader.build(student_mc, **common)
    teacher = loader.build(teacher_mc, **{**common, "seed": 1})
    batch = random_batch(args.batch, args.length, args.vocab)
    chunk = args.chunk

    def make(method: str, teacher_parts, cache: str = ""):
        """The run's own train step (kd_jax.step_builder), its state threaded through."""
        c = ConfigDict(config.to_dict())
        c.method, c.kd.teacher_cache = method, cache
        prog = build.build_program(
            c,
            mesh=mesh,
            rules=rules,
            student=student,
            teacher=teacher_parts,
            batch_shardings=build.batch_shardings(c, mesh, rules),
        )
        holder = {"state": prog.init_state(student.trainable)}

        def step(batch):
            holder["state"], metrics = prog.train_step(holder["state"], batch, rng, prog.context)
            return metrics

        return step

    rng = jax.random.key(0)
    sft = make("sft", None)
    kd = make("kd", teacher)
    cached = make("kd", None, cache="(top-k from the batch)")
    rng_np = np.random.default_rng(1)
    cached_batch = {
        **batch,
        "teacher_topk_values": jnp.asarray(
            np.sort(rng_np.normal(size=(args.batch, args.length, args.top_k)), -1)[..., ::-1],
            jnp.float32,
        ),
        "teacher_topk_indices": jnp.asarray(
            rng_np.integers(0, args.vocab, (args.batch, args.length, args.top_k)), jnp.int32
        ),
    }

    @jax.jit
    def teacher_forward(params, frozen, batch):
        model = teacher.merge(params, frozen)
        h = model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"])
        return model.logits(h)

    times = interleaved_times(
        {
            "sft": lambda: sft(batch),
            "teacher": lambda: teacher_forward(teacher.trainable, teacher.frozen, batch),
            "kd": lambda: kd(batch),
            "cached": lambda: cached(cached_batch),
        },
        args.repeats,
    )
    t_sft, t_teacher, t_kd, t_cached = (
        float(np.median(times[k])) for k in ("sft", "teacher", "kd", "cached")
    )
    # Ratios are the median over rounds of each round's ratio (paired timings).
    ratio = float(np.median(times["kd"] / (times["sft"] + times["teacher"])))
    cached_ratio = float(np.median(times["cached"] / times["sft"]))
    tokens = args.batch * args.length
    print(
        f"shapes: batch {args.batch} x {args.length}, vocab {args.vocab}, student "
        f"{args.student}, teacher {args.teacher}, loss chunk {chunk} tokens, "
        f"{jax.device_count()} device(s), {args.repeats} rounds"
    )
    print(f"SFT step        {t_sft * 1e3:8.1f} ms  ({tokens / t_sft:,.0f} tokens/s)")
    print(f"teacher forward {t_teacher * 1e3:8.1f} ms")
    print(f"KD step         {t_kd * 1e3:8.1f} ms  ({tokens / t_kd:,.0f} tokens/s)")
    print(f"cached KD step  {t_cached * 1e3:8.1f} ms  (top-{args.top_k} from the batch)")
    print(f"ratio KD / (SFT + teacher forward) = {ratio:.3f}  (target <= 1.05)")
    print(f"ratio cached KD / SFT = {cached_ratio:.3f}  (target <= 1.10)")
    for vocab in (args.vocab, 151_936):
        bits = index_bits(vocab)
        per_token = args.top_k * 2 + -(-args.top_k * bits // 8)
        print(
            f"cache size at k={args.top_k}, vocab {vocab:,}: {per_token} bytes/token "
            "(float16 values, bit-packed ids)"
        )


if __name__ == "__main__":
    main()
