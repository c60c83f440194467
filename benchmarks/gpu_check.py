"""GPU check: the fused attention kernel against the XLA path, and the KD step's speed.

    python benchmarks/gpu_check.py              # on a GPU: under 5 minutes on one H100
    python benchmarks/gpu_check.py --dry-run    # tiny shapes, any backend (CPU: Pallas
                                                # interpret mode), to check the script

1. Attention parity: `model.attention="cudnn"` (cuDNN flash without segment ids; the Pallas
   GPU flash kernel with segment ids: causal + GQA + packed rows + padding) against
   "xla", bfloat16 and float32, values and gradients, as the largest error relative to
   each tensor's largest magnitude, with fwd+bwd time of each.
2. The KD step (forward KL + CE, chunked loss, AdamW) with a 1B student and 8B teacher
   (llama-3.2-1b / llama-3.1-8b shapes, random weights, bf16 compute, full remat) on
   every local device (data parallel): tokens/s and MFU = model FLOPs per step (6 N_s +
   2 N_t per token, kd_jax.plan's N) / time / (devices x the chip's bf16 peak, from
   kd_jax.accelerators).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from configs import base
from kd_jax import accelerators, losses
from kd_jax import sharding as shd
from kd_jax import step as step_lib
from kd_jax.models import attention
from kd_jax.models.loader import build
from kd_jax.optim import learning_rate_schedule, make_optimizer

FULL = dict(
    b=4,
    t=4096,
    n=32,
    k=8,
    h=128,
    student="llama-3.2-1b",
    teacher="llama-3.1-8b",
    batch=8,
    length=2048,
    steps=5,
)
DRY = dict(
    b=2,
    t=64,
    n=4,
    k=2,
    h=16,
    student="tiny-student-xs",
    teacher="tiny-student",
    batch=4,
    length=32,
    steps=2,
)


def _timed(fn, repeats: int) -> tuple[float, object]:
    out = jax.block_until_ready(fn())  # compile and warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(fn())
    return (time.perf_counter() - t0) / repeats, out


def attention_rows(s: dict, repeats: int) -> list[tuple]:
    """(dtype, max rel error of out / dq / dk / dv, xla ms, cudnn ms) per dtype."""
    rng = jax.random.split(jax.random.key(0), 4)
    seg = np.ones((s["b"], s["t"]), np.int32)
    seg[:, s["t"] // 3 :] = 2  # two packed examples a row
    seg[0, : s["t"] // 8] = 0  # left padding in the first row
    seg = jnp.asarray(seg)
    real = (seg != 0)[:, :, None, None]
    rows = []
    for dtype in (jnp.bfloat16, jnp.float32):
        q = jax.random.normal(rng[0], (s["b"], s["t"], s["n"], s["h"]), dtype)
        k, v = (jax.random.normal(r, (s["b"], s["t"], s["k"], s["h"]), dtype) for r in rng[1:3])
        cot = jax.random.normal(rng[3], q.shape, jnp.float32)

        def grads(kind, q=q, k=k, v=v, cot=cot):
            def loss(q, k, v):
                out = attention.attend(kind, q, k, v, attention.prepare(kind, seg, seg.shape))
                return jnp.sum(jnp.where(real, out.astype(jnp.float32) * cot, 0.0)), out

            return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

        ref_fn, fused_fn = grads("xla"), grads("cudnn")
        t_ref, ((_, ref), ref_g) = _timed(lambda: ref_fn(q, k, v), repeats)  # noqa: B023
        t_fused, ((_, out), out_g) = _timed(lambda: fused_fn(q, k, v), repeats)  # noqa: B023
        mask = np.asarray(seg != 0)

        def rel(a, b):
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

        errors = [rel(np.asarray(out)[mask], np.asarray(ref)[mask])]
        errors += [rel(a, b) for a, b in zip(out_g, ref_g, strict=True)]
        rows.append((jnp.dtype(dtype).name, *errors, t_ref * 1e3, t_fused * 1e3))
    return rows


def _flop_params(parts) -> int:
    cfg = parts.cfg
    total = sum(x.size for x in jax.tree.leaves((parts.trainable, parts.frozen)))
    return total if cfg.tie_word_embeddings else total - cfg.vocab_size * cfg.hidden_size


def kd_step_row(s: dict, attention_kind: str) -> dict:
    mesh = shd.make_mesh({"data": -1})
    rules = shd.DEFAULT_RULES

    def section(preset, param_dtype):
        mc = base.model_config()
        mc.update(
            preset=preset,
            dtype="bfloat16",
            param_dtype=param_dtype,
            remat_policy="full",
            attention=attention_kind,
        )
        return mc

    common = dict(vocab_size=None, mesh=mesh, rules=rules)
    student = build(section(s["student"], "float32"), role="student", **common)
    teacher = build(section(s["teacher"], "bfloat16"), role="teacher", seed=1, **common)
    b, t = s["batch"] * mesh.size, s["length"]
    vocab = student.cfg.vocab_size
    tokens = np.random.default_rng(0).integers(0, vocab, (b, t + 1)).astype(np.int32)
    rows = shd.batch_sharding(mesh, rules)
    batch = {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "loss_mask": np.ones((b, t), np.float32),
        "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)),
        "segment_ids": np.ones((b, t), np.int32),
    }
    batch = {k: jax.device_put(v, rows) for k, v in batch.items()}
    optim = ConfigDict(base.get_config().optim.to_dict())
    opt, sched = make_optimizer(optim, 100), learning_rate_schedule(optim, 100)
    state = step_lib.init_state(student.trainable, opt)
    context = {"frozen": student.frozen, "teacher": (teacher.trainable, teacher.frozen)}
    step = jax.jit(
        shd.under_activation_sharding(
            functools.partial(
                step_lib.train_step,
                optimizer=opt,
                schedule=sched,
                grad_accum=1,
                student=student,
                teacher=teacher,
                loss_cfg=losses.KDLossConfig(kind="fkl", alpha=0.5),
                chunk_size=base.get_config().kd.chunk_size,
            ),
            mesh,
            rules,
        )
    )
    rng = jax.random.key(0)
    state, _ = step(state, batch, rng, context)  # compile
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(s["steps"]):
        state, metrics = step(state, batch, rng, context)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - t0) / s["steps"]
    flops = (6 * _flop_params(student) + 2 * _flop_params(teacher)) * b * t
    chip = accelerators.chip(mesh.devices.flat[0].device_kind)
    mfu = flops / seconds / (mesh.size * chip.peak_flops) if chip else float("nan")
    return dict(
        tokens_per_s=b * t / seconds,
        step_ms=seconds * 1e3,
        mfu=mfu,
        devices=mesh.size,
        kind=mesh.devices.flat[0].device_kind,
        loss=float(metrics["loss"]),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on any backend")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    s = DRY if args.dry_run else FULL
    if not args.dry_run and jax.default_backend() != "gpu":
        raise SystemExit("gpu_check: no GPU here; run with --dry-run to check the script.")
    print(
        f"attention [B={s['b']}, T={s['t']}, N={s['n']}, K={s['k']}, H={s['h']}], causal, "
        "packed + padded rows; error = max |fused - xla| / max |xla|"
    )
    print(f"{'dtype':>9} {'out':>9} {'dq':>9} {'dk':>9} {'dv':>9} {'xla ms':>9} {'fused ms':>9}")
    for dtype, *vals in attention_rows(s, 1 if args.dry_run else args.repeats):
        print(
            f"{dtype:>9} "
            + " ".join(f"{x:9.2e}" for x in vals[:4])
            + "".join(f" {x:9.2f}" for x in vals[4:])
        )
    kind = "cudnn" if jax.default_backend() == "gpu" else "xla"
    r = kd_step_row(s, kind)
    print(
        f"KD step {s['student']} <- {s['teacher']}, {s['batch']} x {s['length']} tokens "
        f"a device, attention={kind}, {r['devices']} x {r['kind']}:"
    )
    print(
        f"  {r['step_ms']:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, MFU "
        f"{r['mfu']:.1%}, loss {r['loss']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
