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


def load_trained(path: str | Path, *, which: str = "latest", mesh=None) -> tuple[Decoder, str]:
    """(model, tokenizer folder) of a kd_jax run's student, or of an HF folder."""
    mesh = mesh or shd.make_mesh({"data": -1})
    if not is_run(path):
        return hf_io.load(path, mesh=mesh), str(path)
    run = read_run_config(path)
    mc = ConfigDict(run.student.to_dict())
    mc.workdir, mc.checkpoint = str(path), which
    parts = build_model(
        mc, role="student", vocab_size=run.get("resolved_vocab_size"), mesh=mesh, seed=run.seed
    )
    return parts.merge(parts.trainable), builtin_paths.resolve(run.data.tokenizer)


def export(workdir: str | Path, out: str | Path, *, which: str = "latest", dtype=None) -> Path:
    """Writes the run's student (LoRA merged) and its tokenizer as an HF folder."""
    model, tokenizer_dir = load_trained(workdir, which=which)
    return hf_io.save(model, out, dtype=dtype, tokenizer_dir=tokenizer_dir)
