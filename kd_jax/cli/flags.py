"""The one config-flag parser: `--config FILE[:arg] [--config.key=value ...]`.

Every command that takes a config reads it here: `config_and_rest(argv)` loads the file
(kd_jax.config_files), applies the overrides in order, and returns the arguments left for
the command's own argparse parser. Both `--config.key=value` and `--config.key value`
are accepted, as are `--config=FILE` and `--config FILE`.
"""

from __future__ import annotations

from kd_jax.config_files import apply_overrides, load_config
from kd_jax.errors import UserError

PREFIX = "--config."


def split_config_flags(argv: list[str]) -> tuple[str | None, dict, list[str]]:
    """(config spec, {key: value}, other arguments) of an argument list."""
    spec, overrides, rest = None, {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name == "--config" or name.startswith(PREFIX):
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise UserError(f"{name} needs a value, e.g. {name}=VALUE.")
                value, i = argv[i + 1], i + 1
            if name == "--config":
                spec = value
            else:
                overrides[name[len(PREFIX) :]] = value
        else:
            rest.append(arg)
        i += 1
    return spec, overrides, rest


def config_and_rest(argv: list[str], *, example: str = "configs/tiny_compare.py"):
    """(ConfigDict, remaining argv) from `--config FILE[:arg] --config.k=v ...`."""
    spec, overrides, rest = split_config_flags(argv)
    if spec is None:
        if overrides:
            raise UserError("--config.KEY=VALUE needs --config FILE first.")
        raise UserError(f"--config is required, e.g. --config {example}")
    config = load_config(spec)
    apply_overrides(config, overrides)
    return config, rest


MESH_HELP = (
    "mesh to load the model on, e.g. fsdp=16,tensor=4 (default: a run's own mesh; "
    "data=-1 for an HF folder)"
)


def parse_mesh(text: str) -> dict:
    """`data=N,fsdp=N,tensor=N` (any subset; -1 = the remaining devices) -> {axis: N}."""
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key.strip() not in ("data", "fsdp", "tensor") or not value.lstrip("-").isdigit():
            raise UserError(f"--mesh {text!r}: write data=N,fsdp=N,tensor=N.")
        out[key.strip()] = int(value)
    return out
