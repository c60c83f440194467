"""Model FLOPs of a train step and the peak they are measured against (MFU).

One counting, used by `kd-jax plan` (before a run) and by the training loop's logs:

- N = every weight a token is multiplied by: all non-embedding weights plus the output
  projection (vocab x hidden; a tied embedding counts here once). The input embedding
  is a lookup and costs nothing.
- Per token the student costs 6N (forward 2N, backward 4N), 4N under LoRA (no gradients
  for the frozen base), and the teacher 2N (forward only).
- Attention scores over the full [T, T] mask add 4 * layers * T * heads * head_dim per
  token forward, times 3 with a backward pass.

Peaks are dense bf16 FLOP/s per chip from the vendors' data sheets (kd_jax.accelerators).
On CPU there is no data sheet: the peak is the float32 matmul rate of one device,
measured once (`cpu_matmul_flops_per_s`).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp

from kd_jax import accelerators


def flop_params(total_params: int, vocab_size: int, hidden_size: int, tied: bool) -> int:
    """N: untied models hold an input table that is only looked up; tied ones use their
    one table as the output projection too, so it stays in N."""
    return total_params if tied else total_params - vocab_size * hidden_size


def step_flops(
    rule: str, n: int, layers: int, attention_width: int, length: int, tokens: int
) -> dict:
    """{"rule", "model", "attention"}: model FLOPs of one step by `rule` ("6N", "4N (LoRA)"
    or "2N": k*N per token) and attention-score FLOPs beside them."""
    k = int(rule[0])
    attention = 4 * layers * length * attention_width * tokens
    return {"rule": rule, "model": k * n * tokens, "attention": attention * (3 if k > 2 else 1)}


def model_rule(role: str, lora: bool) -> str:
    if role == "teacher":
        return "2N"
    return "4N (LoRA)" if lora else "6N"


def parts_flops(parts, role: str, length: int, tokens: int) -> dict:
    """`step_flops` of a model's ModelParts (trainable + frozen leaves) in `role`."""
    cfg = parts.cfg
    total = sum(math.prod(x.shape) for x in jax.tree.leaves((parts.trainable, parts.frozen)))
    n = flop_params(total, cfg.vocab_size, cfg.hidden_size, cfg.tie_word_embeddings)
    rule = model_rule(role, cfg.lora is not None)
    return step_flops(rule, n, cfg.num_layers, cfg.num_heads * cfg.head_dim, length, tokens)


def chip_peak_flops_per_s(device_kind: str) -> float | None:
    """The bf16 peak of one chip of this kind (kd_jax.accelerators' table), or None."""
    found = accelerators.chip_for_kind(device_kind)
    return None if found is None else found.peak_flops


@functools.cache
def cpu_matmul_flops_per_s(size: int = 1024, repeats: int = 5) -> float:
    """The best float32 [size, size] @ [size, size] rate of one CPU device (FLOP/s)."""
    dev = jax.local_devices()[0]
    a = jax.device_put(jnp.ones((size, size), jnp.float32), dev)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def peak_flops_per_s(device=None) -> tuple[float, str]:
    """(peak FLOP/s of one device, where it comes from) for MFU."""
    device = device or jax.local_devices()[0]
    if device.platform == "cpu":
        return cpu_matmul_flops_per_s(), "float32 matmul rate measured on this CPU"
    peak = chip_peak_flops_per_s(device.device_kind)
    if peak is None:
        return math.nan, f"no peak known for {device.device_kind!r} (mfu not reported)"
    return peak, f"bf16 peak of {device.device_kind}"
