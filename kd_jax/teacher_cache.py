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

import argparse
import hashlib
import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from kd_jax import sampled_cache
from kd_jax.data.packing import SAMPLE_KEYS, TOPK_KEYS
from kd_jax.id_packing import index_bits, pack_indices, unpack_indices

__all__ = ["CacheError", "TeacherCache", "build", "index_bits", "pack_indices", "unpack_indices"]

META = "meta.json"
MODES = ("topk", "sample")
SAMPLED_READS = 16
SAMPLE_BYTES = 1 << 16


class CacheError(ValueError):
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
            np.load(p, mmap_mode="r").nbytes for p in self.dir.glob("shard-*/*.npy")
            if "offsets" not in p.name
        )  # fmt: skip
        return total / max(self.meta["num_tokens"], 1)


# --- writing -------------------------------------------------------------------------

TOPK_FILES = ("offsets", "values", "indices")


def _topk_fn(teacher, k: int):
    @jax.jit
    def topk(params, frozen, batch, records_B):
        model = teacher.merge(params, frozen)
        h = model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"])
        logp = jax.nn.log_softmax(model.logits(h).astype(jnp.float32), axis=-1)
        return tuple(jax.lax.top_k(logp, k))

    return topk


class _TopkShardWriter:
    def __init__(self, k: int, bits: int, value_dtype: str):
        self.k, self.bits, self.value_dtype = k, bits, value_dtype
        self.offsets, self.values, self.indices = [0], [], []

    def add(self, values_nxK, indices_nxK) -> None:
        self.values.append(values_nxK.astype(self.value_dtype))
        self.indices.append(pack_indices(indices_nxK, self.bits))
        self.offsets.append(self.offsets[-1] + len(values_nxK))

    def save(self, folder: Path) -> None:
        k, bits = self.k, self.bits
        np.save(folder / "offsets.npy", np.asarray(self.offsets, np.int64))
        np.save(folder / "values.npy", np.concatenate(self.values) if self.values else
                np.zeros((0, k), self.value_dtype))  # fmt: skip
        np.save(folder / "indices.npy", np.concatenate(self.indices) if self.indices else
                np.zeros((0, math.ceil(k * bits / 8)), np.uint8))  # fmt: skip


def _check_build_args(mode, k, value_dtype):
    if mode not in MODES:
        raise CacheError(f"--mode must be one of {', '.join(MODES)}; got {mode!r}.")
    if value_dtype not in ("float16", "float32"):
        raise CacheError(f"value_dtype must be float16 or float32, got {value_dtype!r}.")
    if mode == "sample":
        try:
            sampled_cache.check_k(k)
        except ValueError as e:
            raise CacheError(str(e)) from None


