"""What `kd-jax plan` adds for accelerators: the chip's verdict on a compiled step, the
loss loop's collectives, the attention kernel, and the on-policy sampler's program.

`accelerator_fields` reads the compiled train step (its memory analysis and optimized
HLO) against the chip table of kd_jax/accelerators.py; `sampler_memory` compiles the
on-policy sampler (`kd_jax.onpolicy.make_onpolicy_fn`, with its KV cache) the same way,
so a GKD run's second program is planned too.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from kd_jax import accelerators, compiled_loops
from kd_jax import sharding as shd
from kd_jax.data.packing import ROW_KEYS
from kd_jax.losses.chunked import LOOP_SCOPE
from kd_jax.models import attention
from kd_jax.onpolicy import make_onpolicy_fn
from kd_jax.sampling import SamplingConfig


def accelerator_fields(out: dict, config, mesh, topology, hlo: str, student) -> None:
    """The chip, its HBM and the verdict, the attention kernel, the loss loop's
    collectives, and the time floor at the chip's peak (accelerators.py's table)."""
    device = mesh.devices.flat[0]
    chip = accelerators.chip(topology or device.device_kind)
    x = out["xla"]
    with shd.activation_sharding(mesh, ()):
        kernel = attention.resolve(student.cfg.attention)
    loop = compiled_loops.loop_collectives(hlo, LOOP_SCOPE)
    out.update(
        topology=topology or f"cpu:{mesh.size}",
        device_kind=device.device_kind,
        platform=device.platform,
        peak_bytes_per_device=x["peak"],
        hbm_bytes_per_device=chip.hbm_bytes if chip else None,
        attention=kernel,
        loop_collectives=loop,
        # The loop's own collectives; the compiler may also schedule other code's
        # collectives into its body (listed with own=False, summed separately).
        loop_collective_bytes=sum(c["bytes"] for c in loop if c["own"]),
        loop_scheduled_in_bytes=sum(c["bytes"] for c in loop if not c["own"]),
        unembedding_bytes=student.cfg.hidden_size
        * student.cfg.vocab_size
        * jnp.dtype(student.cfg.param_dtype).itemsize,
    )
    out["fits"], out["verdict"] = None, "no chip table entry: compare the peak by hand"
    if chip:
        out["fits"], out["verdict"] = accelerators.verdict(
            x["peak"],
            chip.hbm_bytes,
            temporaries=x["temporaries"],
            arguments=x["arguments"],
            mesh=dict(mesh.shape),
            grad_accum=config.optim.grad_accum,
            remat_policy=config.student.remat_policy,
        )
        total = sum(f["model"] for f in out["flops"].values())
        out["time_floor_s"] = total / (mesh.size * chip.peak_flops)
        out["chip"] = dataclasses.asdict(chip)


def sampler_memory(config, mesh, rules, student, batch) -> dict:
    """XLA memory analysis of the on-policy sampler program (prompts of the batch's
    length, `gkd.max_new_tokens` new tokens, KV cache included)."""
    g = config.gkd
    cfg = SamplingConfig(
        max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p
    )
    rows = {k: batch[k] for k in ROW_KEYS}
    fn = make_onpolicy_fn(student, cfg, jax.tree.map(lambda x: x.sharding, rows), rules)
    rng = jax.eval_shape(lambda: jax.random.key(0))
    with shd.activation_sharding(mesh, rules):
        compiled = fn.lower(student.trainable, student.frozen, rows, rng).compile()
    mem = compiled.memory_analysis()
    out = {
        "arguments": mem.argument_size_in_bytes,
        "outputs": mem.output_size_in_bytes,
        "aliased": mem.alias_size_in_bytes,
        "temporaries": mem.temp_size_in_bytes,
        "max_new_tokens": g.max_new_tokens,
    }
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    return out


def size_text(n: float) -> str:
    for unit, size in (("GiB", accelerators.GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:9.2f} {unit}"
    return f"{n:9.0f} B  "


_size = size_text


def format_lines(p: dict) -> list[str]:
    """The plan's report lines for the fields above."""
    lines = []
    if p.get("hbm_bytes_per_device"):
        lines.append(
            f"chip {p['chip']['name']} ({p['topology']}): HBM "
            f"{_size(p['hbm_bytes_per_device']).strip()}, peak "
            f"{_size(p['peak_bytes_per_device']).strip()} per device: "
            f"{p['verdict']}; time floor at {p['chip']['peak_flops'] / 1e12:.0f} TFLOP/s "
            f"per chip {p['time_floor_s'] * 1e3:.1f} ms/step"
        )
    lines.append(
        f"attention: {p['attention']}; loss-chunk loop moves "
        f"{_size(p['loop_collective_bytes']).strip()} per iteration in "
        f"{sum(c['own'] for c in p['loop_collectives'])} collectives (plus "
        f"{_size(p['loop_scheduled_in_bytes']).strip()} scheduled in from other code)"
    )
    if "sampler" in p:
        sm = p["sampler"]
        lines.append(
            f"on-policy sampler program ({sm['max_new_tokens']} new tokens, KV cache): peak "
            f"{_size(sm['peak']).strip()} per device (temporaries "
            f"{_size(sm['temporaries']).strip()})"
        )
    return lines
