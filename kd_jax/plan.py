"""`kd-jax plan`: the per-device memory and FLOPs of a run's train step, before renting.

    kd-jax plan --config configs/base.py --config.method=kd \
        --config.student.preset=llama-3.2-1b --config.teacher.preset=llama-3.1-70b \
        --devices 64 --mesh fsdp=64        # axes not named are 1; default: config.mesh

The real train step (`kd_jax.step.make_train_step`, as `kd_jax.train.run` builds it) is
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

Model FLOPs per step use N = every weight a token is multiplied by: all non-embedding
weights plus the output projection (vocab x hidden; the tied embedding counts here once).
The input embedding is a lookup and costs no FLOPs. Per token the student costs 6N
(forward 2N, backward 4N), 4N under LoRA (no gradients for the frozen base), and the
teacher 2N (forward only). Attention scores, computed over the full [T, T] mask, add
4 * layers * T * heads * head_dim per token forward, shown separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

# Importing JAX does not start its backend: `main` can still hand the work to a child
# process that starts with the device count asked for.
import jax
import jax.numpy as jnp
from absl import flags
from flax import nnx
from ml_collections import ConfigDict, config_flags

from kd_jax import accelerators, plan_programs, state, train
from kd_jax import sharding as shd
from kd_jax import step as step_lib
from kd_jax.config_checks import validate
from kd_jax.data import builtin_paths
from kd_jax.models import abstract_model, hf_io, presets
from kd_jax.optim import learning_rate_schedule, make_optimizer

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


def _device_env(n: int) -> dict:
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


def _has_devices(n: int) -> bool:
    """True when this process's JAX is (or will be) a CPU backend with exactly n devices."""
    env = os.environ
    count = re.search(rf"{DEVICE_FLAG}=(\d+)", env.get("XLA_FLAGS", ""))
    return env.get("JAX_PLATFORMS") == "cpu" and count is not None and int(count.group(1)) == n


# ---- abstract models ---------------------------------------------------------------------


def model_config(mc, vocab_size: int | None = None):
    """The ModelConfig a `student`/`teacher` section builds, reading no weights.

    Mirrors the source order of `kd_jax.state.build_model`: workdir, hf_path, preset.
    """
    common = dict(dtype=mc.dtype, remat_policy=mc.remat_policy, attention=mc.attention)
    if mc.workdir:
        run = state.read_run_config(mc.workdir)
        src = ConfigDict({**run.student.to_dict(), **common})
        return model_config(src, run.get("resolved_vocab_size") or vocab_size)
    lora = state.lora_config(mc)
    if mc.hf_path:
        return hf_io.read_config(mc.hf_path, param_dtype=mc.param_dtype, lora=lora, **common)
    if mc.preset:
        extra = {"vocab_size": vocab_size} if vocab_size else {}
        return presets.get(mc.preset, param_dtype=mc.param_dtype, lora=lora, **common, **extra)
    raise state.ModelSourceError(
        "a model section names no weights; set hf_path, workdir or preset."
    )


def abstract_parts(mc, *, mesh, rules):
    """ModelParts whose leaves are sharded ShapeDtypeStructs: a model that costs nothing."""
    cfg = model_config(mc)
    graphdef, abstract = nnx.split(abstract_model(cfg))
    shardings = shd.state_shardings(abstract, mesh, rules)

    def typed(v, s):
        x = v.get_value()
        return v.replace(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s.get_value()))

    is_var = lambda x: isinstance(x, nnx.Variable)
    sharded = jax.tree.map(typed, abstract, shardings, is_leaf=is_var)
    return state._split(nnx.merge(graphdef, sharded), mc)


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
    embedding = cfg.vocab_size * cfg.hidden_size
    return ModelSummary(
        name=name,
        params=total,
        # Untied models hold an input table that is only looked up; tied ones use their
        # one table as the output projection too, so it stays in N.
        flop_params=total if cfg.tie_word_embeddings else total - embedding,
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
    rules = tuple(tuple(r) for r in config.sharding_rules)
    mesh = shd.make_mesh(dict(config.mesh), devices)
    student = abstract_parts(config.student, mesh=mesh, rules=rules)
    teacher = None
    if config.method == "kd" and not config.kd.teacher_cache:
        teacher = abstract_parts(config.teacher, mesh=mesh, rules=rules)
    train._check_vocab(config, student.cfg.vocab_size, student, teacher)
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
    b, t = config.data.batch_size, config.data.max_length
    rows = shd.batch_sharding(mesh, rules)
    dtypes = {"loss_mask": jnp.float32}  # the rest are int32 token ids and positions
    batch = {k: jax.ShapeDtypeStruct((b, t), dtypes.get(k, jnp.int32), sharding=rows)
             for k in step_lib.BATCH_KEYS}  # fmt: skip
    notes = []
    if config.kd.teacher_cache:
        meta = Path(builtin_paths.resolve(config.kd.teacher_cache)) / "meta.json"
        if meta.exists():
            k = json.loads(meta.read_text())["k"]
        else:
            k = 64
            notes.append(f"{meta} not found: planned for a top-{k} teacher cache")
        per_token = shd.batch_sharding(mesh, rules, ndim=3)
        for key, dtype in (("teacher_topk_values", jnp.float32),
                           ("teacher_topk_indices", jnp.int32)):  # fmt: skip
            batch[key] = jax.ShapeDtypeStruct((b, t, k), dtype, sharding=per_token)
    return batch, notes


def _compile(config, mesh, rules, student, teacher, batch):
    """(abstract train state, XLA memory stats, optimized HLO text) of the step
    `kd_jax.train.run` builds, compiled for the mesh's devices (CPU, or a TPU topology)."""
    num_steps = config.train.num_steps
    optimizer = make_optimizer(config.optim, num_steps)
    abstract = jax.eval_shape(lambda p: step_lib.init_state(p, optimizer), student.trainable)
    state_sh = train._state_shardings(abstract, student.trainable, mesh)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         abstract, state_sh)  # fmt: skip
    context = {
        "frozen": student.frozen,
        "teacher": None if teacher is None else (teacher.trainable, teacher.frozen),
    }
    step = step_lib.make_train_step(
        state_shardings=state_sh,
        batch_shardings=jax.tree.map(lambda x: x.sharding, batch),
        context_shardings=jax.tree.map(lambda x: x.sharding, context),
        optimizer=optimizer,
        schedule=learning_rate_schedule(config.optim, num_steps),
        grad_accum=config.optim.grad_accum,
        student=student,
        teacher=teacher,
        loss_cfg=train.loss_config(config),
        chunk_size=config.kd.chunk_size,
    )
    rng = jax.eval_shape(lambda: jax.random.key(0))
    # Activations follow the rules table only while `activation_sharding` is active
    # (`shd.constrain` in model code is a no-op otherwise, and XLA then tends to gather
    # the whole batch on every fsdp device).
    with shd.activation_sharding(mesh, rules):
        compiled = step.lower(state, batch, rng, context).compile()
    return state, compiled.memory_analysis(), compiled.as_text()


