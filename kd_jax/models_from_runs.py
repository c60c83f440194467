"""A trained model from a run's workdir (or an HF folder), for generation, eval and export."""

from __future__ import annotations

from pathlib import Path

from ml_collections import ConfigDict

from kd_jax import sharding as shd
from kd_jax.data import builtin_paths
from kd_jax.models import Decoder, hf_io
from kd_jax.state import build_model, read_run_config


def is_run(path: str | Path) -> bool:
    return (Path(path) / "config.json").exists() and (Path(path) / "checkpoints").is_dir()


def run_rules(path: str | Path) -> tuple:
    """The sharding rules table a run trained with (the built-in one for an HF folder)."""
    saved = read_run_config(path).get("sharding_rules") if is_run(path) else None
    if not saved:
        return shd.DEFAULT_RULES
    # JSON turns the table's tuples (a logical axis over several mesh axes) into lists.
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in saved)


def load_trained(
    path: str | Path, *, which: str = "latest", mesh=None, rules=None
) -> tuple[Decoder, str]:
    """(model, tokenizer folder) of a kd_jax run's student, or of an HF folder, loaded
    straight into its shardings: on `mesh` with the `rules` table, by default the run's
    own (config.json's `mesh` and `sharding_rules`), for an HF folder {"data": -1} and
    the built-in rules."""
    if not is_run(path):
        mesh = mesh or shd.make_mesh({"data": -1})
        return hf_io.load(path, mesh=mesh, rules=rules or shd.DEFAULT_RULES), str(path)
    run = read_run_config(path)
    mesh = mesh or shd.make_mesh(dict(run.get("mesh", {"data": -1})))
    rules = rules or run_rules(path)
    mc = ConfigDict(run.student.to_dict())
    mc.workdir, mc.checkpoint = str(path), which
    parts = build_model(
        mc, role="student", vocab_size=run.get("resolved_vocab_size"), mesh=mesh, rules=rules,
        seed=run.seed,
    )  # fmt: skip
    return parts.merge(parts.trainable), builtin_paths.resolve(run.data.tokenizer)


def export(workdir: str | Path, out: str | Path, *, which: str = "latest", dtype=None) -> Path:
    """Writes the run's student (LoRA merged) and its tokenizer as an HF folder."""
    model, tokenizer_dir = load_trained(workdir, which=which)
    return hf_io.save(model, out, dtype=dtype, tokenizer_dir=tokenizer_dir)