def build(config: ConfigDict, out: str | Path, *, k: int = 64, value_dtype: str = "float16",
          shard_size: int = 4096, batch_size: int = 16, progress: bool = True,
          mode: str = "topk") -> Path:  # fmt: skip
    """Computes (or resumes) the cache of `config`'s teacher over its training data.

    mode "topk": the top-k log-probs at temperature 1; "sample": K draws per token from the
    teacher at kd.temperature (the cache temperature), seeded by `config.seed` and the record
    index, so a resumed job draws what an uninterrupted one would."""
    from kd_jax.data.packing import pad_row, stack_rows
    from kd_jax.train import setup

    _check_build_args(mode, k, value_dtype)
    config = ConfigDict(config.to_dict())
    config.method = "kd"
    config.kd.teacher_cache = ""
    r = setup(config)
    pipe, teacher = r.pipeline, r.teacher
    key = cache_key(config, pipe)
    out = Path(out)
    bits = index_bits(teacher.cfg.vocab_size)
    n = len(pipe.source)
    num_shards = math.ceil(n / shard_size)
    sample = dict(temperature=float(config.kd.temperature), sample_seed=int(config.seed))
    meta = dict(key=key, mode=mode, k=k, value_dtype=value_dtype, index_bits=bits,
                vocab_size=teacher.cfg.vocab_size, num_records=n, shard_size=shard_size,
                num_shards=num_shards, complete=False, num_tokens=0,
                **(sample if mode == "sample" else {}))  # fmt: skip
    settings = ("mode", "k", "value_dtype", "shard_size", "temperature", "sample_seed")
    if (out / META).exists():
        old = json.loads((out / META).read_text())
        check_key(old, key, out)
        old.setdefault("mode", "topk")
        if any(old.get(f) != meta.get(f) for f in settings):
            raise CacheError(
                f"{out} was started with other settings ({', '.join(settings)}); use the "
                "same ones to resume it, or another --out."
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / META).write_text(json.dumps(meta, indent=2))
    if mode == "sample":
        fn = sampled_cache.draw_fn(teacher, k, sample["temperature"], sample["sample_seed"])
    else:
        fn = _topk_fn(teacher, k)
    max_len = config.data.max_length
    bar = tqdm(total=n, desc="cache-teacher", disable=not progress)
    for s in range(num_shards):
        final = out / f"shard-{s:05d}"
        records = range(s * shard_size, min(n, (s + 1) * shard_size))
        if final.exists():
            bar.update(len(records))
            continue
        writer = (sampled_cache.ShardWriter(bits) if mode == "sample"
                  else _TopkShardWriter(k, bits, value_dtype))  # fmt: skip
        for start in range(records.start, records.stop, batch_size):
            ids = list(range(start, min(records.stop, start + batch_size)))
            rows = [pad_row(pipe.example_fn(pipe.source[i]), max_len) for i in ids]
            rows += [rows[-1]] * (batch_size - len(rows))
            batch = {key_: jnp.asarray(v) for key_, v in stack_rows(rows).items()
                     if key_ != "num_truncated"}  # fmt: skip
            rec = jnp.asarray(ids + [ids[-1]] * (batch_size - len(ids)), jnp.int32)
            result = jax.device_get(fn(*r.context["teacher"], batch, rec))
            result = result if isinstance(result, tuple) else (result,)
            for j in range(len(ids)):
                m = rows[j]["loss_mask"] > 0
                writer.add(*(x[j][m] for x in result))
            bar.update(len(ids))
        tmp = out / f".tmp-shard-{s:05d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        writer.save(tmp)
        tmp.rename(final)
    bar.close()
    meta["num_tokens"] = int(sum(
        np.load(out / f"shard-{s:05d}" / "offsets.npy")[-1] for s in range(num_shards)
    ))  # fmt: skip
    meta["complete"] = True
    (out / META).write_text(json.dumps(meta, indent=2))
    return out


def summary(cache_dir: str | Path) -> dict:
    """What the command prints: size, and for a sampled cache the worst-case bytes beside
    a float16 top-k cache of the same k."""
    reader = TeacherCache(cache_dir)
    k, bits = reader.k, reader.bits
    out = {"out": str(cache_dir), "mode": reader.mode, "tokens": reader.meta["num_tokens"],
           "bytes_per_token": round(reader.bytes_per_token(), 1)}  # fmt: skip
    if reader.mode == "sample":
        out["bytes_per_token_bound"] = round(sampled_cache.bytes_per_token_bound(k, bits), 1)
        out["topk_float16_bytes_per_token"] = k * 2 + math.ceil(k * bits / 8)
    return out


def main(argv: list[str]) -> int:
    from kd_jax.main import parse_config

    p = argparse.ArgumentParser(prog="kd-jax cache-teacher", add_help=True)
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--mode", default="topk", choices=MODES)
    p.add_argument("--value-dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=16)
    args, rest = p.parse_known_args(argv)
    config, _ = parse_config(rest, require_workdir=False)
    cache = build(config, args.out, k=args.k, value_dtype=args.value_dtype,
                  shard_size=args.shard_size, batch_size=args.batch_size,
                  mode=args.mode)  # fmt: skip
    print(json.dumps(summary(cache)))
    return 0
