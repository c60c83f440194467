"""`kd-jax plan`: the per-device memory and FLOPs of a run's train step, before renting.

    kd-jax plan --config configs/base.py --config.method=kd \
        --config.student.preset=llama-3.2-1b --config.teacher.preset=llama-3.1-70b \
        --devices 64 --mesh fsdp=64        # axes not named are 1; default: config.mesh

The real train step (`kd_jax.step_builder.build_program`, as `kd_jax.train.run` builds it) is
lowered and compiled ahead of time for the real model shapes on N simulated CPU devices.
No weight is allocated: student and teacher are `nnx.eval_shape` models whose leaves are
ShapeDtypeStructs carrying their NamedShardings, the optimizer state comes from
`jax.eval_shape`, and the batch is [data.batch_size, data.max_length] of the pipeline's
dtypes. Models come from the config as in training (`hf_path` reads only config.json,
`workdir` only the run's config.json, `preset` names a shape); the vocabulary is the
model's own, so no tokenizer or data is read.

Printed per device: parameter and optimizer bytes from shapes and shardings, and XLA's
memory analysis of the compiled step (arguments, outputs, donated aliases, temporaries).
XLA's CPU compiler stands in for the TPU/GPU one: the sharding and the arguments are
exact, while temporaries depend on the backend's fusion and layout choices. XLA:CPU has
no bfloat16 matmul and converts such weights to float32 (the plan keeps that to one layer
at a time, see `_device_env`), so bfloat16 runs read somewhat high: keep headroom.
The step is traced with activations pinned by the rules table (`shd.activation_sharding`).

Model FLOPs per step are counted by `kd_jax.flops` (the same counting as the training
logs' MFU): N = every weight a token is multiplied by; the student costs 6N per token
(4N under LoRA), the teacher 2N; attention scores over the full [T, T] mask are shown
separately.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

# Importing JAX does not start its backend: `main` can still hand the work to a child
# process that starts with the device count asked for.
import jax
from ml_collections import ConfigDict

from kd_jax import flops, plan_programs
from kd_jax import sharding as shd
from kd_jax import step_builder as build
from kd_jax.config_checks import validate
from kd_jax.data import builtin_paths
from kd_jax.models import loader

DEVICE_FLAG = "--xla_force_host_platform_device_count"
GiB = 1024**3


@dataclasses.dataclass
class ModelSummary:
    name: str
    params: int  # all weights
    flop_params: int  # N of the module docstring
    trainable: int
    bytes_per_device: int  # trainable + frozen, as sharded
    layers: int
    attention_width: int  # heads * head_dim


# ---- simulated devices -------------------------------------------------------------------


def device_env(n: int) -> dict:
    """This environment with XLA's host platform split into n CPU devices, CPU only."""
    env = dict(os.environ)
    flags = re.sub(rf"{DEVICE_FLAG}=\S+", "", env.get("XLA_FLAGS", "")).split()
    # XLA:CPU has no bfloat16 matmul: it converts weights to float32, and loop-invariant
    # code motion then hoists that conversion out of the layer scan, holding a float32
    # copy of every bfloat16 weight stack that TPUs and GPUs never make. Without the pass
    # the copy is one layer's, converted inside the loop.
    licm = "while-loop-invariant-code-motion"
    disabled = [f for f in flags if f.startswith("--xla_disable_hlo_passes=")]
    if disabled:
        flags[flags.index(disabled[0])] = f"{disabled[0]},{licm}"
    else:
        flags.append(f"--xla_disable_hlo_passes={licm}")
    env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_FLAG}={n}"])
    env["JAX_PLATFORMS"] = "cpu"
    # A plan compiles once; caching its large CPU executables would only fill the disk.
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


def has_devices(n: int) -> bool:
    """True when this process's JAX is (or will be) a CPU backend with exactly n devices."""
    env = os.environ
    count = re.search(rf"{DEVICE_FLAG}=(\d+)", env.get("XLA_FLAGS", ""))
    return env.get("JAX_PLATFORMS") == "cpu" and count is not None and int(count.group(1)) == n


