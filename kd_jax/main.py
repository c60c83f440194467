"""The `kd-jax` command line: pick a command, run it, print user errors as one line.

    kd-jax train --config configs/X.py[:arg] [--config.key=value ...] --workdir DIR
    kd-jax quickstart --workdir DIR
    kd-jax export --workdir DIR --out HF_DIR [--checkpoint best]
    kd-jax generate --model (HF_DIR | WORKDIR) --prompts FILE --out FILE.jsonl
    kd-jax data --out DIR            (write the built-in data and tokenizer)
    kd-jax eval --workdir DIR --tasks TASKS
    kd-jax report RUN_DIRS... --out DIR
    kd-jax sweep --config FILE --workdir DIR [--config.key=value ...] [--print-commands]
    kd-jax plan --config FILE --devices N
    kd-jax cache-teacher --config FILE --out DIR
    kd-jax synthesize --model DIR --examples FILE --out FILE.jsonl
    kd-jax miniature --workdir DIR [--smoke] [--docs docs]

Mistakes a user can make (a bad path, config value or data line) end with one line
`kd-jax: error: ...` naming the problem and the fix, and exit status 2.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

from kd_jax.errors import UserError

USAGE = __doc__.split("\n\n")[1]
COMMANDS = {  # name -> "module:function(argv) -> exit status"
    "train": "commands:cmd_train",
    "quickstart": "commands:cmd_quickstart",
    "export": "commands:cmd_export",
    "generate": "commands:cmd_generate",
    "data": "commands:cmd_data",
    "sweep": "commands:cmd_sweep",
    "report": "commands:cmd_report",
    "miniature": "commands:cmd_miniature",
    "eval": "model_jobs:cmd_eval",
    "cache-teacher": "model_jobs:cmd_cache_teacher",
    "synthesize": "model_jobs:cmd_synthesize",
    "plan": "model_jobs:cmd_plan",
}


def _environment() -> None:
    """No hub look-ups at run time; a persistent XLA cache so restarts skip compiles."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = Path.home() / ".cache" / "kd_jax" / "xla"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorboardX"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    _environment()
    module, _, func = COMMANDS[argv[0]].partition(":")
    command = getattr(importlib.import_module(f"kd_jax.cli.{module}"), func)
    try:
        return command(argv[1:])
    except UserError as e:
        print(f"kd-jax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
