"""The `kd-jax` command line: parse a command, call a library function.

    kd-jax train --config configs/X.py[:arg] [--config.key=value ...] --workdir DIR
    kd-jax quickstart --workdir DIR
    kd-jax export --workdir DIR --out HF_DIR [--checkpoint best]
    kd-jax generate --model (HF_DIR | WORKDIR) --prompts FILE --out FILE.jsonl
    kd-jax data --out DIR            (write the built-in data and tokenizer)
    kd-jax eval --workdir DIR --tasks TASKS
    kd-jax report RUN_DIRS... --out DIR
    kd-jax sweep --config FILE --workdir DIR [--print-commands]
    kd-jax plan --config FILE --devices N
    kd-jax cache-teacher --config FILE --out DIR
    kd-jax synthesize --model DIR --examples FILE --out FILE.jsonl
    kd-jax miniature --workdir DIR [--smoke] [--docs docs]

Mistakes a user can make (a bad path, config value or data line) end with one line
`kd-jax: error: ...` naming the problem and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

USAGE = __doc__.split("\n\n")[1]


def _user_errors() -> tuple[type[BaseException], ...]:
    from kd_jax.config_checks import ConfigError
    from kd_jax.data import DataError
    from kd_jax.models import ModelConfigError
    from kd_jax.models.hf_io import CheckpointError
    from kd_jax.optim import OptimConfigError
    from kd_jax.sharding import ShardingError
    from kd_jax.state import ModelSourceError

    return (
        ConfigError,
        DataError,
        ModelConfigError,
        CheckpointError,
        OptimConfigError,
        ShardingError,
        ModelSourceError,
        FileNotFoundError,
    )


def parse_config(argv: list[str], require_workdir: bool = True):
    """(config, workdir) from `--config FILE[:arg] --config.k=v --workdir DIR` flags."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    # sys_argv: the config file's `:arg` is read from these flags, not from sys.argv.
    config_flags.DEFINE_config_file(
        "config", None, "Config file.", flag_values=fv, sys_argv=["kd-jax", *argv]
    )
    flags.DEFINE_string("workdir", None, "Run directory.", flag_values=fv)
    try:
        fv(["kd-jax", *argv])
    except flags.Error as e:
        raise SystemExit(f"kd-jax: error: {e}") from None
    if fv.config is None:
        raise SystemExit("kd-jax: error: --config is required, e.g. --config configs/quickstart.py")
    if require_workdir and not fv.workdir:
        raise SystemExit("kd-jax: error: --workdir is required (the run's directory).")
    return fv.config, fv.workdir


def cmd_train(argv):
    from kd_jax import train

    config, workdir = parse_config(argv)
    final = train.run(config, workdir)
    print(json.dumps(final))
    return 0 if final.get("status") in ("completed", "preempted") else 1


def cmd_quickstart(argv):
    from kd_jax import quickstart

    p = argparse.ArgumentParser(prog="kd-jax quickstart")
    p.add_argument("--workdir", default="runs/quickstart")
    p.add_argument("--steps-scale", type=float, default=1.0, help="scale every run's steps")
    args = p.parse_args(argv)
    quickstart.main(args.workdir, steps_scale=args.steps_scale)
    return 0


def cmd_export(argv):
    from kd_jax.models_from_runs import export

    p = argparse.ArgumentParser(prog="kd-jax export")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    p.add_argument("--dtype", default=None, help="storage dtype, e.g. bfloat16")
    args = p.parse_args(argv)
    out = export(args.workdir, args.out, which=args.checkpoint, dtype=args.dtype)
    print(f"Wrote {out}")
    return 0


def cmd_generate(argv):
    from kd_jax.generate import main

    return main(argv)


def cmd_data(argv):
    from kd_jax.data import build_tokenizer, write_builtin_data

    p = argparse.ArgumentParser(prog="kd-jax data")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args(argv)
    manifest = write_builtin_data(f"{args.out}/data", seed=args.seed, scale=args.scale)
    build_tokenizer(f"{args.out}/tokenizer", seed=args.seed)
    print(json.dumps({"files": len(manifest["files"]), "out": args.out}))
    return 0


COMMANDS = {
    "train": cmd_train,
    "quickstart": cmd_quickstart,
    "export": cmd_export,
    "generate": cmd_generate,
    "data": cmd_data,
    # Commands whose parser lives beside their library code: "module:function(argv)".
    "eval": "kd_jax.evaluation.run_eval:main",
    "report": "kd_jax.report.build:main",
    "sweep": "kd_jax.sweep:main",
    "plan": "kd_jax.plan:main",
    "cache-teacher": "kd_jax.teacher_cache:main",
    "synthesize": "kd_jax.synthesize:main",
    "miniature": "kd_jax.miniature:main",
}


def _command(name: str):
    target = COMMANDS[name]
    if callable(target):
        return target
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def _environment() -> None:
    """No hub look-ups at run time; a persistent XLA cache so restarts skip compiles."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault(
        "JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "kd_jax" / "xla")
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _environment()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorboardX"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return _command(argv[0])(argv[1:])
    except _user_errors() as e:
        print(f"kd-jax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