# ---- sizes ----------------------------------------------------------------------------


def _bytes(tree, per_device: bool = True) -> int:
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if per_device else x.shape
        total += math.prod(shape) * x.dtype.itemsize
    return total


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def summarize(name: str, parts) -> ModelSummary:
    cfg = parts.cfg
    total = _count(parts.trainable) + _count(parts.frozen)
    return ModelSummary(
        name=name,
        params=total,
        flop_params=flops.flop_params(
            total, cfg.vocab_size, cfg.hidden_size, cfg.tie_word_embeddings
        ),
        trainable=_count(parts.trainable),
        bytes_per_device=_bytes(parts.trainable) + _bytes(parts.frozen),
        layers=cfg.num_layers,
        attention_width=cfg.num_heads * cfg.head_dim,
    )


# ---- the plan ----------------------------------------------------------------------------


def plan(config, devices=None, topology: str | None = None) -> dict:
    """Compiles the train step of `config` on `devices` (default: the current ones; the
    abstract TPU devices of `topology`); returns the numbers."""
    _validate(config)
    rules = build.rules_of(config)
    mesh = shd.make_mesh(dict(config.mesh), devices)
    common = dict(mesh=mesh, rules=rules, abstract=True)
    student = loader.build(config.student, role="student", **common)
    teacher = None
    if config.method == "kd" and not config.kd.teacher_cache:
        teacher = loader.build(config.teacher, role="teacher", **common)
    build.check_vocab(config, student.cfg.vocab_size, student, teacher)
    batch, notes = _abstract_batch(config, mesh, rules)
    state, mem, hlo = _compile(config, mesh, rules, student, teacher, batch)

    s = summarize(_name(config.student), student)
    b, t = config.data.batch_size, config.data.max_length
    lora = student.cfg.lora is not None
    out = {
        "devices": mesh.size,
        "mesh": dict(mesh.shape),
        "method": config.method,
        "tokens_per_step": b * t,
        "batch": [b, t],
        "grad_accum": config.optim.grad_accum,
        "student": dataclasses.asdict(s),
        "bytes": {
            "student_trainable": _bytes(student.trainable),
            "student_frozen": _bytes(student.frozen),
            "optimizer": _bytes(state["opt_state"]),
            "teacher": 0,
            "batch": _bytes(batch),
        },
        "xla": {
            "arguments": mem.argument_size_in_bytes,
            "outputs": mem.output_size_in_bytes,
            "aliased": mem.alias_size_in_bytes,
            "temporaries": mem.temp_size_in_bytes,
        },
        "flops": {"student": _flops("4N (LoRA)" if lora else "6N", s, t, b * t)},
        "notes": notes,
    }
    x = out["xla"]
    x["peak"] = x["arguments"] + x["outputs"] - x["aliased"] + x["temporaries"]
    if teacher is not None:
        ts = summarize(_name(config.teacher), teacher)
        out["teacher"] = dataclasses.asdict(ts)
        out["bytes"]["teacher"] = ts.bytes_per_device
        out["flops"]["teacher"] = _flops("2N", ts, t, b * t)
    plan_programs.accelerator_fields(out, config, mesh, topology, hlo, student)
    if config.gkd.lambda_ > 0:
        out["sampler"] = plan_programs.sampler_memory(config, mesh, rules, student, batch)
    return out


def _abstract_batch(config, mesh, rules) -> tuple[dict, list[str]]:
    """The batch the pipeline yields: [B, T] rows, plus the cached teacher top-k [B, T, k]
    when `kd.teacher_cache` stands in for the teacher."""
    notes, k = [], 0
    if config.kd.teacher_cache:
        meta = Path(builtin_paths.resolve(config.kd.teacher_cache)) / "meta.json"
        if meta.exists():
            k = json.loads(meta.read_text())["k"]
        else:
            k = 64
            notes.append(f"{meta} not found: planned for a top-{k} teacher cache")
    return build.abstract_batch(config, mesh, rules, topk=k), notes


