"""`builtin:` paths: the built-in data and tokenizer, generated once and cached on disk.

Configs for CPU runs name `data.train = "builtin:chat/arith/train"` and
`data.tokenizer = "builtin:tokenizer"` (`builtin:tokenizer-b`: the second built-in tokenizer,
another vocabulary for cross-tokenizer KD); these resolve to files under
$KD_JAX_BUILTIN_DIR (default ~/.cache/kd_jax/builtin-v1), which the first use writes
(about 10 s; written to a temporary folder and renamed, so concurrent runs are safe).
`write_builtin_data` writes the task files (kd_jax.data.synthetic_tasks) to any folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from kd_jax.data.builtin_tokenizer import build_tokenizer
from kd_jax.data.synthetic_tasks import DEFAULT_SIZES, FAMILIES, GENERATORS, generate
from kd_jax.errors import MissingFileError

PREFIX = "builtin:"
VERSION = "v1"


def root() -> Path:
    default = Path.home() / ".cache" / "kd_jax" / f"builtin-{VERSION}"
    return Path(os.environ.get("KD_JAX_BUILTIN_DIR", default))


def ensure() -> Path:
    """The built-in folder (data/ and tokenizer/), generating it on first use."""
    target = root()
    if (target / "tokenizer" / "tokenizer.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".builtin-", dir=target.parent))
    try:
        write_builtin_data(str(tmp / "data"), seed=0)
        build_tokenizer(str(tmp / "tokenizer"), seed=0)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "tokenizer" / "tokenizer.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _ensure_tokenizer_b(base: Path) -> Path:
    """The second tokenizer, built on first use (folders made before it existed lack it)."""
    target = base / "tokenizer-b"
    if (target / "tokenizer.json").exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-b-", dir=base))
    try:
        build_tokenizer(str(tmp), seed=0, variant="b")
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "tokenizer.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(path: str) -> str:
    """`builtin:chat/arith/train` -> .../data/chat/arith/train.jsonl; others unchanged.

    Comma-separated lists resolve element by element."""
    if not isinstance(path, str) or PREFIX not in path:
        return path
    parts = []
    for p in path.split(","):
        p = p.strip()
        if not p.startswith(PREFIX):
            parts.append(p)
            continue
        name = p[len(PREFIX) :]
        base = ensure()
        if name == "tokenizer":
            parts.append(str(base / "tokenizer"))
        elif name == "tokenizer-b":
            parts.append(str(_ensure_tokenizer_b(base)))
        else:
            file = base / "data" / (name if name.endswith(".jsonl") else name + ".jsonl")
            if not file.exists():
                raise MissingFileError(
                    f"{p} is not a built-in data file; see {base / 'data' / 'manifest.json'}."
                )
            parts.append(str(file))
    return ",".join(parts)


def write_builtin_data(
    out_dir: str,
    *,
    seed: int = 0,
    scale: float = 1.0,
    families: tuple[str, ...] = FAMILIES,
    formats: tuple[str, ...] = ("chat", "alpaca"),
) -> dict:
    """Writes out_dir/<format>/<family>/<split>.jsonl and out_dir/manifest.json.

    Sizes are DEFAULT_SIZES times `scale` (at least 1 each); test questions never
    appear in train or human splits. Returns the manifest: paths and counts.
    """
    manifest = {"seed": seed, "scale": scale, "files": {}, "counts": {}}
    for family in families:
        if family not in GENERATORS:
            raise ValueError(f"unknown built-in family {family!r}; use some of {FAMILIES}")
        sizes = {s: max(1, round(n * scale)) for s, n in DEFAULT_SIZES[family].items()}
        test = generate(family, "test", sizes["test"], seed)
        seen = {p.turns[0][0] for p in test}
        for split, n in sizes.items():
            problems = test if split == "test" else generate(family, split, n, seed, seen)
            for fmt in formats:
                path = os.path.join(out_dir, fmt, family, f"{split}.jsonl")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    for p in problems:
                        f.write(json.dumps(p.chat() if fmt == "chat" else p.alpaca()) + "\n")
                manifest["files"][f"{fmt}/{family}/{split}"] = path
            manifest["counts"][f"{family}/{split}"] = len(problems)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest
