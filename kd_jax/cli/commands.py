"""`kd-jax` train, quickstart, export, generate, data, sweep, report and miniature.

Each `cmd_<name>(argv) -> exit status` parses its flags and calls one library function.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from kd_jax.cli.flags import MESH_HELP, config_and_rest, parse_mesh, split_config_flags
from kd_jax.errors import UserError


def _parser(name: str, description: str = "") -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"kd-jax {name}", description=description)


def parse_config(argv: list[str], require_workdir: bool = True):
    """(config, workdir) of `--config FILE[:arg] --config.k=v --workdir DIR`."""
    config, rest = config_and_rest(argv)
    p = _parser("train")
    p.add_argument("--workdir", required=require_workdir, help="the run's directory")
    args = p.parse_args(rest)
    return config, args.workdir


def cmd_train(argv: list[str]) -> int:
    from kd_jax import train

    config, workdir = parse_config(argv)
    final = train.run(config, workdir)
    print(json.dumps(final))
    return 0 if final.get("status") in ("completed", "preempted") else 1


def cmd_quickstart(argv: list[str]) -> int:
    from kd_jax import quickstart

    p = _parser("quickstart", "bases, teacher, SFT and KD students on built-in data, a table")
    p.add_argument("--workdir", default="runs/quickstart")
    p.add_argument("--steps-scale", type=float, default=1.0, help="scale every run's steps")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    p.add_argument(
        "--pretrain", action="store_true", help="train the two bases in WORKDIR, not the shipped"
    )
    p.add_argument("--bases", default=None, help="the folder of a --pretrain run's bases")
    args = p.parse_args(argv)
    quickstart.main(args.workdir, args.steps_scale, args.seed, args.bases, args.pretrain)
    return 0


def cmd_export(argv: list[str]) -> int:
    from kd_jax.models.loader import export

    p = _parser("export", "a run's student (LoRA merged) as an HF folder")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    p.add_argument("--dtype", default=None, help="storage dtype, e.g. bfloat16")
    args = p.parse_args(argv)
    out = export(args.workdir, args.out, which=args.checkpoint, dtype=args.dtype)
    print(f"Wrote {out}")
    return 0


def cmd_generate(argv: list[str]) -> int:
    from kd_jax.generate import generate_file

    p = _parser("generate", "sample continuations of a file of prompts")
    p.add_argument("--model", required=True, help="HF folder or kd_jax workdir")
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    p.add_argument("--tokenizer", default=None, help="default: the model's own")
    p.add_argument("--prompts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mesh", default="", help=MESH_HELP)
    a = p.parse_args(argv)
    n = generate_file(
        a.model,
        a.prompts,
        a.out,
        checkpoint=a.checkpoint,
        tokenizer=a.tokenizer,
        batch_size=a.batch_size,
        seed=a.seed,
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        top_k=a.top_k,
        top_p=a.top_p,
        mesh=parse_mesh(a.mesh) or None,
    )
    print(f"Wrote {n} completions to {a.out}")
    return 0


def cmd_data(argv: list[str]) -> int:
    from kd_jax.data import build_tokenizer, write_builtin_data

    p = _parser("data", "write the built-in data and tokenizer")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args(argv)
    manifest = write_builtin_data(f"{args.out}/data", seed=args.seed, scale=args.scale)
    build_tokenizer(f"{args.out}/tokenizer", seed=args.seed)
    print(json.dumps({"files": len(manifest["files"]), "out": args.out}))
    return 0


def cmd_sweep(argv: list[str]) -> int:
    from kd_jax.sweep import run_sweep

    spec, overrides, rest = split_config_flags(argv)
    if spec is None:
        raise UserError("--config is required: a study config file with sweep().")
    p = _parser("sweep", "train, evaluate and report every condition of a study file")
    p.add_argument("--workdir", required=True)
    p.add_argument("--runlocal", action="store_true", help="the tiny CPU variant of each")
    p.add_argument("--only", default=None, help="conditions whose folder name contains this")
    p.add_argument("--print-commands", action="store_true")
    p.add_argument("--print-eval-commands", action="store_true")
    p.add_argument("--progress", action="store_true", help="progress bars")
    args = p.parse_args(rest)
    result = run_sweep(
        spec.split(":")[0],
        args.workdir,
        runlocal=args.runlocal,
        only=args.only,
        overrides=overrides,
        print_commands=args.print_commands,
        print_eval_commands=args.print_eval_commands,
        progress=args.progress,
    )
    if "done" not in result:
        return 0
    print(
        f"done {len(result['done'])}, skipped training {len(result['skipped'])}, "
        f"failed {len(result['failed'])}; report: {result['report']}"
    )
    for name, why in result["failed"].items():
        print(f"  failed: {name}: {why}")
    return 1 if result["failed"] else 0


def cmd_report(argv: list[str]) -> int:
    from kd_jax.report import write_report
    from kd_jax.report.runs import expand_run_dirs

    p = _parser("report", "the Markdown report and figures across evaluated runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="folder for report.md, summary.json, PNGs")
    args = p.parse_args(argv)
    runs, skipped = expand_run_dirs(args.run_dirs)
    for path in skipped:
        print(f"kd-jax report: skipping {path} (no run.json: not evaluated)")
    path = write_report(runs, args.out)
    print(f"Wrote {path} ({len(runs)} runs)")
    return 0


def cmd_miniature(argv: list[str]) -> int:
    from kd_jax.miniature import conditions, findings, suite

    p = _parser("miniature", "both studies' findings tried on built-in tiny models")
    p.add_argument("--workdir", default="runs/miniature")
    p.add_argument("--smoke", action="store_true", help="1 seed, few steps: the plumbing")
    p.add_argument("--docs", default=None, help="also write DOCS/miniature.md and its PNGs")
    args = p.parse_args(argv)
    logging.getLogger("kd_jax.data").setLevel(logging.WARNING)
    scale = conditions.SCALES["smoke" if args.smoke else "full"]
    root = Path(args.workdir)
    t0 = time.time()
    timings = suite.run_plan(conditions.build_plan(scale), root, scale)
    path = findings.write(root, scale, timings, docs=args.docs)
    print(f"Wrote {path} ({time.time() - t0:.0f} s this invocation)")
    return 0