def _compile(config, mesh, rules, student, teacher, batch):
    """(abstract train state, XLA memory stats, optimized HLO text) of the step
    `kd_jax.train.run` builds, compiled for the mesh's devices (CPU, or a TPU topology)."""
    program = build.build_program(
        config,
        mesh=mesh,
        rules=rules,
        student=student,
        teacher=teacher,
        batch_shardings=jax.tree.map(lambda x: x.sharding, batch),
    )
    rng = jax.eval_shape(lambda: jax.random.key(0))
    # Activations follow the rules table only while `activation_sharding` is active
    # (`shd.constrain` in model code is a no-op otherwise, and XLA then tends to gather
    # the whole batch on every fsdp device).
    with shd.activation_sharding(mesh, rules):
        lowered = program.train_step.lower(program.abstract_state, batch, rng, program.context)
        compiled = lowered.compile()
    return program.abstract_state, compiled.memory_analysis(), compiled.as_text()


def _flops(rule: str, m: ModelSummary, length: int, tokens: int) -> dict:
    """Model FLOPs of one step by `rule`, counted by `kd_jax.flops.step_flops`."""
    return flops.step_flops(rule, m.flop_params, m.layers, m.attention_width, length, tokens)


def _validate(config) -> None:
    """The run's own config checks, with placeholders for the data a plan does not read."""
    probe = ConfigDict(config.to_dict())
    probe.data.train = probe.data.train or "(not read by plan)"
    probe.data.tokenizer = probe.data.tokenizer or "(not read by plan)"
    validate(probe, None)


def _name(mc) -> str:
    return mc.preset or mc.hf_path or mc.workdir


# ---- report ------------------------------------------------------------------------------


_size = plan_programs.size_text


def _num(n: float) -> str:
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def format_plan(p: dict) -> str:
    mesh = " ".join(f"{k}={v}" for k, v in p["mesh"].items())
    b, t = p["batch"]
    lines = [
        f"kd-jax plan: {p['devices']} devices, mesh {mesh}, method={p['method']}",
        f"  batch {b} x {t} = {p['tokens_per_step']:,} tokens/step (grad_accum {p['grad_accum']})",
    ]
    for role in ("student", "teacher"):
        if role in p:
            m = p[role]
            trained = f", {_num(m['trainable'])} trained" if role == "student" else ""
            lines.append(
                f"  {role:8s}{m['name']}: {_num(m['params'])} params{trained}, "
                f"N={_num(m['flop_params'])} for FLOPs"
            )
    by, x = p["bytes"], p["xla"]
    lines += [
        "per-device memory, from shapes and shardings:",
        f"  student params (trainable) {_size(by['student_trainable'])}",
        f"  student params (frozen)    {_size(by['student_frozen'])}",
        f"  optimizer state            {_size(by['optimizer'])}",
        f"  teacher params             {_size(by['teacher'])}",
        f"  batch                      {_size(by['batch'])}",
        "per-device memory, XLA memory analysis of the compiled step:",
        f"  arguments                  {_size(x['arguments'])}",
        f"  outputs                    {_size(x['outputs'])}",
        f"  aliased (donated state)    {_size(x['aliased'])}",
        f"  temporaries                {_size(x['temporaries'])}",
        f"  peak = args + outputs - aliased + temporaries {_size(x['peak']).strip()}",
        "model FLOPs per step (N as in `kd_jax.plan`):",
    ]
    for role, f in p["flops"].items():
        lines.append(f"  {role:8s}{f['rule']:>10s} x tokens {_num(f['model']):>10s}FLOP")
    total = sum(f["model"] for f in p["flops"].values())
    attention = sum(f["attention"] for f in p["flops"].values())
    lines += [
        f"  total                        {_num(total):>10s}FLOP"
        f"  ({_num(total / p['devices'])}FLOP per device)",
        f"  + attention scores           {_num(attention):>10s}FLOP  (full T x T mask)",
    ]
    lines += plan_programs.format_lines(p)
    lines += [f"note: {n}" for n in p["notes"]]
    return "\n".join(lines)
