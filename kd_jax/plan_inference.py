"""`kd-jax plan --job eval|generate|synthesize|cache-teacher`: an inference job's program
compiled ahead of time, with its per-device memory and the chip's verdict.

    kd-jax plan --config configs/study_a_data_size.py --job synthesize \
        --topology v5p:4x4x4 --mesh fsdp=16,tensor=4 [--batch-size 32] \
        [--prompt-length 1024] [--max-new-tokens 1024]

The program is the one the job runs: the KV-cache sampler (`kd_jax.sampling.generate_tokens`:
prefill of [batch, prompt length] left-padded prompts, then `max_new_tokens` single-token
steps) for eval, generate and synthesize, and the chunked top-k of the teacher over
[batch, data.max_length] rows (`kd_jax.teacher_cache_job.topk_fn`) for cache-teacher.
The model is the config's teacher for synthesize and cache-teacher and its student for
eval and generate, loaded as `kd_jax.models.loader.build` loads it (abstract: sharded
ShapeDtypeStructs, no weight allocated), on the config's mesh with its rules table, and
the program is traced with activations and the KV cache split by that table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kd_jax import accelerators
from kd_jax import sharding as shd
from kd_jax import step_builder as build
from kd_jax.models import loader
from kd_jax.plan_programs import size_text
from kd_jax.sampling import SamplingConfig, generate_tokens

# job -> the config section whose model it runs
JOBS = {
    "eval": "student",
    "generate": "student",
    "synthesize": "teacher",
    "cache-teacher": "teacher",
}


def plan_job(
    config,
    job: str,
    devices=None,
    topology: str | None = None,
    *,
    batch_size: int = 32,
    prompt_length: int = 0,
    max_new_tokens: int = 128,
    k: int = 64,
) -> dict:
    """Compiles `job`'s program for `config`'s model on `devices`; returns the numbers."""
    role = JOBS[job]
    rules = build.rules_of(config)
    mesh = shd.make_mesh(dict(config.mesh), devices)
    section = config.teacher if role == "teacher" else config.student
    parts = loader.build(section, role=role, mesh=mesh, rules=rules, abstract=True)
    length = prompt_length or config.data.max_length
    rows = shd.batch_sharding(mesh, rules, rows=batch_size)
    tokens = jax.ShapeDtypeStruct((batch_size, length), jnp.int32, sharding=rows)
    if job == "cache-teacher":
        program, args, shape = _topk_program(parts, config, rows, tokens, k, mesh, rules)
    else:
        cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0)

        def sample(trainable, frozen, prompts, mask, rng):
            return generate_tokens(parts.merge(trainable, frozen), prompts, mask, rng, cfg)

        program = jax.jit(shd.under_activation_sharding(sample, mesh, rules))
        rng = jax.eval_shape(lambda: jax.random.key(0))
        args = (parts.trainable, parts.frozen, tokens, tokens, rng)
        shape = f"{batch_size} prompts x {length} tokens, {max_new_tokens} new tokens"
    with shd.activation_sharding(mesh, rules):
        mem = program.lower(*args).compile().memory_analysis()
    x = {
        "arguments": mem.argument_size_in_bytes,
        "outputs": mem.output_size_in_bytes,
        "aliased": mem.alias_size_in_bytes,
        "temporaries": mem.temp_size_in_bytes,
    }
    x["peak"] = x["arguments"] + x["outputs"] - x["aliased"] + x["temporaries"]
    params = sum(a.size for a in jax.tree.leaves((parts.trainable, parts.frozen)))
    weights = sum(_shard_bytes(a) for a in jax.tree.leaves((parts.trainable, parts.frozen)))
    device = mesh.devices.flat[0]
    chip = accelerators.chip(topology or device.device_kind)
    out = {
        "job": job,
        "model": section.preset or section.hf_path or section.workdir,
        "role": role,
        "params": params,
        "devices": mesh.size,
        "mesh": dict(mesh.shape),
        "topology": topology or f"cpu:{mesh.size}",
        "program": shape,
        "weights_per_device": weights,
        "xla": x,
        "hbm_bytes_per_device": chip.hbm_bytes if chip else None,
    }
    out["fits"], out["verdict"] = _verdict(x, chip, dict(mesh.shape), batch_size)
    return out


def _shard_bytes(a) -> int:
    n = 1
    for d in a.sharding.shard_shape(a.shape):
        n *= d
    return n * jnp.dtype(a.dtype).itemsize


def _topk_program(parts, config, rows, tokens, k, mesh, rules):
    from kd_jax.teacher_cache_job import topk_fn

    row = lambda dtype: jax.ShapeDtypeStruct(tokens.shape, dtype, sharding=rows)  # noqa: E731
    batch = {
        "inputs": tokens,
        "targets": tokens,
        "positions": row(jnp.int32),
        "segment_ids": row(jnp.int32),
        "loss_mask": row(jnp.float32),
    }
    fn = topk_fn(parts, k, config.kd.chunk_size, mesh, rules)
    shape = f"{tokens.shape[0]} rows x {tokens.shape[1]} tokens, top-{k}"
    return fn, (parts.trainable, parts.frozen, batch, None), shape


def _verdict(x: dict, chip, mesh: dict, batch_size: int) -> tuple[bool | None, str]:
    if chip is None:
        return None, "no chip table entry: compare the peak by hand"
    if x["peak"] <= chip.hbm_bytes:
        return True, "fits"
    tries = []
    if x["temporaries"] > 0 and batch_size > 1:
        tries.append(f"--batch-size {max(1, batch_size // 2)}")
    tries.append(f"fsdp={mesh.get('fsdp', 1) * 2}")
    return False, "does not fit: try " + " / ".join(tries)


def format_job(p: dict) -> str:
    mesh = " ".join(f"{k}={v}" for k, v in p["mesh"].items())
    x = p["xla"]
    lines = [
        f"kd-jax plan --job {p['job']}: {p['devices']} devices ({p['topology']}), mesh {mesh}",
        f"  {p['role']} {p['model']}: {p['params'] / 1e9:.2f}B params; {p['program']}",
        f"  weights per device         {size_text(p['weights_per_device'])}",
        "per-device memory, XLA memory analysis of the compiled program:",
        f"  arguments                  {size_text(x['arguments'])}",
        f"  outputs                    {size_text(x['outputs'])}",
        f"  temporaries                {size_text(x['temporaries'])}",
        f"  peak = args + outputs - aliased + temporaries {size_text(x['peak']).strip()}",
    ]
    if p["hbm_bytes_per_device"]:
        lines.append(
            f"HBM {size_text(p['hbm_bytes_per_device']).strip()} per device: {p['verdict']}"
        )
    else:
        lines.append(p["verdict"])
    lines += [f"note: {n}" for n in p.get("notes", [])]
    return "\n".join(lines)
