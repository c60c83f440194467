"""The built-in tiny base models: configs/pretrain.py's runs, exported and shipped with kd_jax.

    c.student.hf_path = builtin_bases.path("tiny-student-l")

Both studies post-train pretrained base models; these are the built-in ones, pretrained on
every built-in family (configs/pretrain.py) so that SFT and KD on the built-in tasks start
from a model that already writes the formats. Shipping them saves a newcomer the ten
minutes of CPU pretraining. Each folder is an HF folder (config.json, model.safetensors,
the built-in tokenizer's files), made by

    kd-jax train --config configs/pretrain.py:<name> --workdir runs/bases/base-<name>
    python -m kd_jax.models.builtin_bases runs/bases/base-<name>    # export + manifest

`manifest.json` beside them records each one's config, seed, steps and final loss.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from kd_jax.errors import MissingFileError

ROOT = Path(__file__).parent / "bases"


def manifest() -> dict:
    """{name: how it was made} for every shipped base."""
    return json.loads((ROOT / "manifest.json").read_text())


def path(name: str) -> str:
    """The HF folder of the built-in base `name` (a preset of kd_jax.models.presets)."""
    folder = ROOT / name
    if not (folder / "config.json").exists():
        shipped = ", ".join(sorted(manifest())) if (ROOT / "manifest.json").exists() else "none"
        raise MissingFileError(
            f"kd_jax has no built-in base {name!r} (it ships: {shipped}); pretrain one with "
            f"`kd-jax train --config configs/pretrain.py:{name} --workdir DIR` and start "
            f"from it with --config.student.workdir=DIR."
        )
    return str(folder)


def ship(workdir: str | Path) -> Path:
    """Exports a finished configs/pretrain.py run as the built-in base of its preset and
    records it in the manifest."""
    from kd_jax.metrics_log import read_metrics
    from kd_jax.models.loader import export, read_run_config

    run = read_run_config(workdir)
    name = run.student.preset
    last = [r for r in read_metrics(workdir) if "eval_ce" in r][-1]
    shutil.rmtree(ROOT / name, ignore_errors=True)  # no stale shard of an earlier base
    out = export(workdir, ROOT / name)
    entries = manifest() if (ROOT / "manifest.json").exists() else {}
    entries[name] = {
        "config": f"configs/pretrain.py:{name}",
        "seed": run.seed,
        "steps": run.train.num_steps,
        "final_step": last["step"],
        "mixture_eval_ce": round(last["eval_ce"], 4),
    }
    text = json.dumps(dict(sorted(entries.items())), indent=1) + "\n"
    (ROOT / "manifest.json").write_text(text)
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"Wrote {ship(arg)}")
