"""Offline teacher signal: the teacher's top-k log-probabilities (or K draws from its
distribution), computed once, reused.

    kd-jax cache-teacher --config FILE[:arg] [--config.k=v] --out CACHE_DIR [--mode sample]
    kd-jax train --config FILE --config.kd.teacher_cache=CACHE_DIR ...

Sweeps over data sizes and seeds then never run the teacher again. The job walks the
training records in source order, runs the teacher on each padded example and keeps, for
every supervised token, the top-k log-probabilities (temperature 1) and their token ids.

Layout of CACHE_DIR:
    meta.json                 key (see below), k, value dtype, index bits, vocab, shards
    shard-00000/{offsets,values,indices}.npy
        offsets int64 [n + 1]   cached tokens of record r: rows offsets[r]..offsets[r+1]
        values  f16|f32 [N, k]  top-k log-probs, descending
        indices uint8 [N, ceil(k * bits / 8)]  token ids, bit-packed with `bits` bits each
At k = 64 and a 152k vocabulary (18-bit ids) a token costs 64 * 2 + 144 = 272 bytes with
float16 values (the default), 400 with float32. Float16 rounds log-probs by about 1e-3
relative; choose `value_dtype=float32` to reproduce online top-k KD to 1e-5.

The job that writes a cache is kd_jax/teacher_cache_job.py (`build`); this module owns
the format, the key and reading.

Top-k or sampled (`--mode sample`, kd_jax/sampled_cache.py: K draws per token at the cache
temperature kd.temperature, stored as distinct bit-packed ids with uint8 counts):
  * top-k renormalised over its k tokens is a BIASED estimate of the teacher: the tail mass
    is dropped and the student's mass outside the k tokens is never pushed down. It is
    deterministic, any divergence works on it, and any training temperature can be used.
  * sampled: p^_T = counts / K has expectation p_T, so its forward-KL gradient is unbiased
    (tests/test_sampled_cache.py), with Monte-Carlo noise instead of bias; it serves fkl only
    and only at the temperature it was drawn at. It costs 1 + U (1 + bits / 8) bytes for U
    distinct ids, at most 209 at K = 64 with 18-bit ids (272 for top-64 float16), and far
    less for a peaked teacher.

The key hashes what the numbers depend on: the teacher's weights (config.json, each
weight file's header, size and sampled bytes), the tokenizer files, the chat/Alpaca
template and the data settings (files, max_length, train_on_inputs). Training refuses
a cache whose key differs. Shards are written to a temporary folder and renamed, so an
interrupted job resumes without redoing finished shards.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from kd_jax import sampled_cache
from kd_jax.data.packing import SAMPLE_KEYS, TOPK_KEYS
from kd_jax.errors import UserError
from kd_jax.id_packing import index_bits, pack_indices, unpack_indices

__all__ = ["CacheError", "TeacherCache", "index_bits", "pack_indices", "unpack_indices"]

META = "meta.json"
MODES = ("topk", "sample")
TOPK_FILES = ("offsets", "values", "indices")
SAMPLED_READS = 16
SAMPLE_BYTES = 1 << 16


class CacheError(UserError):
    """A teacher cache that does not match the run, or cannot be read."""


# --- fingerprints --------------------------------------------------------------------


def fingerprint_files(paths: list[Path]) -> str:
    """Hash of files by name, size and sampled content (weights are too large to hash)."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with open(p, "rb") as f:
            if size <= SAMPLED_READS * SAMPLE_BYTES:
                h.update(f.read())
                continue
            for i in range(SAMPLED_READS):
                f.seek(i * (size - SAMPLE_BYTES) // (SAMPLED_READS - 1))
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _model_files(mc: ConfigDict) -> list[Path]:
    if mc.hf_path:
        root = Path(mc.hf_path)
        return [root / "config.json", *sorted(root.glob("*.safetensors"))]
    if mc.workdir:
        root = Path(mc.workdir)
        files = [root / "config.json"]
        for sub in ("checkpoints", "checkpoints_best"):
            files += sorted(p for p in (root / sub).rglob("*") if p.is_file())
        return files
    return []


def cache_key(config: ConfigDict, pipeline) -> dict:
    """What the cached numbers depend on, each part hashed (compared part by part)."""
    from kd_jax.data.sources import expand_paths

    data_info, tokenizer_dir = pipeline.info, pipeline.tokenizer.name_or_path
    t = config.teacher
    teacher = fingerprint_files(_model_files(t)) if (t.hf_path or t.workdir) else ""
    if not teacher:  # a random preset: its name and seed define it
        teacher = hashlib.sha256(f"{t.preset}:{config.seed}".encode()).hexdigest()
    tok_files = [p for p in Path(tokenizer_dir).iterdir() if p.is_file()]
    data = dict(
        files=fingerprint_files([Path(p) for p in expand_paths(pipeline.config.train)]),
        max_length=data_info.get("max_length"),
        train_on_inputs=data_info.get("train_on_inputs"),
        records=data_info.get("records"),
    )
    return {
        "teacher": teacher,
        "tokenizer": fingerprint_files(tok_files),
        "template": hashlib.sha256(
            (
                str(data_info.get("chat_template_sha1"))
                + str(data_info.get("alpaca_template_sha1"))
            ).encode()
        ).hexdigest(),
        "data": hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
    }


def check_key(meta: dict, expected: dict, cache_dir) -> None:
    for part in ("teacher", "tokenizer", "template", "data"):
        if meta["key"].get(part) != expected[part]:
            raise CacheError(
                f"Teacher cache {cache_dir} was built for another {part} than this run uses; "
                "rebuild it with `kd-jax cache-teacher` for this config."
            )


# --- reading -------------------------------------------------------------------------


class TeacherCache:
    """Random access to a cache's per-record teacher signal: `lookup(record_index)`.

    `keys` names the batch entries it adds: TOPK_KEYS (top-k) or SAMPLE_KEYS (sampled)."""

    def __init__(self, cache_dir: str | Path, expected_key: dict | None = None):
        self.dir = Path(cache_dir)
        meta_path = self.dir / META
        if not meta_path.exists():
            raise CacheError(
                f"{self.dir} is not a teacher cache (no {META}); build it with "
                "`kd-jax cache-teacher`."
            )
        self.meta = json.loads(meta_path.read_text())
        if not self.meta.get("complete"):
            raise CacheError(
                f"Teacher cache {self.dir} is incomplete; run `kd-jax cache-teacher` again "
                "to finish it."
            )
        if expected_key is not None:
            check_key(self.meta, expected_key, self.dir)
        self.k, self.bits = self.meta["k"], self.meta["index_bits"]
        self.mode = self.meta.get("mode", "topk")
        self.keys = SAMPLE_KEYS if self.mode == "sample" else TOPK_KEYS
        self.shard_size = self.meta["shard_size"]
        self._shards: dict[int, dict] = {}

    def _shard(self, s: int) -> dict:
        if s not in self._shards:
            d = self.dir / f"shard-{s:05d}"
            names = sampled_cache.SHARD_FILES if self.mode == "sample" else TOPK_FILES
            self._shards[s] = {n: np.load(d / f"{n}.npy", mmap_mode="r") for n in names}
        return self._shards[s]

    def lookup(self, record: int) -> tuple[np.ndarray, np.ndarray]:
        """For the n supervised tokens: top-k (values [n, k] float32, indices [n, k] int32),
        or sampled (ids [n, K] int32, counts [n, K] int32)."""
        shard, r = self._shard(record // self.shard_size), record % self.shard_size
        if self.mode == "sample":
            return sampled_cache.lookup(shard, r, self.k, self.bits)
        lo, hi = int(shard["offsets"][r]), int(shard["offsets"][r + 1])
        vals = np.asarray(shard["values"][lo:hi], np.float32)
        return vals, unpack_indices(np.asarray(shard["indices"][lo:hi]), self.k, self.bits)

    def check_run(self, config: ConfigDict) -> None:
        """A sampled cache fixes the divergence (fkl) and the temperature it was drawn at."""
        if self.mode != "sample":
            return
        kd = config.kd
        if kd.divergence != "fkl" or kd.teacher_top_k or kd.teacher_noise_std:
            raise CacheError(
                f"Teacher cache {self.dir} holds teacher samples, which estimate the forward-KL "
                "gradient only: set kd.divergence=fkl, kd.teacher_top_k=0 and "
                "kd.teacher_noise_std=0, or build a top-k cache."
            )
        if kd.temperature != self.meta["temperature"]:
            raise CacheError(
                f"Teacher cache {self.dir} was drawn at temperature {self.meta['temperature']} "
                f"but kd.temperature={kd.temperature}; set it to the cache's or rebuild the cache."
            )

    def attach(self, example: dict, record: int) -> dict:
        """Adds the cache's keys [L, k] to an example (zeros where unsupervised)."""
        vals, idx = self.lookup(record)
        mask = np.asarray(example["loss_mask"]) > 0
        if int(mask.sum()) != len(vals):
            raise CacheError(
                f"Teacher cache {self.dir}: record {record} has {len(vals)} cached tokens but "
                f"{int(mask.sum())} supervised ones; the cache does not match this data."
            )
        if self.mode == "sample":
            return sampled_cache.attach(example, vals, idx)
        n = len(mask)
        full_v = np.zeros((n, self.k), np.float32)
        full_i = np.zeros((n, self.k), np.int32)
        full_v[mask], full_i[mask] = vals, idx
        return {**example, "teacher_topk_values": full_v, "teacher_topk_indices": full_i}

    def bytes_per_token(self) -> float:
        """Stored bytes per cached token, per-record offsets and .npy headers excluded."""
        total = sum(
            np.load(p, mmap_mode="r").nbytes
            for p in self.dir.glob("shard-*/*.npy")
            if "offsets" not in p.name
        )
        return total / max(self.meta["num_tokens"], 1)


def summary(cache_dir: str | Path) -> dict:
    """What the command prints: size, and for a sampled cache the worst-case bytes beside
    a float16 top-k cache of the same k."""
    reader = TeacherCache(cache_dir)
    k, bits = reader.k, reader.bits
    out = {
        "out": str(cache_dir),
        "mode": reader.mode,
        "tokens": reader.meta["num_tokens"],
        "bytes_per_token": round(reader.bytes_per_token(), 1),
    }
    if reader.mode == "sample":
        out["bytes_per_token_bound"] = round(sampled_cache.bytes_per_token_bound(k, bits), 1)
        out["topk_float16_bytes_per_token"] = k * 2 + math.ceil(k * bits / 8)
    return out
