"""`kd-jax` eval, cache-teacher, synthesize and plan: jobs that load or compile models
outside the training loop. Each `cmd_<name>(argv)` parses flags and calls the library."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from kd_jax.cli.flags import MESH_HELP, config_and_rest, parse_mesh
from kd_jax.errors import UserError


def _meta_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--meta {item!r} is not KEY=VALUE; e.g. --meta method=SeqKD")
        try:
            out[key] = json.loads(value)  # numbers stay numbers
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_eval(argv: list[str]) -> int:
    from kd_jax.evaluation.run_eval import evaluate_run

    p = argparse.ArgumentParser(prog="kd-jax eval", description="evaluate a run's student")
    p.add_argument("--workdir", default=None, help="a kd_jax run (config.json + checkpoints)")
    p.add_argument("--responses", default=None, help="score this responses JSONL, no model")
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    p.add_argument("--tasks", default=None, help="names or groups, comma-separated")
    p.add_argument("--data-root", default=None, help="folder holding Study B's dataset/")
    p.add_argument("--mode", choices=("faithful", "strict"), default="faithful")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="first N examples per task; 0 = all")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the run's)")
    p.add_argument("--teacher", default=None, help="'auto', a kd_jax workdir or an HF folder")
    p.add_argument("--kl-batches", type=int, default=0, help="validation batches for KL; 0 = all")
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run.json field, e.g. --meta method='SeqKD (base teacher)'",
    )
    p.add_argument("--out", default=None, help="default: WORKDIR/eval")
    p.add_argument("--mesh", default="", help=MESH_HELP)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.responses:
        return _score_file(a)
    if not a.workdir:
        raise UserError("pass --workdir (a trained run) or --responses (a responses file)")
    doc = evaluate_run(
        a.workdir,
        checkpoint=a.checkpoint,
        tasks=a.tasks,
        data_root=a.data_root,
        mode=a.mode,
        temperature=a.temperature,
        max_new_tokens=a.max_new_tokens,
        limit=a.limit,
        batch_size=a.batch_size,
        seed=a.seed,
        teacher=a.teacher,
        kl_batches=a.kl_batches,
        meta=_meta_overrides(a.meta),
        out=a.out,
        progress=not a.no_progress,
        mesh=parse_mesh(a.mesh) or None,
    )
    print(json.dumps({"average": doc["average"], "out": doc["out"]}))
    return 0


def _score_file(a: argparse.Namespace) -> int:
    from kd_jax.evaluation import resolve
    from kd_jax.evaluation.responses import read_responses, score_responses
    from kd_jax.evaluation.run_eval import data_roots

    if not a.out:
        raise UserError("--responses needs --out DIR (where predictions and scores go)")
    names = a.tasks or ",".join(read_responses(a.responses))
    doc = score_responses(
        a.responses,
        a.out,
        tasks=names,
        data_root=data_roots(resolve(names), a.data_root),
        mode=a.mode,
        limit=a.limit or None,
        progress=not a.no_progress,
    )
    print(json.dumps({"average": doc["average"], "out": a.out}))
    return 0


def cmd_cache_teacher(argv: list[str]) -> int:
    from kd_jax.teacher_cache import MODES, summary
    from kd_jax.teacher_cache_job import build

    config, rest = config_and_rest(argv)
    p = argparse.ArgumentParser(prog="kd-jax cache-teacher")
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--mode", default="topk", choices=MODES, help="top-k, or K teacher draws")
    p.add_argument("--value-dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args(rest)
    cache = build(
        config,
        a.out,
        k=a.k,
        value_dtype=a.value_dtype,
        shard_size=a.shard_size,
        batch_size=a.batch_size,
        mode=a.mode,
    )
    print(json.dumps(summary(cache)))
    return 0


def cmd_synthesize(argv: list[str]) -> int:
    from kd_jax.synthesize import DEFAULT_ANSWER_REGEX, synthesize_file

    p = argparse.ArgumentParser(prog="kd-jax synthesize")
    p.add_argument("--model", required=True, help="teacher: HF folder or kd_jax workdir")
    p.add_argument("--mode", choices=("icl", "label"), default="icl")
    p.add_argument("--examples", required=True, help="human chat JSONL (icl: the shots)")
    p.add_argument("--inputs", default=None, help="label mode: chat JSONL of user turns")
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, default=1000, help="icl: prompts to sample")
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--task", default="synthetic")
    p.add_argument("--answer-regex", default=DEFAULT_ANSWER_REGEX)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mesh", default="", help=MESH_HELP)
    a = p.parse_args(argv)
    counts = synthesize_file(
        a.model,
        a.examples,
        a.out,
        mode=a.mode,
        inputs=a.inputs,
        num=a.num,
        shots=a.shots,
        task=a.task,
        answer_regex=a.answer_regex,
        temperature=a.temperature,
        max_new_tokens=a.max_new_tokens,
        batch_size=a.batch_size,
        seed=a.seed,
        mesh=parse_mesh(a.mesh) or None,
    )
    print(json.dumps(counts))
    return 0


def cmd_plan(argv: list[str]) -> int:
    import jax

    from kd_jax import accelerators, plan, plan_inference

    p = argparse.ArgumentParser(
        prog="kd-jax plan",
        description="Per-device memory and FLOPs of a config's train step, compiled ahead "
        "of time for a TPU topology (libtpu) or on simulated CPU devices. Config flags: "
        "--config FILE[:arg] --config.k=v.",
    )
    p.add_argument("--devices", type=int, default=0, help="simulated CPU devices to plan for")
    p.add_argument(
        "--topology", default="", help="TPU slice compiled for by libtpu, e.g. v5p:4x4x4"
    )
    p.add_argument("--mesh", default="", help="e.g. data=1,fsdp=16,tensor=4 (else config.mesh)")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    p.add_argument(
        "--job",
        default="train",
        choices=("train", *plan_inference.JOBS),
        help="the program to plan: the train step, or an inference job's program",
    )
    p.add_argument("--batch-size", type=int, default=32, help="inference jobs: batch rows")
    p.add_argument("--prompt-length", type=int, default=0, help="default: data.max_length")
    p.add_argument("--max-new-tokens", type=int, default=128, help="sampling jobs")
    p.add_argument("--k", type=int, default=64, help="cache-teacher: top-k")
    config, rest = config_and_rest(argv, example="configs/base.py")
    args = p.parse_args(rest)
    devices, notes = None, []
    if args.topology:
        try:
            devices, why = accelerators.topology_devices(args.topology)
            n = accelerators.chips_in(args.topology)
        except accelerators.TopologyError as e:
            raise UserError(str(e)) from None
        if devices is None:  # no libtpu: the CPU-simulated plan, said so
            notes.append(why)
            args.devices = n
    if devices is None and args.devices < 1:
        raise UserError("--devices must be at least 1 (or name a --topology).")
    if devices is None and not plan.has_devices(args.devices):
        # XLA reads the device count once, when JAX starts: run again in a child that
        # starts with it. The child inherits stdout/stderr, so it prints the plan itself.
        cmd = [sys.executable, "-m", "kd_jax.main", "plan", *argv]
        return subprocess.call(cmd, env=plan.device_env(args.devices))
    if devices is None and jax.device_count() != args.devices:
        raise UserError(
            f"JAX already started with {jax.device_count()} devices; run `kd-jax plan` in a "
            "fresh process."
        )
    if args.mesh:
        config.mesh.update({"data": 1, "fsdp": 1, "tensor": 1, **parse_mesh(args.mesh)})
    if args.job != "train":
        result = plan_inference.plan_job(
            config,
            args.job,
            devices,
            args.topology or None,
            batch_size=args.batch_size,
            prompt_length=args.prompt_length,
            max_new_tokens=args.max_new_tokens,
            k=args.k,
        )
        result["notes"] = notes
        print(json.dumps(result) if args.json else plan_inference.format_job(result))
        return 0
    result = plan.plan(config, devices, args.topology or None)
    result["notes"] += notes
    print(json.dumps(result) if args.json else plan.format_plan(result))
    return 0
