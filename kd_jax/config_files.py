"""Config files and overrides: `FILE[:arg]` -> ConfigDict, then `key=value` changes.

    config = load_config("configs/tiny_compare.py:kd")
    apply_overrides(config, {"kd.temperature": "2.0", "train.num_steps": "10"})

A config file is a Python module with `get_config(arg)` (study files add `sweep()` and
optionally `dependencies(arg)` / `evaluation(arg)`, see kd_jax.sweep). Overrides are the
strings of `--config.key=value` flags, cast to the type of the value they replace, so a
misspelt key or a value of the wrong type is refused with one line naming the key (and the
nearest existing key). Every command that takes a config reads it through this module.
Condition args ("a=1,b=x,runlocal") are parsed by `parse_arg` / written by `format_arg`.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from pathlib import Path

from ml_collections import ConfigDict

from kd_jax.errors import MissingFileError, UserError


class ConfigFileError(UserError):
    """A config file or an override that cannot be used."""


def parse_arg(arg: str | None) -> dict:
    """ "a=1,b=x,runlocal" -> {"a": "1", "b": "x", "runlocal": True} (values stay strings)."""
    out: dict = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        out[key.strip()] = value.strip() if sep else True
    return out


def format_arg(fields: dict) -> str:
    """The inverse of parse_arg; flags (True) are written bare, False/None dropped."""
    parts = []
    for k, v in fields.items():
        if v is True:
            parts.append(k)
        elif v is not False and v is not None:
            parts.append(f"{k}={v}")
    return ",".join(parts)


def load_module(path: str | Path):
    """The config file as a module."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Config file {path} does not exist; check --config.")
    spec = importlib.util.spec_from_file_location(f"kd_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigFileError(f"Config file {path} line {e.lineno}: {e.msg}; fix it.") from None
    if not callable(getattr(module, "get_config", None)):
        raise ConfigFileError(f"{path} has no get_config() function; a config file needs one.")
    return module


def load_config(spec: str) -> ConfigDict:
    """`FILE` or `FILE:arg` -> the file's `get_config()` / `get_config(arg)`."""
    path, sep, arg = spec.partition(":")
    module = load_module(path)
    return module.get_config(arg) if sep else module.get_config()


_KINDS = {bool: "true or false", int: "an integer", float: "a number", tuple: "a tuple"}


def _cast(key: str, value: str, current, typ):
    try:
        if typ is bool:
            lowered = value.lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return lowered in ("1", "true", "yes")
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
        if typ in (tuple, list):
            parsed = ast.literal_eval(value) if value[:1] in "([" else value.split(",")
            return tuple(parsed) if typ is tuple else list(parsed)
        if typ is str:
            return value
        if current is None:  # an unset field: a Python literal if it is one, else text
            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
    except (ValueError, SyntaxError):
        kind = _KINDS.get(typ, f"a {typ.__name__}")
        raise ConfigFileError(f"--config.{key}={value}: {key} takes {kind}.") from None
    return value


def apply_overrides(config: ConfigDict, overrides: dict) -> None:
    """Sets dotted keys ("train.num_steps") from strings, cast to the existing type;
    non-string values are set as they are."""
    for key, value in overrides.items():
        *path, name = key.split(".")
        node, seen = config, []
        for part in [*path, name]:
            if not isinstance(node, ConfigDict) or part not in node:
                keys = list(node.keys()) if isinstance(node, ConfigDict) else []
                close = difflib.get_close_matches(part, keys, n=1)
                hint = f" Did you mean {'.'.join([*seen, close[0]])}?" if close else ""
                where = ".".join(seen) or "the config"
                raise ConfigFileError(
                    f"--config.{key}: {where} has no key {part!r}.{hint} "
                    "Every key is documented in configs/base.py."
                )
            if part != name:
                node = node[part]
                seen.append(part)
        current = node[name]
        if isinstance(current, ConfigDict):
            raise ConfigFileError(f"--config.{key} is a section; set one of its keys instead.")
        if isinstance(value, str):
            typ = node.get_type(name)
            value = _cast(key, value, current, typ)
        try:
            node[name] = value
        except TypeError as e:
            raise ConfigFileError(f"--config.{key}={value!r}: {e}") from None