def _flops(rule: str, m: ModelSummary, length: int, tokens: int) -> dict:
    """Model FLOPs of one step by `rule` (k*N per token), and attention scores beside it:
    forward 4 * L * T * heads * head_dim per token, times 3 with a backward pass."""
    k = int(rule[0])
    attention = 4 * m.layers * length * m.attention_width * tokens
    return {"rule": rule, "model": k * m.flop_params * tokens,
            "attention": attention * (3 if k > 2 else 1)}  # fmt: skip


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


# ---- command line ------------------------------------------------------------------------


def _parse_mesh(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if not value.lstrip("-").isdigit():
            raise SystemExit(f"kd-jax: error: --mesh {text!r}: write data=N,fsdp=N,tensor=N.")
        out[key.strip()] = int(value)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="kd-jax plan",
        description="Per-device memory and FLOPs of a config's train step, compiled ahead "
        "of time on simulated CPU devices. Config flags: --config FILE[:arg] --config.k=v.",
    )
    p.add_argument("--devices", type=int, default=0, help="simulated CPU devices to plan for")
    p.add_argument("--topology", default="", help="TPU slice compiled for by libtpu, e.g. "
                   "v5p:4x4x4, v6e:2x4 (no TPU needed)")  # fmt: skip
    p.add_argument("--mesh", default="", help="e.g. data=1,fsdp=16,tensor=4 (else config.mesh)")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    args, rest = p.parse_known_args(argv)
    devices, notes = None, []
    if args.topology:
        try:
            devices, why = accelerators.topology_devices(args.topology)
            n = accelerators.chips_in(args.topology)
        except accelerators.TopologyError as e:
            raise SystemExit(f"kd-jax: error: {e}") from None
        if devices is None:
            notes.append(why)
            args.devices = n
    if devices is None and args.devices < 1:
        raise SystemExit("kd-jax: error: --devices must be at least 1 (or name a --topology).")
    if devices is None and not _has_devices(args.devices):
        # XLA reads the device count once, when JAX starts: run again in a child that
        # starts with it. The child inherits stdout/stderr, so it prints the plan itself.
        cmd = [sys.executable, "-m", "kd_jax.main", "plan", *argv]
        return subprocess.call(cmd, env=_device_env(args.devices))

    if devices is None and jax.device_count() != args.devices:
        raise SystemExit(
            f"kd-jax: error: JAX already started with {jax.device_count()} devices; run "
            "`kd-jax plan` in a fresh process."
        )
    config = _parse_config(rest)
    if args.mesh:
        mesh = {"data": 1, "fsdp": 1, "tensor": 1, **_parse_mesh(args.mesh)}
        config.mesh.update(mesh)
    result = plan(config, devices, args.topology or None)
    result["notes"] += notes
    print(json.dumps(result) if args.json else format_plan(result))
    return 0


def _parse_config(argv: list[str]):
    fv = flags.FlagValues()
    full = ["kd-jax plan", *argv]
    # config_flags finds `--config.k=v` overrides in sys.argv unless told the real argv,
    # which differs when plan runs in-process (tests, notebooks).
    config_flags.DEFINE_config_file("config", None, "Config file.", flag_values=fv, sys_argv=full)
    try:
        fv(full)
    except flags.Error as e:
        raise SystemExit(f"kd-jax: error: {e}") from None
    if fv.config is None:
        raise SystemExit("kd-jax: error: --config is required, e.g. --config configs/base.py")
    return fv.config
